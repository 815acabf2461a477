"""End-to-end ``radlens prepare`` on a tiny BIDS tree: layout, resume, workers (and their end with a
killed parent), bad inputs, CLI; on a tiny CT-RATE tree: options always win over the source preset;
on a DICOM tree: an output made with another pseudonym key is refused."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from support.layouts import SIDECAR, head, tree_state, write_bids, write_ctrate, write_dicom_tree

from radlens.cli import main
from radlens.common.atomic import strict_json
from radlens.errors import ConfigError, InputError
from radlens.io.prepared import PreparedDataset
from radlens.prepare import pipeline
from radlens.prepare.intensity import IntensityConfig
from radlens.prepare.pipeline import SOURCES, PrepareConfig, default_config, prepare_dataset
from radlens.prepare.slicing import SliceConfig
from radlens.prepare.splits import SplitConfig


def small(dims: int = 2) -> PrepareConfig:
    return dataclasses.replace(default_config("bids"), dims=dims, slicing=SliceConfig(slice_shape=(12, 12)))


@pytest.fixture()
def bids(tmp_path: Path) -> Path:
    root = tmp_path / "bids"
    write_bids(root, subjects=4)
    return root


def test_bids_writes_the_documented_folder(bids: Path, tmp_path: Path) -> None:
    before = tree_state(bids)
    ds = prepare_dataset("bids", bids, tmp_path / "out", small())
    assert tree_state(bids) == before, "the source tree must not be written to"
    out = tmp_path / "out"
    for name in ("dataset.json", "series.parquet", "slices.parquet", "failures.csv", "extras/bin_intervals.json",
                 "extras/label_distribution.csv"):
        assert (out / name).is_file(), name
    assert ds.dims == 2 and ds.card["counts"]["series"] == 8 and ds.card["counts"]["patients"] == 4
    series = ds.series
    assert set(series["patient_id"]) == {f"sub-{i:02d}" for i in range(4)}
    assert set(series["study_id"]) == {f"sub-{i:02d}_ses-01" for i in range(4)}
    assert series["text"].iloc[0].startswith("A brain MRI, plane axial, Scanner (Manufacturer, Model, Field Strength): (SIEMENS, Skyra, 3)")
    # Protocol labels separate T1w from T2w through the TE bin; names are readable keys.
    t1 = series[series["series_id"].str.endswith("T1w")]
    t2 = series[series["series_id"].str.endswith("T2w")]
    assert t1["label"].nunique() == 1 and t2["label"].nunique() == 1 and t1["label"].iat[0] != t2["label"].iat[0]
    assert set(ds.card["label_names"]) == {"0", "1"} and "TE1" in ds.card["label_names"][str(t1["label"].iat[0])]
    assert list(t1["TE_bin"].unique()) == [1] and list(t2["TE_bin"].unique()) == [9]  # (0.08, 0.09]
    intervals = json.loads((out / "extras/bin_intervals.json").read_text())
    assert intervals["Echo Time"][0] == {"bin": 1, "range": "0.000 - 0.010"}
    # Splits are by patient: a patient never spans two splits.
    assert (series.groupby("patient_id")["split"].nunique() == 1).all()
    assert set(series["split"]) == {"train", "validation", "test"}
    # Slices point into memory-mappable arrays with the configured shape.
    slices = ds.slices
    assert len(slices) == ds.card["counts"]["slices"] == series["n_slices"].sum()
    first = slices.iloc[0]
    arr = np.load(out / first["array_path"], mmap_mode="r")
    assert isinstance(arr, np.memmap) and arr.shape[1:] == (12, 12) and arr.dtype == np.float32
    assert 0.0 <= float(arr.min()) and float(arr.max()) <= 1.0
    assert first["slice_id"] == f"{first['series_id']}:{first['slice_index']}"
    assert not list((out / "arrays").glob("*.tmp"))


def test_3d_arrays_are_channel_first_volumes(bids: Path, tmp_path: Path) -> None:
    ds = prepare_dataset("bids", bids, tmp_path / "out", small(dims=3), limit=2)
    assert ds.slices is None and len(ds.series) == 2
    arr = ds.array(ds.series["series_id"].iat[0])
    assert arr.shape == (1, 12, 12, 4) and ds.card["array_shape"] == [12, 12, 4]


def test_resume_skips_series_already_prepared(bids: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = pipeline.prepare_series
    calls: list[str] = []

    def interrupted(item, *args):  # type: ignore[no-untyped-def]
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(item.series_id)
        return real(item, *args)

    monkeypatch.setattr(pipeline, "prepare_series", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset("bids", bids, tmp_path / "out", small())
    assert not (tmp_path / "out" / "dataset.json").exists()

    rerun: list[str] = []
    monkeypatch.setattr(pipeline, "prepare_series", lambda item, *a: rerun.append(item.series_id) or real(item, *a))
    ds = prepare_dataset("bids", bids, tmp_path / "out", small())
    assert len(ds.series) == 8
    assert set(rerun) == set(ds.series["series_id"]) - set(calls) and len(rerun) == 5
    # A changed config prepares everything again.
    rerun.clear()
    prepare_dataset("bids", bids, tmp_path / "out", dataclasses.replace(small(), slicing=SliceConfig(slice_shape=(10, 10))))
    assert len(rerun) == 8


def test_workers_give_the_same_result(bids: Path, tmp_path: Path) -> None:
    for name in ("sub-00_ses-01_bad.nii.gz", "sub-03_ses-01_bad.nii.gz"):  # failures, listed in discovery order
        folder = bids / name[:6] / "ses-01" / "anat"
        (folder / name).write_bytes(b"not a nifti")
        (folder / name.replace(".nii.gz", ".json")).write_text(json.dumps(SIDECAR))
    # 3D keeps torch out of the worker processes, so the test stays quick.
    one = prepare_dataset("bids", bids, tmp_path / "one", small(dims=3), workers=1)
    two = prepare_dataset("bids", bids, tmp_path / "two", small(dims=3), workers=2)
    pd.testing.assert_frame_equal(one.series, two.series)
    for sid in one.series["series_id"]:
        np.testing.assert_array_equal(one.array(sid), two.array(sid))
    strip = lambda card: {k: v for k, v in card.items() if k != "created"}  # noqa: E731
    assert strip(one.card) == strip(two.card)
    assert (tmp_path / "one" / "failures.csv").read_bytes() == (tmp_path / "two" / "failures.csv").read_bytes()
    assert one.failures["path"].tolist() == ["sub-00/ses-01/anat/sub-00_ses-01_bad.nii.gz", "sub-03/ses-01/anat/sub-03_ses-01_bad.nii.gz"]


def _children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (Linux /proc)."""
    out = set()
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.add(int(entry.name))
    return out


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_end_with_a_killed_parent(tmp_path: Path) -> None:
    write_bids(tmp_path / "bids", subjects=6)
    run = ("import sys, dataclasses; from radlens.prepare.pipeline import default_config, prepare_dataset; "
           "cfg = dataclasses.replace(default_config('bids'), dims=3); prepare_dataset('bids', sys.argv[1], sys.argv[2], cfg, workers=2)")
    command = [sys.executable, "-c", run, str(tmp_path / "bids"), str(tmp_path / "out")]
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, workers = time.monotonic() + 120, set()
        while len(workers) < 2:
            assert parent.poll() is None and time.monotonic() < deadline, "the workers never started"
            workers = {p for p in _children(parent.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()}
            time.sleep(0.02)
        helpers = _children(parent.pid)  # the workers and multiprocessing's resource tracker
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while any(_running(p) for p in helpers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [p for p in helpers if _running(p)], "processes of the killed prepare still run"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_an_output_made_with_another_pseudonym_key_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_dicom_tree(tmp_path / "dicom")
    cfg = dataclasses.replace(default_config("dicom"), spatial=dataclasses.replace(default_config("dicom").spatial, shape=(8, 8, 4)))
    first = prepare_dataset("dicom", tmp_path / "dicom", tmp_path / "out", cfg)
    again = prepare_dataset("dicom", tmp_path / "dicom", tmp_path / "out", cfg)  # the same key: the same ids
    assert first.series["patient_id"].tolist() == again.series["patient_id"].tolist()
    monkeypatch.setenv("RADLENS_PHI_KEY", "another-key-of-at-least-32-characters!!")
    with pytest.raises(ConfigError, match=f"fingerprint {first.card['pseudonym_key_fingerprint']}"):
        prepare_dataset("dicom", tmp_path / "dicom", tmp_path / "out", cfg)
    other = prepare_dataset("dicom", tmp_path / "dicom", tmp_path / "other", cfg)
    assert other.card["pseudonym_key_fingerprint"] != first.card["pseudonym_key_fingerprint"]
    assert set(other.series["patient_id"]).isdisjoint(first.series["patient_id"])
    key_file = tmp_path / "out" / "phi.key"  # a key kept inside the output would travel with the data
    key_file.write_text("k" * 40)
    with pytest.raises(ConfigError, match="must be kept outside the output"):
        prepare_dataset("dicom", tmp_path / "dicom", tmp_path / "out", dataclasses.replace(cfg, phi_key_file=str(key_file)))


def _write(path: Path, array: np.ndarray, sidecar: dict | str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, np.diag([2.0, 2.0, 3.0, 1.0])), path)
    if sidecar is not None:
        text = sidecar if isinstance(sidecar, str) else json.dumps(sidecar)
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text(text)


def test_bad_inputs_are_skipped_with_one_line_each(bids: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    anat = bids / "sub-09" / "anat"
    good = {**SIDECAR, "EchoTime": 0.01}
    _write(anat / "sub-09_truncated.nii.gz", head((12, 12, 4), 1), good)
    data = (anat / "sub-09_truncated.nii.gz").read_bytes()
    (anat / "sub-09_truncated.nii.gz").write_bytes(data[: len(data) // 2])
    _write(anat / "sub-09_nosidecar.nii.gz", head((12, 12, 4), 2), None)
    _write(anat / "sub-09_badjson.nii.gz", head((12, 12, 4), 3), "{not json")
    _write(anat / "sub-09_badte.nii.gz", head((12, 12, 4), 4), {**good, "EchoTime": "short"})
    nan = head((12, 12, 4), 5)
    nan[3, 3, 1] = np.nan
    _write(anat / "sub-09_nan.nii.gz", nan, good)
    _write(anat / "sub-09_zero.nii.gz", np.zeros((12, 12, 4), np.float32), good)
    _write(anat / "sub-09_notime.nii.gz", head((12, 12, 4), 6), {k: v for k, v in good.items() if k not in ("EchoTime", "RepetitionTime")})
    _write(bids / "nosubject" / "scan.nii.gz", head((12, 12, 4), 7), good)
    before = tree_state(bids)
    ds = prepare_dataset("bids", bids, tmp_path / "out", small())
    assert tree_state(bids) == before
    failures = ds.failures.set_index("path")
    expected = {
        "sub-09/anat/sub-09_truncated.nii.gz": "truncated",
        "sub-09/anat/sub-09_nosidecar.nii.gz": "sidecar",
        "sub-09/anat/sub-09_badjson.nii.gz": "malformed",
        "sub-09/anat/sub-09_badte.nii.gz": "EchoTime",
        "sub-09/anat/sub-09_nan.nii.gz": "NaN",
        "sub-09/anat/sub-09_zero.nii.gz": "zero",
        "nosubject/scan.nii.gz": "sub-",
    }
    assert set(failures.index) == set(expected)
    for path, word in expected.items():
        assert word.lower() in failures.loc[path, "reason"].lower(), (path, failures.loc[path, "reason"])
    err = capsys.readouterr().err
    for path in expected:
        assert sum(line.startswith(f"{path}: ") for line in err.splitlines()) == 1, path
    # Missing TE/TR is not an error: the caption says NONE.
    notime = ds.series.set_index("series_id").loc["sub-09_notime"]
    assert "(NONE, NONE, NONE, 90)" in notime["text"] and ds.card["counts"]["failures"] == 7


def test_2d_input_where_3d_is_needed(tmp_path: Path) -> None:
    root = tmp_path / "bids"
    write_bids(root, subjects=1)
    _write(root / "sub-05" / "anat" / "sub-05_flat.nii.gz", head((12, 12, 1), 0), {**SIDECAR, "EchoTime": 0.01})
    ds = prepare_dataset("bids", root, tmp_path / "out", small(dims=3))
    assert "3D volume is needed" in ds.failures["reason"].iat[0]


def test_strict_nothing_usable_and_missing_input(bids: Path, tmp_path: Path) -> None:
    (bids / "sub-00" / "ses-01" / "anat" / "sub-00_ses-01_T1w.json").write_text("[]")
    with pytest.raises(InputError, match="sidecar must hold a JSON object"):
        prepare_dataset("bids", bids, tmp_path / "strict", small(), strict=True)
    empty = tmp_path / "empty"
    _write(empty / "sub-01" / "x.nii.gz", np.zeros((4, 4, 4), np.float32), SIDECAR)
    with pytest.raises(InputError, match="nothing usable"):
        prepare_dataset("bids", empty, tmp_path / "none", small())
    assert (tmp_path / "none" / "failures.csv").is_file()
    with pytest.raises(InputError, match="does not exist"):
        prepare_dataset("bids", tmp_path / "missing", tmp_path / "x", small())


def test_cli_prepare_with_dotted_overrides_and_yaml(bids: Path, tmp_path: Path) -> None:
    config = tmp_path / "cfg.yaml"
    config.write_text("slicing:\n  slice_shape: [10, 10]\nsplit:\n  ratios: [0.5, 0.25, 0.25]\n")
    rc = main(["prepare", "bids", str(bids), str(tmp_path / "out"), "--config", str(config), "--limit", "4",
               "--caption.anatomy", "head"])
    assert rc == 0
    ds = PreparedDataset(tmp_path / "out")
    assert ds.card["array_shape"] == [10, 10] and len(ds.series) == 4
    assert ds.card["config"]["split"]["ratios"] == [0.5, 0.25, 0.25]
    assert ds.series["text"].str.startswith("A head MRI").all()
    assert main(["prepare", "bids", str(tmp_path / "missing"), str(tmp_path / "o2")]) == 2


# CT-RATE at phantom size: 3x3x6 mm voxels in a 12x12x4 grid (the padding keeps background in view).
CT_SMALL = {"spatial.target_spacing": (3.0, 3.0, 6.0), "spatial.shape": (12, 12, 4)}
CT_SMALL_ARGS = ["--spatial.target_spacing", "[3,3,6]", "--spatial.shape", "[12,12,4]"]


@pytest.fixture(scope="module")
def ctrate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ctrate")
    write_ctrate(root)
    return root


def _changed(cfg: PrepareConfig, changes: dict[str, Any]) -> PrepareConfig:
    """``cfg`` with dotted changes (``{"spatial.pad_value": 0.0, "dims": 2}``) applied."""
    for dotted, value in changes.items():
        group, _, name = dotted.rpartition(".")
        if group:
            value, name = dataclasses.replace(getattr(cfg, group), **{name: value}), group
        cfg = dataclasses.replace(cfg, **{name: value})
    return cfg


@pytest.mark.parametrize(
    ("options", "changes"),
    [
        # Each value is the generic class default, which the ct-rate preset changes.
        pytest.param(["--split.ratios", "[0.7,0.15,0.15]"], {"split.ratios": (0.7, 0.15, 0.15)}, id="split.ratios"),
        pytest.param(["--spatial.pad_value", "0"], {"spatial.pad_value": 0.0}, id="spatial.pad_value"),
        pytest.param(["--intensity.ct_output=-1,1"], {"intensity.ct_output": "-1,1"}, id="intensity.ct_output"),
        pytest.param(["--spatial.target_spacing", "null"], {"spatial.target_spacing": None}, id="spatial.target_spacing"),
        pytest.param(["--dims", "2", "--slicing.slice_shape", "[8,8]"], {"dims": 2, "slicing.slice_shape": (8, 8)}, id="dims"),
        # A --config and an option of the same group: both reach it, the group's other fields stay the preset's.
        pytest.param(["--config", '{"split": {"ratios": [0.7, 0.15, 0.15]}}', "--split.seed", "3"],
                     {"split.ratios": (0.7, 0.15, 0.15), "split.seed": 3}, id="config-and-option"),
    ],
)
def test_cli_options_win_over_the_source_preset(ctrate: Path, tmp_path: Path, options: list[str], changes: dict[str, Any]) -> None:
    preset = default_config("ct-rate")
    for dotted, value in changes.items():
        assert _changed(preset, {dotted: value}) != preset, f"{dotted}={value!r} is the preset's: the case proves nothing"
    assert main(["prepare", "ct-rate", str(ctrate), str(tmp_path / "out"), *CT_SMALL_ARGS, *options]) == 0
    # The card holds exactly the preset plus every option given: nothing dropped, nothing else changed.
    expected = _changed(preset, {**CT_SMALL, **changes})
    assert PreparedDataset(tmp_path / "out").card["config"] == strict_json(expected.to_dict())


@pytest.mark.parametrize("source", list(SOURCES))
def test_print_config_shows_the_source_preset(source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["prepare", source, str(tmp_path / "in"), str(tmp_path / "out"), "--labels.fields", "[plane]", "--print_config"])
    assert done.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = strict_json(_changed(default_config(source), {"labels.fields": ("plane",)}).to_dict())
    assert strict_json({key: printed[key] for key in expected}) == expected
    assert "source" not in printed and {"input", "output", "workers", "limit", "strict"} <= set(printed)


def test_api_given_groups_replace_the_preset_s_and_unset_options_keep_it(ctrate: Path, tmp_path: Path) -> None:
    preset = default_config("ct-rate")
    spatial = _changed(preset, CT_SMALL).spatial  # part of a group: start from the preset's
    split = SplitConfig(ratios=(0.7, 0.15, 0.15))  # a whole group: the generic defaults, not the preset's
    intensity = IntensityConfig()
    assert pipeline.prepare("ct-rate", ctrate, tmp_path / "out", dtype="float16", spatial=spatial, split=split,
                            intensity=intensity) == 0
    expected = dataclasses.replace(preset, dtype="float16", spatial=spatial, split=split, intensity=intensity)
    assert PreparedDataset(tmp_path / "out").card["config"] == strict_json(expected.to_dict())

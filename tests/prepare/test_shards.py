"""Scale-out: ``prepare ... --shard i/n`` on separate machines, then ``prepare merge`` == one run, byte for byte."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from support.layouts import write_bids, write_dicom_tree

from radlens.cli import main
from radlens.common.sharding import Shard, shard_of
from radlens.errors import ConfigError, InputError
from radlens.prepare.pipeline import default_config, prepare_dataset, prepare_shard
from radlens.prepare.shards import merge_shards
from radlens.prepare.slicing import SliceConfig


def small(dims: int = 2):  # type: ignore[no-untyped-def]
    return dataclasses.replace(default_config("bids"), dims=dims, slicing=SliceConfig(slice_shape=(12, 12)))


def files(folder: Path) -> dict[str, bytes]:
    """Every file of a folder by relative path; the card without its creation time."""
    out = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    card = json.loads(out.pop("dataset.json"))
    card.pop("created")
    out["dataset.json"] = json.dumps(card, sort_keys=True).encode()
    return out


@pytest.fixture(scope="module")
def bids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 subjects (2 per shard of 2) x 2 series, and one truncated file of subject 01 (a failure row)."""
    root = tmp_path_factory.mktemp("bids") / "bids"
    paths = write_bids(root, subjects=4)
    assert {shard_of(f"sub-{i:02d}", 2) for i in range(4)} == {0, 1}
    broken = paths[2].with_name("sub-01_ses-01_FLAIR.nii.gz")
    broken.write_bytes(paths[2].read_bytes()[:200])
    paths[2].with_name("sub-01_ses-01_FLAIR.json").write_bytes(paths[2].with_suffix("").with_suffix(".json").read_bytes())
    return root


def test_two_shards_merged_are_one_run_byte_for_byte(bids: Path, tmp_path: Path) -> None:
    one = prepare_dataset("bids", bids, tmp_path / "one", small())
    assert one.card["counts"]["failures"] == 1 and set(one.series["split"]) == {"train", "validation", "test"}
    # Shard 1 first: the order machines finish in does not matter.
    states = [prepare_shard("bids", bids, tmp_path / f"shard{i}", Shard(i, 2), small()) for i in (1, 0)]
    assert all(s.series for s in states) and sorted(sum((s.series for s in states), [])) == sorted(one.series["series_id"])
    assert not (tmp_path / "shard0" / "dataset.json").exists(), "a shard is not a dataset: splits are decided at the merge"
    merged = merge_shards([tmp_path / "shard0", tmp_path / "shard1"], tmp_path / "merged")
    assert files(tmp_path / "merged") == files(tmp_path / "one")
    assert merged.card["counts"] == one.card["counts"]
    # A merge run again (e.g. after an interruption) gives the same folder.
    merge_shards([tmp_path / "shard1", tmp_path / "shard0"], tmp_path / "merged")
    assert files(tmp_path / "merged") == files(tmp_path / "one")


def test_a_patient_stays_on_one_shard_whatever_else_is_found(bids: Path, tmp_path: Path) -> None:
    full = prepare_shard("bids", bids, tmp_path / "full", Shard(0, 2), small(dims=3))
    limited = prepare_shard("bids", bids, tmp_path / "limited", Shard(0, 2), small(dims=3), limit=4)
    assert set(limited.series) <= set(full.series)
    assert {sid.split("_")[0] for sid in full.series} == {f"sub-{i:02d}" for i in range(4) if shard_of(f"sub-{i:02d}", 2) == 0}


def test_merge_refuses_an_incomplete_or_mixed_job(bids: Path, tmp_path: Path) -> None:
    cfg = small(dims=3)
    for i in range(2):
        prepare_shard("bids", bids, tmp_path / f"s{i}", Shard(i, 2), cfg)
    with pytest.raises(InputError, match=r"shard\(s\) 1/2 missing"):
        merge_shards([tmp_path / "s0"], tmp_path / "out")
    with pytest.raises(InputError, match="given twice"):
        merge_shards([tmp_path / "s0", tmp_path / "s0", tmp_path / "s1"], tmp_path / "out")
    prepare_shard("bids", bids, tmp_path / "other", Shard(1, 2), dataclasses.replace(cfg, dtype="float16"))
    with pytest.raises(InputError, match="differs .* in its config"):
        merge_shards([tmp_path / "s0", tmp_path / "other"], tmp_path / "out")
    prepare_shard("bids", bids, tmp_path / "three", Shard(1, 3), cfg)
    with pytest.raises(InputError, match="not of the job"):
        merge_shards([tmp_path / "s0", tmp_path / "three"], tmp_path / "out")
    (tmp_path / "s1" / "shard.json").unlink()  # an interrupted shard
    with pytest.raises(InputError, match="not a complete shard"):
        merge_shards([tmp_path / "s0", tmp_path / "s1"], tmp_path / "out")
    with pytest.raises(ConfigError, match="must not be inside the shard"):
        merge_shards([tmp_path / "s0"], tmp_path / "s0" / "merged")
    with pytest.raises(ConfigError, match="i/n"):
        Shard.parse("2/2")


def test_cli_shards_and_merge(bids: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--dims", "3", "--spatial.shape", "[8,8,4]"]
    assert main(["prepare", "bids", str(bids), str(tmp_path / "one"), *args]) == 0
    for i in range(2):
        assert main(["prepare", "bids", str(bids), str(tmp_path / "work" / f"shard-{i}"), *args, "--shard", f"{i}/2"]) == 0
    assert "merge all 2 with `radlens prepare merge`" in capsys.readouterr().out
    assert main(["prepare", "merge", str(tmp_path / "work" / "shard-*"), str(tmp_path / "merged")]) == 0
    assert files(tmp_path / "merged") == files(tmp_path / "one")
    ds_one = np.load(tmp_path / "one" / "arrays" / "sub-00_ses-01_T1w.npy")
    np.testing.assert_array_equal(ds_one, np.load(tmp_path / "merged" / "arrays" / "sub-00_ses-01_T1w.npy"))
    assert main(["prepare", "bids", str(bids), str(tmp_path / "x"), "--shard", "3"]) == 2
    assert main(["prepare", "merge", str(tmp_path / "nothing-*"), str(tmp_path / "m2")]) == 2


def test_dicom_shards_keep_the_keyed_pseudonyms_and_private_paths(tmp_path: Path) -> None:
    write_dicom_tree(tmp_path / "dicom")
    cfg = dataclasses.replace(default_config("dicom"), spatial=dataclasses.replace(default_config("dicom").spatial, shape=(8, 8, 4)))
    one = prepare_dataset("dicom", tmp_path / "dicom", tmp_path / "one", cfg)
    for i in range(2):
        prepare_shard("dicom", tmp_path / "dicom", tmp_path / f"s{i}", Shard(i, 2), cfg)
    merged = merge_shards([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged")
    assert files(tmp_path / "merged") == files(tmp_path / "one")
    assert merged.card["pseudonym_key_fingerprint"] == one.card["pseudonym_key_fingerprint"]
    assert not merged.series["source_path"].str.contains("patientA").any()

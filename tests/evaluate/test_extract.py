"""``radlens extract bags``: per-study/series HDF5 bags of slice features, resumable, atomic, read by BagDataset."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from support.prepared_clip import write_prepared

from radlens.data.bags import BagDataset
from radlens.errors import ConfigError, InputError
from radlens.evaluate.extract import extract_bags
from radlens.evaluate.slice_encoder import bundle_sha256

SHAPE = (16, 16)
VIT = {"kind": "vit", "input_shape": list(SHAPE), "patch_size": [8, 8], "hidden_size": 32, "mlp_dim": 64,
       "num_layers": 1, "num_heads": 2}
CLIP = {"kind": "clip", "image": VIT, "embed_dim": 24,
        "text": {"kind": "scratch", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                 "vocab_size": 256, "context_length": 32}}


def _card(prepared: Path) -> dict:
    return json.loads((prepared / "dataset.json").read_text())


def _save(model, folder: Path, prepared: Path | None = None, **extra_pre) -> Path:
    from radlens.data.modules import preprocessing_from_card
    from radlens.models.bundle import save_bundle

    pre = preprocessing_from_card(_card(prepared)) if prepared is not None else {}
    return save_bundle(model, folder, {**pre, **extra_pre})


@pytest.fixture(scope="module")
def mr(tmp_path_factory) -> Path:
    """4 patients (3 train, 1 test) x 2 series x 5 slices of 16x16, MR (no spacing: z_mm is NaN)."""
    return write_prepared(tmp_path_factory.mktemp("mr") / "prep", shape=SHAPE, patients={"train": 3, "test": 1},
                          slices_per_series=5)


@pytest.fixture(scope="module")
def clip(tmp_path_factory, mr) -> tuple[Path, object]:
    from radlens.models.registry import build_model

    torch.manual_seed(0)
    model = build_model(CLIP, texts=["a tiny vocabulary"]).eval()
    return _save(model, tmp_path_factory.mktemp("clip") / "bundle", mr), model


@pytest.fixture(scope="module")
def ct(tmp_path_factory) -> Path:
    """The MR layout relabelled as CT stored in [-1000, 1000] HU -> [-1, 1], with spacing and axial slices."""
    prep = write_prepared(tmp_path_factory.mktemp("ct") / "prep", shape=SHAPE, patients={"train": 2}, slices_per_series=3)
    card = _card(prep)
    card["modality"] = "CT"
    card["config"]["intensity"] = {"ct_window": [-1000.0, 1000.0], "ct_output": "-1,1"}
    (prep / "dataset.json").write_text(json.dumps(card))
    series = pd.read_parquet(prep / "series.parquet")
    series["modality"] = "CT"
    series["spacing"] = [[0.8, 0.8, 2.5]] * len(series)
    series.to_parquet(prep / "series.parquet", index=False)
    for sid in series["series_id"]:  # values across the stored range, so windows clip
        arr = np.load(prep / f"arrays/{sid}.npy")
        np.save(prep / f"arrays/{sid}.npy", (arr * 2 - 1).astype(np.float32))
    return prep


def _slices(prepared: Path, series_id: str) -> np.ndarray:
    return np.load(prepared / f"arrays/{series_id}.npy")


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with h5py.File(path, "r") as f:
        data = {k: f[k][()] for k in f}
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    return data, attrs


def test_clip_bags_are_the_slices_encoded_one_by_one(mr, clip, tmp_path):
    bundle, model = clip
    out = tmp_path / "bags"
    assert extract_bags(str(bundle), str(mr), str(out), batch_size=3) == 0  # batches cross series and bags
    index = pd.read_csv(out / "bags.csv")
    assert list(index.columns[:6]) == ["path", "patient_id", "study_id", "series_id", "n", "split"]
    assert len(index) == 8 and (index["n"] == 5).all() and set(index["split"]) == {"train", "test"}
    data, attrs = _read(out / "sub-001_p1.h5")
    assert data["feats"].shape == (5, 32) and data["feats"].dtype == np.float32  # D = the image tower's width
    np.testing.assert_array_equal(data["slice_index"], np.arange(5))
    assert np.isnan(data["z_mm"]).all() and "NaN" in attrs["z_mm_note"]
    assert [s.decode() for s in data["slice_id"]] == [f"sub-001_p1:{i}" for i in range(5)]
    with torch.no_grad():
        one_by_one = np.stack([model.image(torch.from_numpy(s[None, None]))[0].numpy() for s in _slices(mr, "sub-001_p1")])
    np.testing.assert_allclose(data["feats"], one_by_one, rtol=1e-5, atol=1e-5)
    assert attrs["encoder"] == str(bundle.resolve()) and attrs["encoder_kind"] == "clip" and attrs["features"] == "pooled"
    assert attrs["encoder_sha256"] == bundle_sha256(bundle) and len(attrs["encoder_hash"]) == 64
    assert (attrs["patient_id"], attrs["study_id"], attrs["series_id"], attrs["split"]) == ("sub-001", "sub-001", "sub-001_p1", "train")
    pre = json.loads(attrs["preprocessing"])
    assert pre["card"]["array_shape"] == list(SHAPE) and pre["bundle"]["modality"] == "MR"
    import radlens

    assert attrs["radlens_version"] == radlens.__version__ and "seed" not in attrs
    bags = BagDataset(out / "bags.csv", target_columns=["label"], split="train")
    assert len(bags) == 6 and bags.dim == 32
    item = bags[0]
    assert item["feats"].shape == (5, 32) and float(item["targets"][0]) == index["label"].iat[0]
    assert json.loads((out / "run.json").read_text())["config"]["encoder_hash"] == attrs["encoder_hash"]


def test_per_study_projected_embeddings(mr, clip, tmp_path):
    bundle, model = clip
    out = tmp_path / "bags"
    extract_bags(str(bundle), str(mr), str(out), per="study", split="train", features="projected", batch_size=4,
                 num_workers=1)  # slices read in a worker process
    index = pd.read_csv(out / "bags.csv")
    assert list(index["study_id"]) == ["sub-001", "sub-002", "sub-003"] and (index["n"] == 10).all()
    assert index["series_id"].iat[0] == "sub-001_p0;sub-001_p1"
    data, attrs = _read(out / "sub-002.h5")
    assert data["feats"].shape == (10, 24) and attrs["features"] == "projected"  # D = embed_dim
    slices = np.concatenate([_slices(mr, "sub-002_p0"), _slices(mr, "sub-002_p1")])
    with torch.no_grad():
        expected = model.encode_image(torch.from_numpy(slices[:, None])).numpy()
    np.testing.assert_allclose(data["feats"], expected, rtol=1e-5, atol=1e-5)
    assert [s.decode() for s in data["series_id"]] == ["sub-002_p0"] * 5 + ["sub-002_p1"] * 5
    np.testing.assert_array_equal(data["slice_index"], np.tile(np.arange(5), 2))


def test_registry_encoder_is_a_seeded_random_init_and_moco_uses_encode(mr, tmp_path):
    from radlens.models.registry import build_model

    config = tmp_path / "vit.json"
    config.write_text(json.dumps(VIT))
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        extract_bags(str(config), str(mr), str(tmp_path / name), split="test", seed=seed)
        runs[name] = _read(tmp_path / name / "sub-004_p0.h5")
    (feats_a, attrs_a), (feats_b, attrs_b), (feats_c, attrs_c) = runs["a"], runs["b"], runs["c"]
    assert attrs_a["seed"] == 3 and attrs_a["encoder_kind"] == "vit" and attrs_a["features"] == "output"
    assert attrs_a["encoder_hash"] == attrs_b["encoder_hash"] != attrs_c["encoder_hash"]
    np.testing.assert_array_equal(feats_a["feats"], feats_b["feats"])
    assert not np.allclose(feats_a["feats"], feats_c["feats"])
    torch.manual_seed(3)
    vit = build_model(VIT).eval()
    with torch.no_grad():
        expected = vit(torch.from_numpy(_slices(mr, "sub-004_p0")[:, None])).numpy()
    np.testing.assert_allclose(feats_a["feats"], expected, rtol=1e-5, atol=1e-5)

    pytest.importorskip("radlens.models.moco")
    moco = build_model({"kind": "moco", "encoder": VIT, "dim": 8, "hidden": 16}).eval()
    bundle = _save(moco, tmp_path / "moco", mr)
    extract_bags(str(bundle), str(mr), str(tmp_path / "m"), split="test")
    data, attrs = _read(tmp_path / "m" / "sub-004_p1.h5")
    with torch.no_grad():
        expected = moco.encode(torch.from_numpy(_slices(mr, "sub-004_p1")[:, None])).numpy()
    assert attrs["encoder_kind"] == "moco" and attrs["features"] == "encode" and data["feats"].shape == (5, 32)
    np.testing.assert_allclose(data["feats"], expected, rtol=1e-5, atol=1e-5)


def test_rerun_skips_bags_of_the_same_encoder_and_redoes_others(mr, clip, tmp_path):
    bundle, _ = clip
    out = tmp_path / "bags"
    extract_bags(str(bundle), str(mr), str(out), split="train")
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")}
    with h5py.File(out / "sub-002_p0.h5", "a") as f:  # as if an older encoder had written it
        f.attrs["encoder_hash"] = "0" * 64
    stamps["sub-002_p0.h5"] = (out / "sub-002_p0.h5").stat().st_mtime_ns
    (out / "notes.txt").write_text("mine")
    extract_bags(str(bundle), str(mr), str(out), split="train")
    again = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")}
    assert [n for n in stamps if again[n] != stamps[n]] == ["sub-002_p0.h5"]
    _, attrs = _read(out / "sub-002_p0.h5")
    assert attrs["encoder_hash"] != "0" * 64
    extract_bags(str(bundle), str(mr), str(out), split="train", features="projected")  # other features: all redone
    hashes = {_read(p)[1]["encoder_hash"] for p in out.glob("*.h5")}
    assert len(hashes) == 1 and hashes != {attrs["encoder_hash"]}
    assert (out / "notes.txt").read_text() == "mine"


def test_a_failure_leaves_no_partial_file_and_a_rerun_finishes(mr, clip, tmp_path, monkeypatch):
    import radlens.evaluate.extract as extract

    bundle, _ = clip
    out = tmp_path / "bags"
    written = []
    real = extract._write_bag

    def fail_third(path, *args):
        if len(written) == 2:
            raise KeyboardInterrupt  # killed before the third bag is written
        real(path, *args)
        written.append(path.name)

    out.mkdir()
    (out / ".sub-003_p0.h5.stale.tmp").write_bytes(b"half")  # an interrupted run's temporary file
    monkeypatch.setattr(extract, "_write_bag", fail_third)
    with pytest.raises(KeyboardInterrupt):
        extract_bags(str(bundle), str(mr), str(out), split="train", batch_size=4)
    assert sorted(p.name for p in out.glob("*.h5")) == sorted(written) and not (out / "bags.csv").exists()
    with h5py.File(out / written[0], "r") as f:
        assert f["feats"].shape == (5, 32)
    monkeypatch.setattr(extract, "_write_bag", real)
    extract_bags(str(bundle), str(mr), str(out), split="train", batch_size=4)
    assert len(pd.read_csv(out / "bags.csv")) == 6 and len(list(out.glob("*.h5"))) == 6
    assert not list(out.glob(".*"))  # no temporary file left


def test_atomic_write_keeps_no_half_file_under_the_final_name(mr, clip, tmp_path, monkeypatch):
    bundle, _ = clip
    out = tmp_path / "bags"
    real = h5py.File.create_dataset

    def broken(self, name, *args, **kwargs):
        if name == "z_mm":
            raise OSError("disk full")
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", broken)
    with pytest.raises(OSError):
        extract_bags(str(bundle), str(mr), str(out), split="test")
    assert list(out.iterdir()) == []


def test_ct_windows_as_rows_or_as_channels(ct, tmp_path):
    from radlens.data.windows import apply_windows, window_coefficients
    from radlens.models.registry import build_model

    windows = [(-1000.0, 400.0), (-160.0, 240.0)]
    config = tmp_path / "vit.json"
    config.write_text(json.dumps(VIT))
    extract_bags(str(config), str(ct), str(tmp_path / "rows"), windows=windows)
    data, attrs = _read(tmp_path / "rows" / "sub-001_p0.h5")
    assert data["feats"].shape == (6, 32)  # 3 slices x 2 windows, slice-major
    np.testing.assert_array_equal(data["window"], np.tile(np.float32(windows), (3, 1)))
    np.testing.assert_array_equal(data["slice_index"], [0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(data["z_mm"], [0, 0, 2.5, 2.5, 5, 5])  # slice_index x the axial spacing
    assert json.loads(attrs["preprocessing"])["window_mode"] == "samples"
    stored = _slices(ct, "sub-001_p0")
    images = np.moveaxis(apply_windows(stored, window_coefficients(_card(ct), windows)), 0, 1)  # (3, 2, H, W)
    assert images.min() == 0 and images.max() == 1
    torch.manual_seed(0)
    vit = build_model(VIT).eval()
    with torch.no_grad():
        expected = vit(torch.from_numpy(images.reshape(6, 1, *SHAPE))).numpy()
    np.testing.assert_allclose(data["feats"], expected, rtol=1e-5, atol=1e-5)

    two = tmp_path / "vit2.json"
    two.write_text(json.dumps({**VIT, "in_channels": 2}))
    extract_bags(str(two), str(ct), str(tmp_path / "channels"), windows=windows)
    data, attrs = _read(tmp_path / "channels" / "sub-001_p0.h5")
    assert data["feats"].shape == (3, 32) and data["window"].shape == (3, 2, 2)
    torch.manual_seed(0)
    vit2 = build_model({**VIT, "in_channels": 2}).eval()
    with torch.no_grad():
        np.testing.assert_allclose(data["feats"], vit2(torch.from_numpy(images)).numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="input channels"):
        extract_bags(str(two), str(ct), str(tmp_path / "none"))
    # A bundle trained on windows (as `radlens train moco` records them) is fed the same windows by default.
    trained = _save(vit2, tmp_path / "trained", ct, windows=[list(w) for w in windows], window_mode="channels")
    extract_bags(str(trained), str(ct), str(tmp_path / "default"))
    default, _ = _read(tmp_path / "default" / "sub-001_p0.h5")
    np.testing.assert_array_equal(default["feats"], data["feats"])
    np.testing.assert_array_equal(default["window"], data["window"])
    with pytest.raises(InputError, match="outside the stored range") as err:
        extract_bags(str(config), str(ct), str(tmp_path / "wide"), windows=[(-2000.0, 0.0)])
    assert str(ct / "dataset.json") in str(err.value)


def test_bad_input_errors_name_the_file(mr, clip, tmp_path):
    from support.prepared_findings import write_findings_prepared

    from radlens.models.registry import build_model

    bundle, _ = clip
    three_d = write_findings_prepared(tmp_path / "3d", patients={"train": 2})
    with pytest.raises(InputError, match="--dims 2") as err:
        extract_bags(str(bundle), str(three_d), str(tmp_path / "o1"))
    assert str(three_d) in str(err.value)
    head = _save(build_model("abmil-small"), tmp_path / "abmil")
    with pytest.raises(InputError, match="not an image model") as err:
        extract_bags(str(head), str(mr), str(tmp_path / "o2"))
    assert str(head.resolve()) in str(err.value)
    big = write_prepared(tmp_path / "big", shape=(32, 32), patients={"train": 1}, slices_per_series=2)
    with pytest.raises(InputError, match="array_shape") as err:
        extract_bags(str(bundle), str(big), str(tmp_path / "o3"))
    assert str(big / "dataset.json") in str(err.value)
    with pytest.raises(InputError, match="need a CT dataset") as err:
        extract_bags(str(bundle), str(mr), str(tmp_path / "o4"), windows=[(0.0, 1.0)])
    assert str(mr / "dataset.json") in str(err.value)
    with pytest.raises(ConfigError, match="needs a CLIP bundle"):
        config = tmp_path / "vit.json"
        config.write_text(json.dumps(VIT))
        extract_bags(str(config), str(mr), str(tmp_path / "o5"), features="projected")
    no_slices = write_prepared(tmp_path / "noslices", shape=SHAPE, patients={"train": 1}, slices_per_series=2)
    (no_slices / "slices.parquet").unlink()
    with pytest.raises(InputError, match="no slices.parquet") as err:
        extract_bags(str(bundle), str(no_slices), str(tmp_path / "o6"))
    assert str(no_slices) in str(err.value)
    # A foreign file under a bag's name is never overwritten.
    out = tmp_path / "o7"
    out.mkdir()
    (out / "sub-004_p0.h5").write_bytes(b"not mine")
    with pytest.raises(InputError, match="not a readable radlens-bags file") as err:
        extract_bags(str(bundle), str(mr), str(out), split="test")
    assert str(out / "sub-004_p0.h5") in str(err.value) and (out / "sub-004_p0.h5").read_bytes() == b"not mine"


def test_unreadable_series_are_listed_and_the_rest_extracted(clip, tmp_path):
    bundle, _ = clip
    prep = write_prepared(tmp_path / "prep", shape=SHAPE, patients={"train": 2}, slices_per_series=2)
    os.remove(prep / "arrays/sub-002_p1.npy")
    out = tmp_path / "bags"
    extract_bags(str(bundle), str(prep), str(out))
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures["series_id"]) == ["sub-002_p1"] and "missing" in failures["reason"].iat[0]
    assert failures["path"].iat[0] == str(prep / "arrays/sub-002_p1.npy")
    assert len(pd.read_csv(out / "bags.csv")) == 3
    with pytest.raises(InputError, match="missing") as err:
        extract_bags(str(bundle), str(prep), str(tmp_path / "strict"), strict=True)
    assert str(prep / "arrays/sub-002_p1.npy") in str(err.value)


def test_the_signature_is_a_cli(mr, clip, ct, tmp_path):
    from jsonargparse import auto_cli

    bundle, _ = clip
    out = tmp_path / "bags"
    assert auto_cli(extract_bags, args=[str(bundle), str(mr), str(out), "--per", "study", "--split", "test",
                                        "--batch_size", "4"], as_positional=True) == 0
    assert len(pd.read_csv(out / "bags.csv")) == 1
    config = tmp_path / "vit.json"
    config.write_text(json.dumps(VIT))
    auto_cli(extract_bags, args=[str(config), str(ct), str(tmp_path / "ct"), "--windows", "[[-1000, 400], [-160, 240]]"],
             as_positional=True)
    assert _read(tmp_path / "ct" / "sub-002_p1.h5")[0]["window"].shape == (6, 2)

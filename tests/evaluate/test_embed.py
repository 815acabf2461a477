"""Embeddings: one scan file through the bundle's preprocessing, and a whole prepared dataset."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from support.prepared_zeroshot import SHAPE, tiny_model, write_bundle, write_prepared

from radlens.cli import main
from radlens.errors import ConfigError, InputError
from radlens.evaluate.embed import embed, embed_volume


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


def _ct_nifti(path: Path) -> Path:
    """A 48 x 40 x 20 CT-like volume in HU (air around a water cylinder), 2 x 2 x 4 mm, LAS-oriented."""
    x, y = np.meshgrid(np.arange(48), np.arange(40), indexing="ij")
    body = ((x - 24) ** 2 + (y - 20) ** 2 < 15**2)[..., None].repeat(20, axis=2)
    hu = np.where(body, 40.0, -1000.0) + np.random.default_rng(0).normal(0, 20, body.shape)
    affine = np.diag([-2.0, 2.0, 4.0, 1.0])
    nib.save(nib.Nifti1Image(hu.astype(np.int16), affine), path)
    return path


def test_embed_volume_replays_the_bundle_preprocessing(bundle, tmp_path):
    from radlens.io.reader import read_volume
    from radlens.prepare.intensity import IntensityConfig, apply_intensity
    from radlens.prepare.spatial import SpatialConfig, apply_spatial

    path = _ct_nifti(tmp_path / "scan.nii.gz")
    emb = embed_volume(path, bundle, already_hu=True)
    assert emb.shape == (tiny_model().embed_dim,) and np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)
    volume = read_volume(path)
    volume.metadata = volume.metadata.replace(Modality="CT")
    volume.hu = True
    volume = apply_spatial(volume, SpatialConfig(target_spacing=(1.5, 1.5, 3.0), shape=tuple(SHAPE), pad_value=-1024.0))
    volume = apply_intensity(volume, IntensityConfig(ct_output="hu/1000"))
    assert volume.array.min() >= -1.0 and volume.array.max() <= 1.0
    with torch.no_grad():
        expected = tiny_model().encode_image(torch.from_numpy(volume.array[None].astype(np.float32)))[0].numpy()
    np.testing.assert_allclose(emb, expected, rtol=1e-4, atol=1e-5)
    assert (tmp_path / "scan.nii.gz").read_bytes() == path.read_bytes()  # the source is only read


def test_embed_volume_errors_name_the_file(bundle, tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(InputError) as err:
        embed_volume(broken, bundle)
    assert str(broken) in str(err.value)
    with pytest.raises(InputError, match="does not exist"):
        embed_volume(tmp_path / "missing.nii.gz", bundle)
    scan = _ct_nifti(tmp_path / "scan.nii.gz")
    with pytest.raises(InputError, match="not in HU") as err:
        embed_volume(scan, bundle)  # CT whose HU status is unknown is never assumed to be HU
    assert str(scan) in str(err.value)


def test_embed_volume_needs_preprocessing(tmp_path):
    bare = write_bundle(tmp_path / "bare", prepare={})
    with pytest.raises(ConfigError, match="preprocessing"):
        embed_volume(_ct_nifti(tmp_path / "scan.nii.gz"), bare, already_hu=True)


def test_embed_cli_writes_embeddings_with_ids(bundle, tmp_path):
    from radlens.io.prepared import PreparedDataset

    prepared = write_prepared(tmp_path / "prepared")
    out = tmp_path / "emb"
    assert main(["embed", str(bundle), str(prepared), str(out), "--split", "test", "--batch_size", "3",
                 "--device", "cpu"]) == 0
    emb = np.load(out / "embeddings.npy", mmap_mode="r")
    ids = pd.read_parquet(out / "ids.parquet")
    assert ids.columns.tolist() == ["series_id", "patient_id", "scan_id", "split"]
    assert len(ids) == len(emb) == 7 and set(ids["split"]) == {"test"}
    ds = PreparedDataset(prepared)
    with torch.no_grad():
        direct = tiny_model().encode_image(torch.from_numpy(np.stack([ds.array(ids["series_id"][4])])))[0].numpy()
    np.testing.assert_allclose(emb[4], direct, rtol=1e-4, atol=1e-5)
    run = json.loads((out / "run.json").read_text())
    assert run["command"] == "embed" and run["config"]["split"] == "test"


def test_embed_cli_refuses_mismatched_dataset(tmp_path):
    prepared = write_prepared(tmp_path / "prepared", splits=("test",))
    card = json.loads((prepared / "dataset.json").read_text())
    card["config"]["intensity"]["ct_output"] = "-1,1"
    (prepared / "dataset.json").write_text(json.dumps(card))
    bundle = write_bundle(tmp_path / "b", intensity=None)
    assert main(["embed", str(bundle), str(prepared), str(tmp_path / "emb")]) == 2
    with pytest.raises(InputError, match="ct_output"):
        embed(str(bundle), str(prepared), str(tmp_path / "emb"))
    assert not (tmp_path / "emb").exists()


class _MeanStd(torch.nn.Module):
    """A stand-in image encoder: (mean, std) of each image, L2-normalised."""

    embed_dim = 2

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return torch.nn.functional.normalize(torch.stack([flat.mean(1), flat.std(1)], dim=1), dim=1)


def test_2d_dataset_items_are_slices_with_their_scan(tmp_path):
    from radlens.evaluate.embed import embed_items, item_table
    from radlens.io.prepared import PreparedDataset

    (tmp_path / "arrays").mkdir()
    rng = np.random.default_rng(0)
    series, slices = [], []
    for sid, split in (("s1", "test"), ("s2", "test"), ("s3", "train")):
        np.save(tmp_path / "arrays" / f"{sid}.npy", rng.random((3, 8, 8), dtype=np.float32))
        series.append({"series_id": sid, "patient_id": f"p{sid}", "scan_id": "scan12" if sid != "s3" else "scan3",
                       "array_path": f"arrays/{sid}.npy", "split": split})
        slices += [{"slice_id": f"{sid}:{r}", "series_id": sid, "patient_id": f"p{sid}", "array_path": f"arrays/{sid}.npy",
                    "row": r, "split": split} for r in range(3)]
    pd.DataFrame(series).to_parquet(tmp_path / "series.parquet")
    pd.DataFrame(slices).to_parquet(tmp_path / "slices.parquet")
    (tmp_path / "dataset.json").write_text(json.dumps({"dims": 2, "array_shape": [8, 8], "findings": []}))
    ds = PreparedDataset(tmp_path)
    items = item_table(ds, "test")
    assert items["slice_id"].tolist() == [f"s{i}:{r}" for i in (1, 2) for r in range(3)]
    assert set(items["scan_id"]) == {"scan12"}
    emb = embed_items(ds, _MeanStd(), items, batch_size=4)
    img = ds.slice("s2:1")
    expected = np.array([img.mean(), img.std(ddof=1)])
    np.testing.assert_allclose(emb[4], expected / np.linalg.norm(expected), rtol=1e-5)


def test_staged_output_leaves_previous_output_on_failure(tmp_path):
    from radlens.common.atomic import staged_output

    out = tmp_path / "out"
    with staged_output(out) as tmp:
        (tmp / "a.txt").write_text("first")
    with pytest.raises(RuntimeError), staged_output(out) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert (out / "a.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary folder left behind


def test_embed_cli_never_deletes_a_file_it_did_not_write(bundle, tmp_path, capsys):
    prepared = write_prepared(tmp_path / "prepared")
    keep = tmp_path / "sandbox" / "keep"
    keep.mkdir(parents=True)
    (keep / "notes.txt").write_text("mine")
    args = ["embed", str(bundle), str(prepared), str(keep), "--split", "test", "--device", "cpu"]
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in keep.iterdir()) == ["notes.txt"]
    assert main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in keep.iterdir()) == [".radlens-output.json", "embeddings.npy", "ids.parquet",
                                                      "notes.txt", "run.json"]
    assert main(args) == 0  # radlens' folder now: a rerun replaces its own files only
    assert (keep / "notes.txt").read_text() == "mine"
    assert json.loads((keep / ".radlens-output.json").read_text())["files"] == ["embeddings.npy", "ids.parquet",
                                                                                 "run.json"]

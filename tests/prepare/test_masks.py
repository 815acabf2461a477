"""Label maps in prepared datasets: tables, nearest-neighbour spatial steps, alignment, columns, failures, resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from support.mask_layouts import LABELS, cube_volume, save, write_mask_bids

from radlens.errors import InputError
from radlens.io.prepared import parse_boxes
from radlens.io.volume import Volume
from radlens.prepare import pipeline
from radlens.prepare.masks import (
    SchemeMerger,
    label_boxes,
    merge_schemes,
    parse_label_table,
    read_label_table,
    to_label_map,
)
from radlens.prepare.pipeline import default_config, prepare_dataset
from radlens.prepare.slicing import SliceConfig
from radlens.prepare.spatial import SpatialConfig

LABEL_IDS = set(LABELS)
# Anisotropic source (1 x 1.5 x 3 mm) to 1.23 mm: no output voxel falls half-way between two
# input voxels, so bilinear (image) and nearest (mask) agree on which side of an edge it is.
SPATIAL = SpatialConfig(target_spacing=(1.23, 1.23, 1.23), crop_foreground="nonzero", shape=(20, 16, 24))


def cfg3() -> pipeline.PrepareConfig:
    return dataclasses.replace(default_config("bids"), dims=3, spatial=SPATIAL)


def cfg2(shape: tuple[int, int] = (40, 40)) -> pipeline.PrepareConfig:
    slicing = SliceConfig(slice_shape=shape, min_foreground=0.0)
    return dataclasses.replace(default_config("bids"), spatial=SPATIAL, slicing=slicing)


def bright_box(array: np.ndarray) -> list[int]:
    """Half-open box of the voxels above the midpoint of the array's range (label 1's cube)."""
    return label_boxes((array > (array.min() + array.max()) / 2).astype(np.uint8))[1]


def test_label_tables_values_and_boxes(tmp_path: Path) -> None:
    assert parse_label_table({"labels": {"1": "lesion", "0": "bg"}}, "x") == {0: "background", 1: "lesion"}
    assert parse_label_table({"background": 0, "liver": 1, "spleen": 2}, "x") == {0: "background", 1: "liver", 2: "spleen"}
    with pytest.raises(InputError, match="region"):
        parse_label_table({"background": 0, "organ": [1, 2]}, "dataset.json")
    tsv = tmp_path / "seg_dseg.tsv"
    tsv.write_text("index\tname\tcolor\n0\tUnknown\t#000\n3\tGM\t#fff\n")
    assert read_label_table(tsv) == {0: "background", 3: "GM"}
    tsv.write_text("idx\tname\n1\tGM\n")
    with pytest.raises(InputError, match="'index' and 'name'") as err:
        read_label_table(tsv)
    assert err.value.path == str(tsv)
    # A binary mask stored 0/255 is 0/1; several values in a binary mask, fractions, or unknown ids are refused.
    vol = Volume(np.array([0, 255, 255, 0], np.uint8).reshape(1, 2, 2, 1), np.eye(4), source=Path("m.nii.gz"))
    assert to_label_map(vol, {0: "background", 1: "lesion"}, binary=True).array.ravel().tolist() == [0, 1, 1, 0]
    with pytest.raises(InputError, match="several non-zero values"):
        to_label_map(Volume(np.arange(4, dtype=np.uint8).reshape(1, 2, 2, 1), np.eye(4)), None, binary=True)
    with pytest.raises(InputError, match="non-integer"):
        to_label_map(Volume(np.full((1, 2, 2, 1), 0.5, np.float32), np.eye(4)), None)
    with pytest.raises(InputError, match=r"label ids \[3\] are not in its label table"):
        to_label_map(Volume(np.full((1, 2, 2, 1), 3, np.int16), np.eye(4)), {0: "background", 1: "a"})
    assert to_label_map(Volume(np.full((1, 2, 2, 1), 300.0, np.float32), np.eye(4)), None).array.dtype == np.int32
    grid = np.zeros((4, 5, 6), np.uint8)
    grid[1:3, 2, 0:4] = 2
    grid[3, 4, 5] = 7
    assert label_boxes(grid) == {2: [1, 2, 0, 3, 3, 4], 7: [3, 4, 5, 4, 5, 6]}
    assert label_boxes(np.zeros((3, 3), np.uint8)) == {}
    # One scheme per dataset: extra ids join, a different name for an id is refused naming the first table.
    merger = SchemeMerger()
    assert merger.add({0: "background", 1: "lesion"}, "a.tsv") is None
    assert merger.add({0: "background", 1: "lesion", 2: "edema"}, "b.tsv") is None
    assert "label 1 is 'tumour' here but 'lesion' in a.tsv" in (merger.add({0: "background", 1: "tumour"}, "c.tsv") or "")
    # A placeholder name (an id no table named) gives way to a real one.
    merged = merge_schemes([{"0": "background", "3": "label_3"}, {"0": "background", "3": "GM"}], "out")
    assert merged == {"0": "background", "3": "GM"}


def test_3d_mask_is_resampled_by_nearest_and_stays_aligned(tmp_path: Path) -> None:
    write_mask_bids(tmp_path / "bids", subjects=2)
    ds = prepare_dataset("bids", tmp_path / "bids", tmp_path / "out", cfg3())
    assert ds.labels == LABELS and ds.card["labels"] == {str(k): v for k, v in LABELS.items()}
    assert ds.failures.empty
    for row in ds.series.itertuples():
        image, mask = ds.array(row.series_id), ds.mask(row.series_id)
        assert row.mask_path == f"masks/{row.series_id}.npy"
        assert isinstance(mask, np.memmap) and mask.dtype == np.uint8 and mask.shape == image.shape == (1, 20, 16, 24)
        assert set(np.unique(mask)) == LABEL_IDS  # nearest neighbour: no value between labels
        boxes = parse_boxes(row.boxes)
        assert list(row.labels_present) == [1, 2, 5] and boxes == {k: tuple(v) for k, v in label_boxes(mask[0]).items()}
        # The bright cube of the image is exactly label 1's box (same steps, same grid).
        assert list(boxes[1]) == bright_box(image[0])
        mid = (image.min() + image.max()) / 2
        assert (image[0][mask[0] == 1] > mid).all() and (image[0][mask[0] != 1] < mid).all()


def test_2d_mask_slices_follow_the_image_slices(tmp_path: Path) -> None:
    write_mask_bids(tmp_path / "bids", subjects=1)
    ds = prepare_dataset("bids", tmp_path / "bids", tmp_path / "out", cfg2())
    slices = ds.slices
    assert slices is not None and set(slices["mask_path"]) == {"masks/sub-00_T1w.npy"}
    stack, masks = ds.array("sub-00_T1w"), ds.mask("sub-00_T1w")
    assert masks is not None and masks.shape == stack.shape == (len(slices), 40, 40) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= LABEL_IDS
    for row in slices.itertuples():
        image, mask = ds.slice(row.slice_id), ds.slice_mask(row.slice_id)
        np.testing.assert_array_equal(mask, masks[row.row])
        boxes = parse_boxes(row.boxes)
        assert list(row.labels_present) == sorted(boxes) == sorted({int(v) for v in np.unique(mask)} - {0})
        assert row.lesion == int(bool(len(row.labels_present)))
        if 1 in boxes:
            assert list(boxes[1]) == bright_box(image)
    assert set(slices["lesion"]) == {0, 1}
    series = ds.series.iloc[0]
    with_1 = slices.loc[[1 in p for p in slices["labels_present"]], "row"]
    assert list(series["labels_present"]) == [1, 2, 5]
    assert parse_boxes(series["boxes"])[1][::3] == (with_1.min(), with_1.max() + 1)  # rows of the stack


def test_series_without_mask_and_bad_masks_go_to_failures(tmp_path: Path) -> None:
    pairs = write_mask_bids(tmp_path / "bids", subjects=4)
    # sub-01: no mask; sub-02: a mask on another grid; sub-03: a mask with an id the table lacks.
    pairs[1][1].unlink()
    image, mask = cube_volume()
    save(mask[:, :, :8], np.diag([1.0, 1.5, 3.0, 1.0]), pairs[2][1])
    save(np.where(mask == 5, 9, mask).astype(np.uint8), np.diag([1.0, 1.5, 3.0, 1.0]), pairs[3][1])
    ds = prepare_dataset("bids", tmp_path / "bids", tmp_path / "out", cfg3())
    assert list(ds.series["series_id"]) == ["sub-00_T1w", "sub-01_T1w"]
    assert ds.series.set_index("series_id").loc["sub-01_T1w", "mask_path"] == "" and ds.mask("sub-01_T1w") is None
    assert ds.series.set_index("series_id")["labels_present"].isna().tolist() == [False, True]
    failures = pd.read_csv(tmp_path / "out" / "failures.csv")
    reasons = dict(zip(failures["path"], failures["reason"]))
    assert reasons["sub-02/anat/sub-02_T1w.nii.gz"].startswith("sub-02_T1w_dseg.nii.gz: label map shape [20, 16, 8] differs")
    assert reasons["sub-03/anat/sub-03_T1w.nii.gz"].startswith("sub-03_T1w_dseg.nii.gz: label ids [9] are not in its label table")


def test_bids_mask_choice_binary_masks_and_one_scheme(tmp_path: Path) -> None:
    root = tmp_path / "bids"
    pairs = write_mask_bids(root, subjects=3, table=None)
    affine = np.diag([1.0, 1.5, 3.0, 1.0])
    _, mask = cube_volume()
    for image, seg in pairs:
        seg.unlink()
        stem = image.name.removesuffix(".nii.gz")
        save((mask == 1).astype(np.uint8) * 255, affine, image.with_name(f"{stem}_desc-lesion_mask.nii.gz"))
        save((mask > 0).astype(np.uint8), affine, image.with_name(f"{stem}_desc-brain_mask.nii.gz"))
    # sub-02: a dseg (wins over masks) named by a table that calls id 1 something else -> refused.
    save(mask, affine, pairs[2][0].with_name("sub-02_T1w_dseg.nii.gz"))
    pairs[2][0].with_name("sub-02_T1w_dseg.json").write_text(json.dumps({"1": "tumour", "2": "edema", "5": "cyst"}))
    ds = prepare_dataset("bids", root, tmp_path / "out", cfg3())
    assert ds.labels == {0: "background", 1: "lesion"}
    assert len(ds.series) == 2 and all(set(np.unique(ds.mask(s))) == {0, 1} for s in ds.series["series_id"])
    failure = ds.failures.set_index("path").loc["sub-02/anat/sub-02_T1w.nii.gz"]
    assert failure["stage"] == "discover"
    assert failure["reason"] == ("sub-02/anat/sub-02_T1w_dseg.json: label 1 is 'tumour' here but 'lesion' in "
                                 "sub-00/anat/sub-00_T1w_desc-lesion_mask.nii.gz; a prepared dataset has one label scheme")


def test_resume_redoes_a_series_whose_mask_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pairs = write_mask_bids(tmp_path / "bids", subjects=2)
    out = tmp_path / "out"
    prepare_dataset("bids", tmp_path / "bids", out, cfg3())
    calls: list[str] = []
    real = pipeline.prepare_series

    def counting(item, *args):  # type: ignore[no-untyped-def]
        calls.append(item.series_id)
        return real(item, *args)

    monkeypatch.setattr(pipeline, "prepare_series", counting)
    prepare_dataset("bids", tmp_path / "bids", out, cfg3())
    assert calls == []
    _, mask = cube_volume()
    save(np.where(mask == 2, 0, mask), np.diag([1.0, 1.5, 3.0, 1.0]), pairs[1][1])  # edema removed
    ds = prepare_dataset("bids", tmp_path / "bids", out, cfg3())
    assert calls == ["sub-01_T1w"]
    assert list(ds.series.set_index("series_id").loc["sub-01_T1w", "labels_present"]) == [1, 5]
    assert 2 not in np.unique(ds.mask("sub-01_T1w"))
    # A deleted mask array makes its series be prepared again too.
    (out / "masks" / "sub-00_T1w.npy").unlink()
    prepare_dataset("bids", tmp_path / "bids", out, cfg3())
    assert calls == ["sub-01_T1w", "sub-00_T1w"]


def test_csv_mask_column_for_volumes_and_png_slices(tmp_path: Path) -> None:
    from PIL import Image

    image, mask = cube_volume()
    affine = np.diag([1.0, 1.5, 3.0, 1.0])
    save(image, affine, tmp_path / "in" / "vol.nii.gz")
    save(mask, affine, tmp_path / "in" / "vol_seg.nii.gz")
    (tmp_path / "in" / "labels.json").write_text(json.dumps({"background": 0, "tumour": 1, "edema": 2, "cyst": 5}))
    pd.DataFrame([
        {"image": "vol.nii.gz", "text": "a volume", "mask": "vol_seg.nii.gz", "modality": "MR"},
        {"image": "vol_seg.nii.gz", "text": "listed with a missing mask", "mask": "nope.nii.gz", "modality": "MR"},
    ]).to_csv(tmp_path / "in" / "table.csv", index=False)
    ds = prepare_dataset("csv", tmp_path / "in", tmp_path / "out3", cfg3())
    assert ds.labels == LABELS and list(ds.series["labels_present"].iat[0]) == [1, 2, 5]
    assert list(parse_boxes(ds.series["boxes"].iat[0])[1]) == bright_box(ds.array("vol")[0])
    failure = {"path": "vol_seg.nii.gz", "stage": "discover", "reason": "mask nope.nii.gz: no such file"}
    assert ds.failures.to_dict("records") == [failure]
    # 2D: a PNG image with a PNG label map (ids as stored), ids named label_<id> without labels.json.
    folder = tmp_path / "png"
    folder.mkdir()
    picture = np.zeros((24, 32), np.uint8)
    picture[2:22, 2:30] = 40
    picture[5:11, 8:20] = 200
    labels = np.zeros((24, 32), np.uint8)
    labels[5:11, 8:20] = 3
    Image.fromarray(picture).save(folder / "p1.png")
    Image.fromarray(labels).save(folder / "p1_mask.png")
    pd.DataFrame([{"filepath": "p1.png", "text": "slice", "mask": "p1_mask.png"}]).to_csv(folder / "t.csv", index=False)
    cfg = dataclasses.replace(default_config("csv"), slicing=SliceConfig(slice_shape=(48, 64)))
    ds = prepare_dataset("csv", folder, tmp_path / "out2", cfg)
    assert ds.labels == {0: "background", 3: "label_3"}
    row = ds.slices.iloc[0]
    assert list(row["labels_present"]) == [3] and row["lesion"] == 1
    # The PNG is enlarged 2x: label 3 covers rows 10..22, columns 16..40 of the stored slice.
    assert parse_boxes(row["boxes"]) == {3: (10, 16, 22, 40)} and list(parse_boxes(row["boxes"])[3]) == bright_box(ds.slice(0))


def test_ctrate_masks_with_labels_json(tmp_path: Path) -> None:
    from support.layouts import write_ctrate

    root = tmp_path / "ct"
    names = write_ctrate(root, shape=(16, 16, 8))
    labels = {"0": "background", "1": "Lung nodule", "2": "Emphysema"}
    (root / "masks").mkdir()
    (root / "masks" / "labels.json").write_text(json.dumps({"labels": labels, "implemented": ["Lung nodule"]}))
    for name in names[:3]:
        volume = next(root.rglob(f"{name}.nii.gz"))
        mask = np.zeros((16, 16, 8), np.uint8)
        mask[5:8, 6:9, 2:4] = 1
        mask[9:11, 9:11, 5:7] = 2
        save(mask, nib.load(volume).affine, root / "masks" / volume.relative_to(root).parent / f"{name}_mask.nii.gz")
    base = default_config("ct-rate")
    cfg = dataclasses.replace(base, spatial=SpatialConfig(target_spacing=(1.0, 1.0, 2.0), shape=(28, 28, 12), pad_value=-1000.0))
    ds = prepare_dataset("ct-rate", root, tmp_path / "out", cfg)
    assert ds.card["labels"] == labels and ds.failures.empty
    series = ds.series.set_index("series_id")
    for name in names:
        if name in names[:3]:
            mask = ds.mask(name)
            assert mask is not None and mask.shape == (1, 28, 28, 12) and set(np.unique(mask)) == {0, 1, 2}
            assert list(series.loc[name, "labels_present"]) == [1, 2]
            # Label 1 holds input voxels x 5..7, y 6..8 (1.5 mm), z 2..3 (3 mm). Resampled to 1 x 1 x 2 mm,
            # output voxel i samples input i / 1.5 (z: i / 1.5) and takes the nearest: x 7..11, y 9..12,
            # z 3..5; the 24 x 24 x 12 grid is then padded by 2 in x and y to 28 x 28 x 12.
            assert parse_boxes(series.loc[name, "boxes"])[1] == (9, 11, 3, 14, 15, 6)
        else:
            assert ds.mask(name) is None and series.loc[name, "mask_path"] == ""


@pytest.mark.parametrize(
    "spatial",
    [
        SpatialConfig(shape=(13, 29, 7), shape_mode="resize"),  # whole-volume interpolation (M3D style)
        SpatialConfig(target_spacing=(0.9, 2.1, 1.7), shape=(9, 40, 30), pad_value=-5.0),  # crop one axis, pad others
        SpatialConfig(crop_foreground="nonzero", target_spacing=(1.7, 1.1, 2.3)),
    ],
    ids=["resize", "crop-pad", "foreground-resample"],
)
def test_spatial_pair_keeps_labels_on_their_voxels(spatial: SpatialConfig) -> None:
    from radlens.prepare.spatial import apply_spatial_pair

    image, labels = cube_volume()
    affine = np.diag([1.0, 1.5, 3.0, 1.0])
    out, mask = apply_spatial_pair(Volume(image[None], affine), Volume(labels[None], affine), spatial)
    assert mask is not None and mask.shape == out.shape and mask.array.dtype == np.uint8
    np.testing.assert_allclose(mask.affine, out.affine)
    assert set(np.unique(mask.array)) == LABEL_IDS
    assert label_boxes(mask.array[0])[1] == bright_box(out.array[0])
    if spatial.shape is not None and spatial.shape_mode == "crop_pad":
        assert (out.array[0, :, :2] == -5.0).all() and (mask.array[0, :, :2] == 0).all()  # image pad value, mask 0


def test_bids_ambiguous_masks_fail_the_image_and_maps_go_to_the_longest_stem(tmp_path: Path) -> None:
    from radlens.prepare.importers.bids import default_config as bids_config
    from radlens.prepare.importers.bids import discover

    root = tmp_path / "bids"
    (image, _), = write_mask_bids(root, subjects=1)
    _, mask = cube_volume()
    affine = np.diag([1.0, 1.5, 3.0, 1.0])
    save(mask, affine, image.with_name("sub-00_T1w_desc-aseg_dseg.nii.gz"))  # a second dseg: ambiguous
    other = save(cube_volume()[0], affine, image.with_name("sub-00_T1w_rec-x.nii.gz"))  # another image, extending the stem
    save((mask == 1).astype(np.uint8), affine, other.with_name("sub-00_T1w_rec-x_desc-lesion_mask.nii.gz"))
    found = discover(root, bids_config())
    assert [f.reason for f in found.failures] == [
        "several label maps (_dseg) beside the image: sub-00_T1w_desc-aseg_dseg.nii.gz, sub-00_T1w_dseg.nii.gz; keep one"]
    (item,) = found.items
    assert item.series_id == "sub-00_T1w_rec-x" and Path(item.mask or "").name == "sub-00_T1w_rec-x_desc-lesion_mask.nii.gz"
    assert item.mask_labels == {0: "background", 1: "lesion"} and item.mask_binary and item.mask in item.inputs

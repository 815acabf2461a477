"""Segmenters (MONAI UNet / DynUNet): the interface generation relies on, any input size, label ids, configs, bundles."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from radlens.errors import ConfigError, InputError
from radlens.models.bundle import load_model, save_bundle
from radlens.models.registry import build_model, count_params, get_config
from radlens.models.segmenter import DynUNetSegmenter, UNetSegmenter, segmenter_labels

LABELS = {0: "background", 2: "liver", 7: "spleen"}


def test_logits_and_label_ids_for_any_slice_size() -> None:
    torch.manual_seed(0)
    model = UNetSegmenter(out_channels=3, channels=(4, 8, 16), strides=(2, 2), num_res_units=1, label_ids=(0, 2, 7)).eval()
    for size in ((32, 32), (37, 50), (9, 13)):  # divisible by the total stride (4) or not
        image = torch.randn(2, 1, *size)
        logits, labels = model(image), model.segment(image)
        assert logits.shape == (2, 3, *size) and labels.shape == (2, *size) and labels.dtype == torch.int64
        assert set(labels.unique().tolist()) <= {0, 2, 7}
        torch.testing.assert_close(labels, torch.tensor([0, 2, 7])[logits.argmax(dim=1)])  # channel k -> label_ids[k]
    image = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(model(image), model.net(image))  # no padding when the size divides
    with pytest.raises(ValueError, match=r"expected a \(B, C, H, W\) batch"):
        model(torch.randn(1, 32, 32))


def test_dynunet_in_3d_and_config_checks() -> None:
    model = DynUNetSegmenter(out_channels=2, spatial_dims=3, filters=(4, 8, 8), strides=(1, 2, 2)).eval()
    assert model(torch.randn(1, 1, 10, 12, 7)).shape == (1, 2, 10, 12, 7) and model.label_ids == [0, 1]
    with pytest.raises(ConfigError, match="label_ids must be 3 distinct ids"):
        UNetSegmenter(out_channels=3, label_ids=(0, 1))
    with pytest.raises(ConfigError, match="starting with background 0"):
        UNetSegmenter(out_channels=2, label_ids=(1, 2))
    with pytest.raises(ConfigError, match="at least one label"):
        UNetSegmenter(out_channels=1)
    with pytest.raises(ConfigError, match="spatial_dims must be 2 or 3"):
        UNetSegmenter(out_channels=2, spatial_dims=1)
    with pytest.raises(ConfigError, match="one positive stride per level"):
        UNetSegmenter(out_channels=2, channels=(4, 8, 16), strides=(2,))
    with pytest.raises(ConfigError, match="at least 3"):
        DynUNetSegmenter(out_channels=2, filters=(4, 8), strides=(1, 2))


def test_registry_configs_have_nnunet_sizes() -> None:
    assert 20e6 < count_params(get_config("seg-dynunet-2d"))["total"] < 21e6  # nnU-Net 2D: 32..512 filters
    assert 30e6 < count_params(get_config("seg-dynunet-3d"))["total"] < 32e6  # nnU-Net 3d_fullres: 32..320 filters
    assert count_params(get_config("seg-unet-tiny"))["total"] < 20_000
    assert build_model("seg-unet-small").config["channels"] == [16, 32, 64, 128]


def test_bundle_round_trip_by_family_and_label_table(tmp_path: Path) -> None:
    model = build_model({"kind": "unet-seg", "out_channels": 3, "channels": [4, 8], "strides": [2], "label_ids": [0, 2, 7]})
    folder = save_bundle(model, tmp_path / "seg", {"dims": 2, "labels": {str(k): v for k, v in LABELS.items()}})
    loaded = load_model(folder, kind="segmenter")
    assert loaded.label_ids == [0, 2, 7] and segmenter_labels(folder) == LABELS
    image = torch.randn(1, 1, 16, 16)
    assert torch.equal(loaded.segment(image), model.eval().segment(image))
    bare = save_bundle(model, tmp_path / "bare", {"dims": 2})
    with pytest.raises(InputError, match=r"no label table \(preprocessing.labels\)"):
        segmenter_labels(bare)
    other = save_bundle(build_model({"kind": "abmil", "in_dim": 4, "hidden": 2}), tmp_path / "mil")
    with pytest.raises(InputError, match="a abmil model, but a segmenter model is needed"):
        load_model(other, kind="segmenter")

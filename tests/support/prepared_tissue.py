"""A tiny prepared MRI phantom with tissue label maps (5 labels), for the segmentation tests.

Five subjects, each with one T1-weighted and one T2-weighted 2D spin-echo series at 4 mm, prepared
by ``radlens prepare bids`` (the phantom's ``_dseg`` maps become the masks) into 32 x 32 axial slices
(2D) or 24 x 28 x 24 volumes (3D), split 3/1/1 by patient. Built once per test session and kind.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from radlens.io.prepared import PreparedDataset

SUBJECTS = 5
SHAPE_2D = (32, 32)
SHAPE_3D = (24, 28, 24)


def phantom_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The raw phantom (BIDS tree with tissue maps), generated once per session."""
    from radlens.phantoms.mri import MRIPhantomConfig, generate_mri_phantom

    root = tmp_path_factory.getbasetemp() / "tissue-phantom"
    if not (root / "truth.csv").is_file():
        cfg = MRIPhantomConfig(subjects=SUBJECTS, seed=5, series_per_subject=2, resolution=4, lesion_probability=0.5,
                               sequences=("T1_SE", "T2_FSE"))
        generate_mri_phantom(root, cfg)
    return root


def tissue_prepared(tmp_path_factory: pytest.TempPathFactory, dims: int = 2) -> PreparedDataset:
    """The phantom prepared in ``dims`` (2: axial 32 x 32 slices, 3: 24 x 28 x 24 volumes at 6 mm), once per session."""
    from radlens.prepare.pipeline import default_config, prepare_dataset
    from radlens.prepare.slicing import SliceConfig
    from radlens.prepare.spatial import SpatialConfig
    from radlens.prepare.splits import SplitConfig

    out = tmp_path_factory.getbasetemp() / f"tissue-prepared-{dims}d"
    if (out / "dataset.json").is_file():
        return PreparedDataset(out)
    cfg = dataclasses.replace(default_config("bids"), dims=dims, split=SplitConfig(ratios=(0.6, 0.2, 0.2), stratify=False))
    if dims == 2:
        cfg = dataclasses.replace(cfg, slicing=SliceConfig(plane="axial", slice_shape=SHAPE_2D, min_foreground=0.2))
    else:
        cfg = dataclasses.replace(cfg, spatial=SpatialConfig(target_spacing=(6.0, 6.0, 6.0), shape=SHAPE_3D))
    return prepare_dataset("bids", phantom_root(tmp_path_factory), out, cfg)

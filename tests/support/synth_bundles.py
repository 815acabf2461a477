"""Untrained tiny bundles shaped as ``radlens train controlnet`` / ``train seg`` save them, for the synthesis tests.

What they generate and segment is noise; the tests check the mechanics (seeds, filter records, resume,
output format), and the filter rule itself is tested on given scores.
"""

from __future__ import annotations

from pathlib import Path

import torch
from support.generative_bundles import frozen_minilm, preprocessing, save_ldm_bundle

from radlens.models.bundle import read_index, save_bundle
from radlens.models.components import build
from radlens.models.controlnet import controlnet_for
from radlens.models.generator import GenerativeParts, load_part


def save_controlnet_bundle(folder: Path, prepared: Path, seed: int = 0) -> Path:
    """A ControlNet bundle (vae, unet, text, controlnet; prompts; source T1w -> target T2w) of untrained tiny parts."""
    ldm = save_ldm_bundle(folder.parent / f"{folder.name}-ldm", prepared, frozen_minilm(), seed=seed)
    unet = load_part(ldm, "unet")
    torch.manual_seed(seed)
    labels = preprocessing(prepared)["labels"]
    parts = GenerativeParts({"vae": load_part(ldm, "vae"), "unet": unet, "text": load_part(ldm, "text"),
                             "controlnet": controlnet_for(unet, 4, max(int(k) for k in labels) + 1)})
    extra = {"prompts": read_index(ldm)["extra"]["prompts"],
             "controlnet": {"source": ["T1w"], "target": ["T2w"], "labels": labels, "mask_encoding": "onehot"}}
    return save_bundle(parts, folder, preprocessing(prepared), extra)


def save_segmenter_bundle(folder: Path, prepared: Path, seed: int = 0) -> Path:
    """A ``train seg``-shaped bundle of an untrained tiny 2D UNet segmenter for the dataset's labels."""
    pre = preprocessing(prepared)
    ids = sorted(int(k) for k in pre["labels"])
    torch.manual_seed(seed)
    model = build({"kind": "unet-seg", "out_channels": len(ids), "label_ids": ids, "channels": [4, 8], "strides": [2],
                   "num_res_units": 0})
    return save_bundle(model.eval(), folder, pre)

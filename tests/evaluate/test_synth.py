"""``radlens evaluate synth``: FID in a named encoder's features, paired SSIM/PSNR, CLIP similarities and the
contrast check, each consistent with a direct computation, and bad inputs refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from support.generative_bundles import preprocessing
from support.prepared_generation import write_generation_prepared
from support.synth_bundles import save_controlnet_bundle

from radlens.cli import main
from radlens.errors import ConfigError, InputError
from radlens.evaluate.synth import evaluate_synth
from radlens.io.prepared import PreparedDataset
from radlens.metrics.image_quality import psnr_ssim
from radlens.models.prompts import load_class_prompts
from radlens.synth.command import synthesize
from radlens.synth.generate import SamplerConfig


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """REAL: a T1w + T2w dataset; GENERATED: untrained-generator images from its T1w masks; a tiny random CLIP."""
    from radlens.models.bundle import save_bundle
    from radlens.models.registry import build_model, get_config

    root = tmp_path_factory.mktemp("evalsynth")
    real = write_generation_prepared(root / "real", patients={"train": 2, "validation": 1, "test": 1}, slices_per_series=3)
    synthesize(save_controlnet_bundle(root / "cn", real), real, root / "gen", select="first", keep=1,
               sampler=SamplerConfig(steps=1, batch_size=12), device="cpu")
    spec = get_config("tiny-vit2d")
    spec["image"] = {**spec["image"], "input_shape": [32, 32]}
    captions = [t for ts in load_class_prompts("mri_contrast_captions").prompts for t in ts]
    torch.manual_seed(0)
    clip = build_model(spec, texts=[*captions, "T2w brain MRI, fat high signal, water high signal"] * 2).eval()
    return {"real": real, "gen": root / "gen", "clip": save_bundle(clip, root / "clip", preprocessing(real))}


def test_generated_images_against_their_source(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["evaluate", "synth", str(data["gen"]), str(data["real"]), str(out), "--encoder", str(data["clip"]),
                 "--clip", str(data["clip"]), "--n_bootstrap", "20", "--real_contrasts", "[T2w]"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    images = pd.read_csv(out / "images.csv")
    assert m["n_generated"] == 9 and m["n_real"] == 12 and m["asked_contrasts"] == ["T2w"] and m["real_contrasts"] == ["T2w"]
    assert m["fid"]["encoder"]["kind"] == "clip" and len(m["fid"]["encoder"]["sha256"]) == 64
    assert m["fid"]["fid"] > 0 and m["fid"]["n_generated"] == 9 and m["fid"]["feature_dim"] == 128 and not m["fid"]["full_rank"]
    # Each generated image is paired with the T1w source slice of its mask: SSIM/PSNR as computed directly.
    gen, real = PreparedDataset(data["gen"]), PreparedDataset(data["real"])
    assert m["paired"]["n_pairs"] == 9 and (images["paired_slice_id"] == gen.slices["source_slice_id"]).all()
    a = torch.from_numpy(np.stack([gen.slice(i) for i in range(9)]))[:, None]
    b = torch.from_numpy(np.stack([real.slice(s) for s in gen.slices["source_slice_id"]]))[:, None]
    psnr, ssim = psnr_ssim(a, b, 1.0)
    assert m["paired"]["ssim"]["mean"] == pytest.approx(float(ssim.mean()), abs=1e-6)
    assert m["paired"]["psnr"]["mean"] == pytest.approx(float(psnr.mean()), abs=1e-4)
    clip = m["clip"]
    assert clip["text_column"] == "prompt" and -1 <= clip["image_text"]["mean"] <= 1 and clip["image_image_paired"]["n"] == 9
    assert clip["real_image_image_centroid"]["n"] == 12 and clip["image_text"]["ci"]["n"] == 20
    # The contrast check: T1w vs T2w (REAL's classes), its accuracy is the share of images predicted as asked.
    check = m["contrast_check"]
    assert check["classes"] == ["T1w", "T2w"] and check["chance"] == 0.5 and check["prompts"] == "mri-contrast-captions"
    assert check["accuracy"]["mean"] == pytest.approx((images["predicted_contrast"] == "T2w").mean())
    assert sum(check["confusion"]["T2w"].values()) == 9 and check["real_reference"]["accuracy"]["n"] == 24


def test_real_images_as_generated_ones_score_as_real(data: dict[str, Path], tmp_path: Path) -> None:
    """REAL's own slices given as the generated set: FID 0, and the contrast check equals REAL's reference."""
    evaluate_synth(str(data["real"]), str(data["real"]), str(tmp_path / "out"), encoder=str(data["clip"]),
                   contrast_clip=str(data["clip"]), n_bootstrap=0)
    m = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert m["n_generated"] == m["n_real"] == 24 and m["fid"]["fid"] == pytest.approx(0.0, abs=1e-3)
    assert m["fid"]["real_halves"]["n_real"] + m["fid"]["real_halves"]["n_generated"] == 24
    assert m["paired"]["n_pairs"] == 0 and "no 'source_slice_id' column" in m["paired"]["note"] and m["clip"] is None
    check = m["contrast_check"]
    assert check["per_contrast"]["T2w"]["mean"] == pytest.approx(check["real_reference"]["per_contrast"]["T2w"]["mean"])
    assert check["accuracy"]["mean"] == pytest.approx(check["real_reference"]["accuracy"]["mean"])


def test_bad_inputs_are_refused(data: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to measure"):
        evaluate_synth(str(data["gen"]), str(data["real"]), str(tmp_path / "a"))
    small = write_generation_prepared(tmp_path / "small", shape=(16, 16), patients={"train": 1})
    with pytest.raises(InputError, match=r"slices of shape \[32, 32\], but REAL's are \[16, 16\]"):
        evaluate_synth(str(data["gen"]), str(small), str(tmp_path / "b"), clip=str(data["clip"]))
    with pytest.raises(ConfigError, match=r"contrast class\(es\) \['PD'\] have no prompts"):
        evaluate_synth(str(data["gen"]), str(data["real"]), str(tmp_path / "c"), contrast_clip=str(data["clip"]),
                       contrast_classes=["T2w", "PD"], n_bootstrap=0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

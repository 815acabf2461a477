"""A tiny 3D prepared dataset with finding labels and templated reports (with negations), written by hand.

Finding 0 ("Pleural effusion") brightens the low-X half of the volume, finding 1 ("Lung nodule")
puts a bright cube in the high-X/high-Y corner: both are linearly visible in the pixels. Reports
state each of the dataset's findings as present ("Pleural effusion is seen.") or negated ("No
pleural effusion.").
Also a tiny model config (ViT + scratch BERT) for that shape, so tests train in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

FINDINGS = ["Pleural effusion", "Lung nodule"]
SHAPE = (16, 16, 8)
PRESENT = ("{name} is seen.", "There is {lower}.", "{name}.")
ABSENT = ("No {lower}.", "There is no {lower}.", "No {lower} is seen.")
FILLER = ("Trachea is patent.", "Heart size is normal.", "Bones are unremarkable.")


def report(labels: dict[str, int], rng: np.random.Generator) -> tuple[str, str]:
    """(findings, impression) sentences for one scan."""
    sentences = [str(rng.choice(FILLER))]
    for name, present in labels.items():
        template = str(rng.choice(PRESENT if present else ABSENT))
        sentences.append(template.format(name=name, lower=name.lower()))
    rng.shuffle(sentences)
    impression = " ".join(f"{n}." for n, p in labels.items() if p) or "No acute findings."
    return " ".join(sentences), impression


def image(labels: dict[str, int], rng: np.random.Generator, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    arr = rng.normal(0, 0.1, shape).astype(np.float32)
    if labels[FINDINGS[0]]:
        arr[: shape[0] // 2] += 1.0
    if labels[FINDINGS[1]]:
        arr[-6:, -6:] += 1.5
    return arr[None]


def write_findings_prepared(
    out: Path, patients: dict[str, int] | None = None, scans_per_patient: int = 1, seed: int = 0,
    findings: list[str] = FINDINGS,
) -> Path:
    """Write the folder (``patients``: split -> number of patients); labels are balanced coin flips."""
    patients = patients or {"train": 24, "validation": 8, "test": 8}
    rng = np.random.default_rng(seed)
    (out / "arrays").mkdir(parents=True, exist_ok=True)
    rows = []
    pid = 0
    for split, n in patients.items():
        for _ in range(n):
            pid += 1
            for scan in range(scans_per_patient):
                labels = {f: int(rng.integers(0, 2)) for f in FINDINGS}
                sid = f"p{pid:03d}_s{scan}"
                np.save(out / f"arrays/{sid}.npy", image(labels, rng))
                findings_text, impression = report({f: labels[f] for f in findings}, rng)
                rows.append({
                    "series_id": sid, "patient_id": f"p{pid:03d}", "study_id": sid, "scan_id": sid,
                    "source_path": f"{sid}.nii.gz", "array_path": f"arrays/{sid}.npy", "modality": "CT", "plane": "axial",
                    "split": split, "fold": -1, "text": findings_text, "label": -1,
                    "report_findings": findings_text, "report_impression": impression,
                    **{f: np.int8(labels[f]) for f in findings},
                })
    series = pd.DataFrame(rows)
    series.to_parquet(out / "series.parquet", index=False)
    card = {
        "radlens_version": "0.1.0", "created": "2026-01-01T00:00:00+00:00", "source": {"kind": "synthetic", "path": "/"},
        "config": {"dims": 3}, "dims": 3, "modality": "CT", "array_shape": list(SHAPE), "dtype": "float32",
        "intensity": "synthetic", "findings": list(findings), "label_names": {},
        "counts": {"patients": pid, "series": len(series), "failures": 0, "split": series["split"].value_counts().to_dict()},
    }
    (out / "dataset.json").write_text(json.dumps(card))
    return out


def tiny_model(path: Path) -> Path:
    """A JSON CLIP config for :data:`SHAPE` volumes, small enough for a CPU step in milliseconds."""
    config = {
        "image": {"kind": "vit", "input_shape": list(SHAPE), "patch_size": [8, 8, 4], "hidden_size": 32, "mlp_dim": 64,
                  "num_layers": 1, "num_heads": 2, "pooling": "cls"},
        "text": {"kind": "scratch", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64,
                 "vocab_size": 256, "context_length": 32, "pooling": "cls"},
        "embed_dim": 32,
    }
    path.write_text(json.dumps(config))
    return path


def quick_trainer(**changes: object) -> object:
    """A CPU TrainerConfig for a few steps, no progress bar."""
    from radlens.train.config import TrainerConfig

    base = dict(max_steps=20, val_every_n_steps=10, checkpoint_every_n_steps=10, progress_bar=False, log_every_n_steps=5,
                accelerator="cpu", devices=1)
    return TrainerConfig(**{**base, **changes})  # type: ignore[arg-type]


def base_bundle(folder: Path, prepared: Path, model_json: Path, **preprocessing: object) -> Path:
    """A freshly initialised tiny CLIP saved as a bundle for ``prepared`` (``preprocessing`` overrides the card's)."""
    from radlens.data.modules import preprocessing_from_card
    from radlens.models.bundle import save_bundle
    from radlens.models.registry import build_model

    card = json.loads((prepared / "dataset.json").read_text())
    prompts = [f"{f} is {s}present." for f in FINDINGS for s in ("", "not ")]
    return save_bundle(build_model(str(model_json), texts=prompts), folder, {**preprocessing_from_card(card), **preprocessing})

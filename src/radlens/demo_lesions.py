"""The CLEAR / LeCL chain on the CT phantom, shared by ``radlens demo`` and ``benchmarks/lecl_proof.py``.

CT phantom volumes (with finding masks) -> 2D axial slices carrying per-slice lesion boxes -> two
self-supervised slice encoders trained for the same budget (plain MoCo v3; LeCL: lesion-centred
views, a balanced sampler, the lesion-negative term) and one randomly initialised encoder -> bags of
slice embeddings per study -> a gated attention-MIL head in patient-level k-fold CV on the focal
findings, scored on the held-out test patients (fold ensemble, patient-bootstrap CIs), plus how much
attention lands on the slices that hold those findings.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radlens.errors import InputError
from radlens.report.html import Section

# A small 2D ResNet-10 (a quarter of the widths), cheap enough for a CPU budget of minutes.
ENCODER = {"kind": "resnet", "depth": 10, "width_factor": 0.25}
# Focal findings the CT phantom draws with masks, by their label id in the phantom's masks/labels.json: the
# lesions of LeCL's lesion-centred views, and the demo's MIL endpoints.
ENDPOINTS = {"Lung nodule": 10, "Lung opacity": 11, "Consolidation": 16, "Lymphadenopathy": 7}
# Larger findings the phantom also masks: MIL endpoints that pooled slice embeddings of a small encoder carry
# (benchmarks/RESULTS.md, lecl_proof: the focal ones stay at chance for every encoder at CPU budgets).
LARGE_ENDPOINTS = {"Cardiomegaly": 3, "Pleural effusion": 13, "Pericardial effusion": 4, "Emphysema": 8}
ENCODERS = ("random init", "MoCo v3", "LeCL")


@dataclass(frozen=True)
class LesionChainSize:
    """How big each step is: series prepared (None: all), seconds per encoder, MIL steps and folds, and the
    slice grid (``slice_px`` square pixels of ``slice_mm``; the encoder's stem strides by ``stem_stride``) and
    how often the encoders validate (``moco_val_every`` steps: validation time counts against the budget)."""

    series: int | None
    moco_seconds: int
    moco_max_steps: int
    mil_steps: int
    folds: int
    n_bootstrap: int
    mil_batch_size: int = 8
    slice_px: int = 64
    slice_mm: float = 5.0
    stem_stride: int = 1
    moco_val_every: int = 50


def _say(text: str) -> None:
    print(f"[radlens lesions] {text}", flush=True)


def prepare_slices(ct_raw: Path, out: Path, size: LesionChainSize, workers: int, seed: int = 0) -> Path:
    """Axial slices (``size.slice_px`` square at ``size.slice_mm``, 5 mm apart) with the phantom's finding masks
    (per-slice boxes)."""
    import dataclasses

    from radlens.prepare.pipeline import default_config, prepare_dataset
    from radlens.prepare.splits import SplitConfig

    cfg = default_config("ct-rate")
    # radlens' own patient split (not CT-RATE's train/valid folders), so that a --limit keeps test patients.
    px, mm = size.slice_px, size.slice_mm
    cfg = dataclasses.replace(cfg, dims=2, spatial=dataclasses.replace(cfg.spatial, target_spacing=(mm, mm, 5.0), shape=(px, px, 48)),
                              slicing=dataclasses.replace(cfg.slicing, slice_shape=(px, px)),
                              split=SplitConfig(ratios=(0.6, 0.1, 0.3), seed=seed))
    return prepare_dataset("ct-rate", ct_raw, out, cfg, workers=workers, limit=size.series).path


def train_encoders(prepared: Path, runs: Path, size: LesionChainSize, seed: int) -> dict[str, str]:
    """The three slice encoders: the random-init config file, and the MoCo v3 and LeCL run folders."""
    from radlens.data.views import MocoDataConfig
    from radlens.train.config import TrainerConfig
    from radlens.train.moco import train_moco
    from radlens.train.moco_config import MocoConfig, MocoLossConfig

    runs.mkdir(parents=True, exist_ok=True)
    encoder = runs / "encoder.json"
    encoder.write_text(json.dumps({**ENCODER, "input_shape": [size.slice_px] * 2, "stem_stride": size.stem_stride}))
    budget = time.strftime("%H:%M:%S", time.gmtime(size.moco_seconds))
    trainer = TrainerConfig(max_steps=size.moco_max_steps, max_time=f"00:{budget}", accelerator="cpu", devices=1,
                            val_every_n_steps=min(size.moco_val_every, size.moco_max_steps), checkpoint_every_n_steps=100_000,
                            progress_bar=False)
    lesions = sorted(ENDPOINTS.values())
    variants = {"MoCo v3": (MocoDataConfig(batch_size=64), MocoLossConfig()),
                "LeCL": (MocoDataConfig(batch_size=64, lesion_views=True, sampler="balanced", lesion_labels=lesions),
                         MocoLossConfig(lesion_weight=1.0))}
    out = {"random init": str(encoder)}
    for name, (data, loss) in variants.items():
        run = runs / name.split()[0].lower()
        if not (run / "best").is_dir():
            _say(f"training the {name} slice encoder ({size.moco_seconds} s budget)")
            train_moco(str(prepared), str(run), data, str(encoder), trainer=trainer, loss=loss,
                       moco=MocoConfig(dim=64, hidden=256), seed=seed)
        out[name] = str(run)
    return out


def attention_on_lesions(mil: Path, prepared: Path, lesion_ids: set[int]) -> dict[str, float]:
    """Over test bags holding both kinds of slice: the mean attention mass on slices with an endpoint's
    lesion (mask label ids ``lesion_ids``), and those slices' mean share of the bag (what uniform attention
    would give)."""
    import h5py
    import numpy as np
    import pandas as pd

    from radlens.io.prepared import PreparedDataset

    present = PreparedDataset(prepared).slices.set_index("slice_id")["labels_present"]
    attention = pd.read_csv(mil / "attention.csv")
    mass, share = [], []
    for (_, path), bag in attention[attention["split"] == "test"].groupby(["fold", "path"]):
        with h5py.File(path, "r") as f:
            ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f["slice_id"][:]]
        labels = [present.get(ids[int(r)]) for r in bag["row"]]
        hit = np.array([labels_ is not None and bool(set(labels_) & lesion_ids) for labels_ in labels])
        if hit.any() and not hit.all():
            mass.append(float(bag["weight"].to_numpy()[hit].sum()))
            share.append(float(hit.mean()))
    return {"attention_mass_on_lesion_slices": float(np.mean(mass)) if mass else float("nan"),
            "lesion_slice_share": float(np.mean(share)) if share else float("nan"), "bags": len(mass)}


def lesion_chain(ct_raw: Path, out: Path, size: LesionChainSize, seed: int = 0, workers: int = 2,
                 endpoints: dict[str, int] | None = None, mil_folder: str = "mil") -> dict[str, Any]:
    """Run the whole chain into ``out``; returns per encoder the test metrics (fold ensemble) and attention.

    ``endpoints`` (finding -> mask label id; default :data:`ENDPOINTS`) are the MIL labels, trained into
    ``out/<mil_folder>/<encoder>``."""
    import dataclasses

    from radlens.evaluate.extract import extract_bags
    from radlens.train.mil import MIL_TRAINER, train_mil

    _say("preparing 2D CT slices with lesion boxes")
    prepared = prepare_slices(ct_raw, out / "prepared", size, workers, seed)
    encoders = train_encoders(prepared, out / "runs", size, seed)
    trainer = dataclasses.replace(MIL_TRAINER, max_steps=size.mil_steps, progress_bar=False,
                                  val_every_n_steps=min(MIL_TRAINER.val_every_n_steps, size.mil_steps),
                                  checkpoint_every_n_steps=min(MIL_TRAINER.checkpoint_every_n_steps, size.mil_steps))
    rows: dict[str, Any] = {}
    wanted = endpoints or ENDPOINTS
    usable: list[str] = []
    for name in ENCODERS:
        tag = name.split()[0].lower()
        bags, mil = out / "bags" / tag, out / mil_folder / tag
        _say(f"{name}: bags of slice embeddings per study, then gated attention-MIL in {size.folds}-fold CV")
        extract_bags(encoders[name], str(prepared), str(bags), per="study", seed=seed)
        usable = usable or usable_endpoints(bags / "bags.csv", size.folds, wanted)
        if not (mil / "metrics.json").is_file():
            train_mil(str(bags), str(mil), head="gated_abmil", label_columns=usable, folds=size.folds,
                      trainer=trainer, batch_size=size.mil_batch_size, n_bootstrap=size.n_bootstrap, seed=seed)
        metrics = json.loads((mil / "metrics.json").read_text())
        rows[name] = {"test": (metrics.get("test") or {}).get("ensemble"), "mil": str(mil), "endpoints": usable,
                      "attention": attention_on_lesions(mil, prepared, {wanted[f] for f in usable})}
    summary = out / ("lesions.json" if mil_folder == "mil" else f"lesions-{mil_folder}.json")
    summary.write_text(json.dumps(rows, indent=2, default=str))
    return rows


def usable_endpoints(bags_csv: Path, folds: int, endpoints: dict[str, int]) -> list[str]:
    """The endpoints with at least ``folds`` positive and ``folds`` negative patients outside the test split
    (stratified k-fold needs them; a small phantom may lack some)."""
    import pandas as pd

    bags = pd.read_csv(bags_csv)
    cv = bags[bags["split"] != "test"].groupby("patient_id")[list(endpoints)].max()
    usable = [f for f in endpoints if (cv[f] == 1).sum() >= folds and (cv[f] == 0).sum() >= folds]
    if not usable:
        raise InputError(bags_csv, f"no endpoint of {list(endpoints)} has {folds} positive and negative patients; "
                                   "use more patients")
    return usable


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def lesion_table(rows: dict[str, Any]) -> list[dict[str, str]]:
    """One row per encoder: test macro AUROC with its CI, attention mass on lesion slices and their share."""
    table = []
    for name, row in rows.items():
        macro = (row["test"] or {}).get("macro") or {}
        ci = (macro.get("ci") or {}).get("auroc") or {}
        att = row["attention"]
        table.append({"slice encoder": name,
                      "test macro AUROC (95% CI)": f"{_num(macro.get('auroc'))} ({_num(ci.get('low'), 2)}-{_num(ci.get('high'), 2)})",
                      "attention on lesion slices": _num(att["attention_mass_on_lesion_slices"], 2),
                      "their share of the bag": _num(att["lesion_slice_share"], 2)})
    return table


def lesion_section(rows: dict[str, Any], size: LesionChainSize) -> Section:
    """The report section: the table and the LeCL run's attention figure."""
    import pandas as pd

    figure = Path(rows["LeCL"]["mil"]) / "attention.png"
    return Section(
        "Lesion-aware slice encoders and attention-MIL (CLEAR / LeCL, CT phantom, test patients)",
        text=(f"Each encoder trained {size.moco_seconds} s on one CPU thread; gated ABMIL in {size.folds}-fold "
              f"patient-level CV on {', '.join(rows['LeCL']['endpoints'])}, fold ensemble on the held-out test patients."),
        tables=[("MIL on slice embeddings", pd.DataFrame(lesion_table(rows)))],
        figures=[("LeCL features: the most attended slices, lesion masks outlined", figure)] if figure.is_file() else [],
    )

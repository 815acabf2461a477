"""``radlens demo``: the main job, end to end on embedded data with no download.

1. Real sample scans shipped inside installed packages (nilearn's MNI152 T1, pydicom's CT and
   MR samples) are prepared, and their dataset cards printed.
2. Phantom brain MRI (physics-based, BIDS + sidecars) and phantom chest CT (CT-RATE layout,
   reports, 18 labels) are generated.
3. Both are prepared: MRI to 2D slices with metadata captions, CT to fixed-shape 3D volumes.
4. A tiny 2D metadata-CLIP (MRI) and a tiny 3D report-CLIP (CT) are trained on the CPU.
5. Held-out patients are evaluated: MRI protocol retrieval, CT zero-shot findings.
6. ``OUT/report.html`` gathers cards, training curves, metrics and figures.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radlens.report.html import Section


@dataclass(frozen=True)
class DemoSize:
    """How big each stage is: the full demo (<= 5 min on 2 cores) or the ``--quick`` smoke run."""

    mri_subjects: int
    ct_patients: int
    mri_seconds: int
    ct_seconds: int
    max_steps: int
    n_bootstrap: int


FULL = DemoSize(mri_subjects=10, ct_patients=40, mri_seconds=75, ct_seconds=75, max_steps=100_000, n_bootstrap=500)
QUICK = DemoSize(mri_subjects=3, ct_patients=12, mri_seconds=8, ct_seconds=8, max_steps=12, n_bootstrap=50)
CT_SHAPE = (64, 64, 32)
SLICE_SHAPE = (64, 64)


def _say(message: str) -> None:
    print(f"[radlens demo] {message}", flush=True)


def prepare_sample_scans(out: Path, workers: int) -> list[dict[str, Any]]:
    """Prepare the real scans shipped with nilearn and pydicom; return their cards."""
    import nibabel as nib
    from nilearn.datasets import load_mni152_template
    from pydicom.data import get_testdata_file

    from radlens.prepare.pipeline import default_config, prepare_dataset

    raw = out / "raw" / "samples"
    anat = raw / "bids" / "sub-mni152" / "ses-01" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    nib.save(load_mni152_template(resolution=2), anat / "sub-mni152_ses-01_T1w.nii.gz")
    # The template is an average of T1w scans, not one acquisition: only what is known is written.
    sidecar = {"Modality": "MR", "SeriesDescription": "MNI152 2009 T1w template", "MRAcquisitionType": "3D"}
    (anat / "sub-mni152_ses-01_T1w.json").write_text(json.dumps(sidecar))
    dicom = raw / "dicom"
    for name in ("CT_small.dcm", "MR_small.dcm"):
        target = dicom / name.split("_")[0] / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(get_testdata_file(name), target)

    cfg = default_config("bids")
    cfg = dataclasses.replace(cfg, slicing=dataclasses.replace(cfg.slicing, slice_shape=SLICE_SHAPE))
    cards = [prepare_dataset("bids", raw / "bids", out / "prepared" / "samples-mni152", cfg, workers=workers).card]
    # pydicom's samples are single slices: prepared as 2D, each keeps its own series.
    cfg = dataclasses.replace(default_config("dicom"), dims=2, slicing=cfg.slicing)
    cards.append(prepare_dataset("dicom", dicom, out / "prepared" / "samples-dicom", cfg, workers=workers).card)
    return cards


def generate_phantoms(out: Path, size: DemoSize, seed: int, workers: int) -> tuple[Path, Path]:
    """Write the phantom MRI (BIDS) and CT (CT-RATE) raw datasets."""
    from radlens.phantoms.ct import CTPhantomConfig, generate_ct_phantom
    from radlens.phantoms.mri import MRIPhantomConfig, generate_mri_phantom

    mri, ct = out / "raw" / "phantom-mri", out / "raw" / "phantom-ct"
    generate_mri_phantom(mri, MRIPhantomConfig(subjects=size.mri_subjects, seed=seed, preview=True), workers=workers)
    generate_ct_phantom(ct, CTPhantomConfig(patients=size.ct_patients, seed=seed), workers=workers)
    return mri, ct


def prepare_phantoms(out: Path, mri: Path, ct: Path, workers: int) -> tuple[Path, Path]:
    """MRI -> 2D slices + captions + protocol labels; CT -> 3D volumes at the phantom's own spacing."""
    from radlens.prepare.pipeline import default_config, prepare_dataset
    from radlens.prepare.splits import SplitConfig

    mri_cfg = default_config("bids")
    mri_cfg = dataclasses.replace(mri_cfg, slicing=dataclasses.replace(mri_cfg.slicing, slice_shape=SLICE_SHAPE))
    mri_out = out / "prepared" / "phantom-mri"
    prepare_dataset("bids", mri, mri_out, mri_cfg, workers=workers)

    ct_cfg = default_config("ct-rate")
    ct_cfg = dataclasses.replace(
        ct_cfg,
        spatial=dataclasses.replace(ct_cfg.spatial, target_spacing=(5.0, 5.0, 7.5), shape=CT_SHAPE),
        split=SplitConfig(ratios=(0.75, 0.25, 0.0), seed=0),
    )
    ct_out = out / "prepared" / "phantom-ct"
    prepare_dataset("ct-rate", ct, ct_out, ct_cfg, workers=workers)
    return mri_out, ct_out


def train(prepared: Path, run: Path, model: str, loss_mode: str, seconds: int, size: DemoSize, seed: int,
          text_column: str = "text") -> Path:
    """Train a tiny CLIP on the CPU for a fixed time budget; returns the run folder."""
    from radlens.data.prepared import PreparedDataset
    from radlens.train.clip import train_clip
    from radlens.train.config import AugmentConfig, ClipDataConfig, LossConfig, OptimConfig, TrainerConfig

    ds = PreparedDataset(prepared)
    n_train = int(((ds.slices if ds.dims == 2 else ds.series)["split"] == "train").sum())
    hh_mm_ss = time.strftime("%H:%M:%S", time.gmtime(seconds))
    return train_clip(
        # multi_positive treats same-protocol slices as positives, so a random sampler is safe.
        # Augmentation is off: within a CPU budget of a minute, more steps beat more variety (measured).
        data=ClipDataConfig(path=str(prepared), text_column=text_column, batch_size=min(32, n_train),
                            augment=AugmentConfig(enabled=False)),
        model=model,
        optim=OptimConfig(lr=1e-3, warmup_steps=10),
        trainer=TrainerConfig(max_steps=size.max_steps, max_time=f"00:{hh_mm_ss}", accelerator="cpu",
                              devices=1, val_every_n_steps=min(50, size.max_steps), checkpoint_every_n_steps=100_000,
                              monitor="val/loss", log_every_n_steps=5, progress_bar=True),
        loss=LossConfig(mode=loss_mode),  # type: ignore[arg-type]
        out=str(run),
        seed=seed,
    )


def present_findings(prepared: Path, splits: tuple[str, ...]) -> list[str]:
    """CT findings with both classes in every given split (AUROC is undefined otherwise)."""
    from radlens.data.prepared import PreparedDataset

    ds = PreparedDataset(prepared)
    tables = [ds.series[ds.series["split"] == s] for s in splits]
    return [f for f in ds.card["findings"] if all(t[f].nunique() == 2 for t in tables)]


def _metrics_csv(run: Path) -> Path | None:
    found = sorted((run / "logs" / "csv").glob("version_*/metrics.csv"))
    return found[-1] if found else None


def _card_table(card: dict[str, Any]) -> dict[str, Any]:
    counts = card.get("counts", {})
    return {"source": card["source"]["kind"], "modality": card.get("modality"), "dims": card.get("dims"),
            "array shape": str(card.get("array_shape")), "patients": counts.get("patients"),
            "series": counts.get("series"), "slices": counts.get("slices"), "failures": counts.get("failures"),
            "splits": json.dumps(counts.get("split", {}))}


def demo(out: Path = Path("demo-out"), quick: bool = False, seed: int = 0, workers: int = 2) -> int:
    """Run the main job end to end on embedded data and write OUT/report.html.

    Args:
        out: output folder (raw phantoms, prepared datasets, runs, results, report.html).
        quick: a smoke run of about a minute with tiny sizes (learning is not expected).
        seed: seeds phantoms, splits, training and bootstraps.
        workers: worker processes for generation and preparation.
    """
    import pandas as pd

    from radlens.evaluate.retrieval import evaluate_retrieval
    from radlens.evaluate.zeroshot import zeroshot
    from radlens.phantoms.preview import save_montage
    from radlens.report.curves import plot_training_curves
    from radlens.report.html import write_report

    import os

    import torch

    # Tiny models on a 2-core machine: one thread per process is ~10x faster than two
    # OpenMP threads contending with the data pipeline (measured); workers inherit it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    size = QUICK if quick else FULL
    out = Path(out)
    started = time.monotonic()
    _say("1/6 preparing the real sample scans shipped with nilearn and pydicom")
    for card in prepare_sample_scans(out, workers):
        print(json.dumps({k: card[k] for k in ("source", "modality", "dims", "array_shape", "counts")}, indent=1))
    _say(f"2/6 generating phantoms: {size.mri_subjects} MRI subjects, {size.ct_patients} CT patients")
    mri_raw, ct_raw = generate_phantoms(out, size, seed, workers)
    _say("3/6 preparing the phantoms")
    mri_prep, ct_prep = prepare_phantoms(out, mri_raw, ct_raw, workers)
    _say(f"4/6 training a tiny 2D metadata-CLIP on MRI slices ({size.mri_seconds} s budget)")
    mri_run = train(mri_prep, out / "runs" / "mri-clip", "tiny-vit2d", "multi_positive", size.mri_seconds, size, seed)
    _say(f"      training a tiny 3D report-CLIP on CT volumes ({size.ct_seconds} s budget)")
    ct_run = train(ct_prep, out / "runs" / "ct-clip", "tiny-vit3d", "clip", size.ct_seconds, size, seed,
                   text_column="report_findings")
    _say("5/6 evaluating on held-out patients")
    mri_metrics = evaluate_retrieval(mri_run, str(mri_prep), split="test", out=str(out / "results" / "mri-retrieval"))
    ct_retrieval = evaluate_retrieval(ct_run, str(ct_prep), split="test", text_column="report_findings",
                                      out=str(out / "results" / "ct-retrieval"))
    findings = present_findings(ct_prep, ("test", "validation"))
    zs_out = out / "results" / "ct-zeroshot"
    zeroshot(str(ct_run / "best"), str(ct_prep), str(zs_out), split="test", findings=findings,
             n_bootstrap=size.n_bootstrap, seed=seed)
    zs = json.loads((zs_out / "metrics.json").read_text())

    _say("6/6 writing the report")
    headline = headline_numbers(mri_metrics, ct_retrieval, zs)
    figures = out / "figures"
    sections = [Section("Datasets", tables=[(p.name, _card_table(json.loads((p / "dataset.json").read_text())))
                                            for p in sorted((out / "prepared").iterdir())])]
    previews = [("MRI phantom contrasts", mri_raw / "preview.png")]
    sections.append(Section("Phantoms", figures=previews))
    curves = []
    for name, run in (("MRI CLIP", mri_run), ("CT CLIP", ct_run)):
        csv = _metrics_csv(run)
        if csv is not None:
            curves.append((name, plot_training_curves(csv, figures / f"{run.name}-curves.png",
                                                      keys=["train/loss", "val/loss"])))
    sections.append(Section("Training curves", figures=curves))
    per_finding = pd.DataFrame([{"finding": f, "AUROC": v["auroc"], "CI low": v.get("auroc_ci", {}).get("low"),
                                 "CI high": v.get("auroc_ci", {}).get("high"), "AUPRC": v["auprc"], "F1": v["f1"]}
                                for f, v in zs["per_finding"].items()])
    sections.append(Section("CT zero-shot findings (test patients)", tables=[("per finding, 95% patient-bootstrap CI",
                                                                              per_finding)],
                            figures=[("ROC", zs_out / "roc.png"), ("PR", zs_out / "pr.png")]))
    sections.append(Section("Retrieval (test patients)", tables=[
        ("MRI slice <-> caption", _flat(mri_metrics)), ("CT volume <-> report", _flat(ct_retrieval))]))
    grid = retrieval_grid(mri_prep, mri_run, figures / "mri-retrieval.png", save_montage)
    sections.append(Section("MRI retrieval examples", figures=[("query slice, then the slices whose captions "
                                                                "rank highest for its caption", grid)]))
    report = write_report(out / "report.html", "radlens demo", headline, sections)
    for key, value in headline.items():
        print(f"  {key}: {value}")
    _say(f"done in {time.monotonic() - started:.0f} s; report: {report.resolve()}")
    return 0


def _flat(metrics: dict[str, Any]) -> dict[str, Any]:
    """The numeric top-level entries of a metrics dict, rounded for a table."""
    return {k: round(v, 3) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def headline_numbers(mri: dict[str, Any], ct: dict[str, Any], zs: dict[str, Any]) -> dict[str, str]:
    """The numbers printed at the end and shown on top of the report, each next to its chance level."""
    macro = zs["macro"]["auroc"]
    ci = zs["macro"].get("auroc_ci") or {}
    ci_text = f" (95% CI {ci['low']:.2f}-{ci['high']:.2f})" if ci.get("low") is not None else ""
    return {
        "CT zero-shot macro AUROC (chance 0.50)": f"{macro:.3f}{ci_text}",
        f"MRI label-level R@1 image->caption (chance {mri['chance_i2t_label_R@1']:.3f})": f"{mri['i2t_label_R@1']:.3f}",
        f"MRI TE-bin accuracy by retrieval": f"{mri['i2t_TE_bin_acc']:.3f}",
        f"CT report->volume R@5 (chance {ct['chance_t2i_R@5']:.3f})": f"{ct['t2i_R@5']:.3f}",
    }


def retrieval_grid(prepared: Path, run: Path, png: Path, save_montage: Any, queries: int = 3, k: int = 3) -> Path:
    """Image grid: for a few test slices, the slice itself then the top-k slices retrieved by its caption."""
    import numpy as np
    import torch

    from radlens.data.prepared import PreparedDataset
    from radlens.models.bundle import load_model

    ds = PreparedDataset(prepared)
    model = load_model(str(run / "best")).eval()
    test = ds.slices[ds.slices["split"] == "test"].reset_index(drop=True)
    picks = test.groupby("series_id").nth(len(test) // max(1, test["series_id"].nunique()) // 2).head(queries)
    gallery_rows = test.groupby("series_id").head(1).reset_index(drop=True)
    gallery = np.stack([ds.array(r.series_id)[r.row] for r in gallery_rows.itertuples()])[:, None]
    with torch.no_grad():
        g = model.encode_image(torch.from_numpy(gallery.astype(np.float32)))
        t = model.encode_text(**model.tokenize(list(picks["text"])))
    order = (t @ g.T).argsort(dim=1, descending=True)[:, :k].numpy()
    images, titles = [], []
    for i, row in enumerate(picks.itertuples()):
        images.append(np.rot90(ds.array(row.series_id)[row.row]))
        titles.append(f"query: {row.series_id[-14:]}")
        for j in order[i]:
            hit = gallery_rows.iloc[j]
            images.append(np.rot90(gallery[j, 0]))
            same = "same label" if hit["label"] == row.label else "other label"
            titles.append(f"top: {hit['series_id'][-14:]} ({same})")
    return save_montage(images, titles, png, columns=k + 1)

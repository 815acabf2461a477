"""``radlens demo``: the main job, end to end on embedded data with no download.

1. Real sample scans shipped inside installed packages (nilearn's MNI152 T1, pydicom's CT and
   MR samples) are prepared, and their dataset cards printed.
2. Phantom brain MRI (physics-based, BIDS + sidecars) and phantom chest CT (CT-RATE layout,
   reports, 18 labels) are generated.
3. Both are prepared: MRI to 2D slices with metadata captions, CT to fixed-shape 3D volumes.
4. A tiny 2D metadata-CLIP (MRI) and a tiny 3D report-CLIP (CT) are trained on the CPU.
5. Held-out patients are evaluated: MRI protocol retrieval and zero-shot contrast class, CT
   report retrieval and zero-shot findings.
6. The CLEAR / LeCL chain on 2D CT slices (:mod:`radlens.demo_lesions`): MoCo v3 and LeCL slice
   encoders, bags of slice embeddings, attention-MIL in patient-level cross-validation.
7. The MRGen chain on the MRI phantom (:mod:`radlens.demo_mrgen`): autoencoder, latent diffusion and
   mask ControlNet make T2w images from T1w tissue masks, filtered by a segmenter's agreement; a
   segmenter trained on them is scored on real T2w images of held-out subjects.
8. ``OUT/report.html`` gathers cards, training curves, metrics and figures.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radlens.demo_lesions import LesionChainSize, lesion_chain, lesion_section, lesion_table
from radlens.demo_mrgen import mrgen_section, mrgen_table, run_chain
from radlens.report.html import Section


@dataclass(frozen=True)
class DemoSize:
    """How big each stage is: the full demo (<= 10 min on 2 cores) or the ``--quick`` smoke run."""

    mri_subjects: int
    ct_patients: int
    mri_seconds: int
    ct_seconds: int
    max_steps: int
    n_bootstrap: int
    lesions: LesionChainSize


FULL = DemoSize(mri_subjects=40, ct_patients=200, mri_seconds=75, ct_seconds=75, max_steps=100_000, n_bootstrap=500,
                lesions=LesionChainSize(series=120, moco_seconds=35, moco_max_steps=100_000, mil_steps=100, folds=5,
                                        n_bootstrap=500))
QUICK = DemoSize(mri_subjects=3, ct_patients=12, mri_seconds=8, ct_seconds=8, max_steps=12, n_bootstrap=50,
                 lesions=LesionChainSize(series=None, moco_seconds=5, moco_max_steps=4, mil_steps=6, folds=2,
                                         n_bootstrap=20, mil_batch_size=2))
CT_SHAPE = (64, 64, 32)


@dataclass(frozen=True)
class Recipe:
    """How one of the demo's CLIP models is trained (model, loss, batch, learning rate, best-checkpoint metric)."""

    model: str
    loss: dict[str, Any]
    batch_size: int
    lr: float
    monitor: str
    val_prompts: str
    val_label_column: str | None = None


# Both image towers train against the packaged MiniLM kept frozen (LiT): text embeddings are computed
# once per distinct text (CT: per distinct sentence), so the CPU budget goes to the image tower.
# MRI: a tiny ViT on slices, soft targets from TE/TR/TI distance. Protocol labels also encode plane,
# vendor and flip angle, so they are nearly unique per series and multi_positive learned to tell
# series apart rather than contrasts (zero-shot contrast at chance); the TE/TR/TI kernel is what
# decides contrast (balanced accuracy 0.19 -> 0.52 and 0.47 over two seeds, retrieval up too).
# Both keep the checkpoint that is best at their zero-shot task on the validation split
# (benchmarks/learning_curve.py): MRI by val/loss kept step 200 of 3,600 on 28 subjects (contrast balanced
# accuracy 0.59 where the zero-shot rule kept 0.86 after 10 min on 28 subjects); CT by retrieval rank
# wandered below its own 3-minute result after 10 minutes on 150 patients (0.66 vs 0.69).
MRI = Recipe("tiny-lit2d", {"mode": "soft", "alpha": 0.8, "sigma": 0.5}, batch_size=32, lr=1e-3,
             monitor="val/zeroshot_bacc", val_prompts="mri_contrast_captions", val_label_column="contrast")
# CT: a small strided 3D ResNet (it learns focal findings from ~150 training volumes where a tiny 3D
# ViT did not), reports pooled sentence by sentence, and the "findings" loss (scans with the same
# CT-RATE labels share target mass). With a from-scratch text tower or plain CLIP targets, 75 s of
# CPU training memorised the training reports and zero-shot stayed at chance. Batches of 16 give
# twice the steps. The validation loss (it rises with the temperature) chose step 49 of ~250 in every
# run although later image embeddings probed better; the report mean rank did better, the zero-shot
# AUROC of the validation split better still (all measured).
CT = Recipe("tiny-res3d", {"mode": "findings", "alpha": 0.7}, batch_size=16, lr=2e-3, monitor="val/zeroshot_auroc",
            val_prompts="ctrate_reports")
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
    from radlens.phantoms.ct_preview import write_preview
    from radlens.phantoms.mri import MRIPhantomConfig, generate_mri_phantom

    mri, ct = out / "raw" / "phantom-mri", out / "raw" / "phantom-ct"
    generate_mri_phantom(mri, MRIPhantomConfig(subjects=size.mri_subjects, seed=seed, preview=True), workers=workers)
    write_preview(ct, generate_ct_phantom(ct, CTPhantomConfig(patients=size.ct_patients, seed=seed), workers=workers))
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


def train(prepared: Path, run: Path, recipe: Recipe, seconds: int, size: DemoSize, seed: int,
          text_column: str = "text") -> Path:
    """Train a tiny CLIP on the CPU for a fixed time budget; returns the run folder."""
    from radlens.data.augment import AugmentConfig
    from radlens.data.datasets import ClipDataConfig
    from radlens.io.prepared import PreparedDataset
    from radlens.train.clip import train_clip
    from radlens.train.clip_zeroshot import ZeroShotValConfig
    from radlens.train.config import LossConfig, OptimConfig, TrainerConfig

    ds = PreparedDataset(prepared)
    n_train = int(((ds.slices if ds.dims == 2 else ds.series)["split"] == "train").sum())
    # A rerun of the demo trains afresh: its previous run folder (its own output) is replaced.
    shutil.rmtree(run, ignore_errors=True)
    hh_mm_ss = time.strftime("%H:%M:%S", time.gmtime(seconds))
    return train_clip(
        str(prepared),
        str(run),
        # Both losses give same-series slices / same-finding scans shared target mass, so a random
        # sampler is safe. Augmentation is off: within a CPU budget of a minute, more steps beat more variety (measured).
        data=ClipDataConfig(text_column=text_column, batch_size=min(recipe.batch_size, n_train),
                            augment=AugmentConfig(enabled=False)),
        model=recipe.model,
        optim=OptimConfig(lr=recipe.lr, warmup_steps=10),
        trainer=TrainerConfig(max_steps=size.max_steps, max_time=f"00:{hh_mm_ss}", accelerator="cpu",
                              devices=1, val_every_n_steps=min(50, size.max_steps), checkpoint_every_n_steps=100_000,
                              monitor=recipe.monitor, log_every_n_steps=5, progress_bar=True),
        loss=LossConfig(**recipe.loss),
        val_zeroshot=ZeroShotValConfig(recipe.val_prompts, recipe.val_label_column),
        seed=seed,
    )


def present_findings(prepared: Path, splits: tuple[str, ...]) -> list[str]:
    """CT findings with both classes in every given split (AUROC is undefined otherwise)."""
    from radlens.io.prepared import PreparedDataset

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
    import os

    import torch

    from radlens.report.html import write_report

    # Tiny models on a 2-core machine: one thread per process is ~10x faster than two
    # OpenMP threads contending with the data pipeline (measured); workers inherit it.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    size = QUICK if quick else FULL
    out = Path(out)
    started = time.monotonic()
    _say("1/8 preparing the real sample scans shipped with nilearn and pydicom")
    for card in prepare_sample_scans(out, workers):
        print(json.dumps({k: card[k] for k in ("source", "modality", "dims", "array_shape", "counts")}, indent=1))
    _say(f"2/8 generating phantoms: {size.mri_subjects} MRI subjects, {size.ct_patients} CT patients")
    mri_raw, ct_raw = generate_phantoms(out, size, seed, workers)
    _say("3/8 preparing the phantoms")
    mri_prep, ct_prep = prepare_phantoms(out, mri_raw, ct_raw, workers)
    _say(f"4/8 training a tiny 2D metadata-CLIP on MRI slices ({size.mri_seconds} s budget)")
    mri_run = train(mri_prep, out / "runs" / "mri-clip", MRI, size.mri_seconds, size, seed)
    _say(f"      training a tiny 3D report-CLIP on CT volumes ({size.ct_seconds} s budget)")
    ct_run = train(ct_prep, out / "runs" / "ct-clip", CT, size.ct_seconds, size, seed,
                   text_column="report_findings")
    _say("5/8 evaluating on held-out patients")
    results = evaluate(out / "results", mri_prep, mri_run, ct_prep, ct_run, size, seed)
    _say("6/8 lesion-aware slice encoders and attention-MIL on CT slices (CLEAR / LeCL)")
    lesions = lesion_chain(ct_raw, out / "lesions", size.lesions, seed, workers)
    _say("7/8 MRGen: T1w masks -> synthetic T2w images -> a segmenter for T2w (MRI phantom)")
    mrgen = run_chain(None, out / "mrgen", quick=quick, seed=seed)
    _say("8/8 writing the report")
    headline = headline_numbers(results)
    for row in lesion_table(lesions):
        headline[f"CT MIL test macro AUROC, {row['slice encoder']} slice features"] = row["test macro AUROC (95% CI)"]
    for row in mrgen_table(mrgen):
        headline[f"MRGen mean Dice on real T2w, segmenter trained on {row['segmenter trained on']}"] = row["mean Dice (95% CI)"]
    report = write_report(out / "report.html", "radlens demo", headline,
                          [*report_sections(out, mri_raw, ct_raw, mri_run, ct_run, results),
                           lesion_section(lesions, size.lesions), mrgen_section(mrgen)])
    for key, value in headline.items():
        print(f"  {key}: {value}")
    _say(f"done in {time.monotonic() - started:.0f} s; report: {report.resolve()}")
    return 0


def evaluate(folder: Path, mri_prep: Path, mri_run: Path, ct_prep: Path, ct_run: Path, size: DemoSize,
             seed: int) -> dict[str, Any]:
    """Retrieval and zero-shot on the test patients of both datasets; returns every metrics dict."""
    from radlens.evaluate.retrieval import evaluate_retrieval
    from radlens.evaluate.zeroshot import zeroshot

    # The demo writes its own sub-folders; overwrite lets a rerun write into ones made before output
    # folders were marked (only radlens' files are replaced, nothing is deleted).
    results: dict[str, Any] = {
        "mri_retrieval": evaluate_retrieval(mri_run, str(mri_prep), str(folder / "mri-retrieval"), split="test",
                                            trace=True, trace_k=4, trace_queries=4, seed=seed, overwrite=True),
        "ct_retrieval": evaluate_retrieval(ct_run, str(ct_prep), str(folder / "ct-retrieval"), split="test",
                                           text_column="report_findings", seed=seed, overwrite=True),
    }
    zeroshot(str(mri_run / "best"), str(mri_prep), str(folder / "mri-contrast"), split="test", overwrite=True,
             prompts="mri_contrast_captions", label_column="contrast", n_bootstrap=size.n_bootstrap, seed=seed)
    zeroshot(str(ct_run / "best"), str(ct_prep), str(folder / "ct-zeroshot"), split="test", prompts="ctrate_reports",
             findings=present_findings(ct_prep, ("test", "validation")), n_bootstrap=size.n_bootstrap, seed=seed,
             overwrite=True)
    for name in ("mri-contrast", "ct-zeroshot"):
        results[name] = json.loads((folder / name / "metrics.json").read_text())
    return results


def _flat(metrics: dict[str, Any]) -> dict[str, Any]:
    """The numeric top-level entries of a metrics dict, rounded for a table."""
    return {k: round(v, 3) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _with_ci(value: float, ci: dict[str, Any] | None) -> str:
    if ci and ci.get("low") is not None:
        return f"{value:.3f} (95% CI {ci['low']:.2f}-{ci['high']:.2f})"
    return f"{value:.3f}"


def headline_numbers(results: dict[str, Any]) -> dict[str, str]:
    """The numbers printed at the end and shown on top of the report, each next to its chance level."""
    mri, ct, zs, contrast = (results[k] for k in ("mri_retrieval", "ct_retrieval", "ct-zeroshot", "mri-contrast"))
    return {
        "CT zero-shot macro AUROC (chance 0.50)": _with_ci(zs["macro"]["auroc"], zs["macro"]["ci"].get("auroc")),
        f"MRI zero-shot contrast balanced accuracy (chance {contrast['chance']['balanced_accuracy']:.2f})":
            _with_ci(contrast["balanced_accuracy"], contrast["ci"].get("balanced_accuracy")),
        f"MRI label-level R@1 image->caption (chance {mri['chance_i2t_label_R@1']:.3f})": f"{mri['i2t_label_R@1']:.3f}",
        f"MRI TE-bin accuracy by retrieval (chance {mri['chance_i2t_TE_bin_acc']:.3f})": f"{mri['i2t_TE_bin_acc']:.3f}",
        f"CT report->volume R@5 (chance {ct['chance_t2i_R@5']:.3f})": f"{ct['t2i_R@5']:.3f}",
    }


def report_sections(out: Path, mri_raw: Path, ct_raw: Path, mri_run: Path, ct_run: Path,
                    results: dict[str, Any]) -> list[Section]:
    """Dataset cards, phantom previews, training curves, zero-shot and retrieval results."""
    import pandas as pd

    from radlens.report.curves import plot_training_curves

    figures, res = out / "figures", out / "results"
    cards = [(p.name, _card_table(json.loads((p / "dataset.json").read_text())))
             for p in sorted((out / "prepared").iterdir())]
    curves = []
    for name, run in (("MRI CLIP", mri_run), ("CT CLIP", ct_run)):
        csv = _metrics_csv(run)
        if csv is not None:
            curves.append((name, plot_training_curves(csv, figures / f"{run.name}-curves.png",
                                                      keys=["train/loss", "val/loss", "val/i2t_label_R@1",
                                                            "val/t2i_R@5", "val/zeroshot_bacc", "val/zeroshot_auroc"])))
    zs = results["ct-zeroshot"]
    per_finding = pd.DataFrame([{"finding": f, "AUROC": v["auroc"], "CI low": v["ci"]["auroc"]["low"],
                                 "CI high": v["ci"]["auroc"]["high"], "AUPRC": v["auprc"], "F1": v["f1"],
                                 "threshold (validation)": v["threshold"], "positives": v["n_positive"]}
                                for f, v in zs["per_finding"].items()])
    contrast = results["mri-contrast"]
    per_class = pd.DataFrame([{"contrast": c, "recall": v["recall"], "AUROC": v["auroc"], "series": v["n"]}
                              for c, v in contrast["per_class"].items()])
    return [
        Section("Datasets", tables=cards),
        Section("Phantoms", figures=[("MRI phantom contrasts, lesions outlined", mri_raw / "preview.png"),
                                     ("CT phantom findings with their masks", ct_raw / "preview.png")]),
        Section("Training curves", figures=curves),
        Section("CT zero-shot findings (test patients)", text=f"Prompts: {zs['prompts']}.",
                tables=[("per finding, 95% CI by bootstrap over patients", per_finding)],
                figures=[("ROC", res / "ct-zeroshot" / "roc.png"), ("PR", res / "ct-zeroshot" / "pr.png")]),
        Section("MRI zero-shot contrast class (test subjects)", text="Prompts: metadata captions with only the "
                "description or the typical sequence parameters of each contrast filled in.",
                tables=[("overall", _flat(contrast)), ("per class", per_class)],
                figures=[("confusion (rows: true class)", res / "mri-contrast" / "confusion.png")]),
        Section("Retrieval (test patients)", tables=[("MRI slice <-> caption", _flat(results["mri_retrieval"])),
                                                     ("CT volume <-> report", _flat(results["ct_retrieval"]))],
                figures=[("MRI: a caption, then the slices ranked highest for it",
                          res / "mri-retrieval" / "trace_t2i.png"),
                         ("MRI: a series, then the series whose embeddings are closest",
                          res / "mri-retrieval" / "trace_v2v.png")]),
    ]

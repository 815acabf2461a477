"""The MRGen chain on the MRI phantom, shared by ``radlens demo`` and ``benchmarks/mrgen_proof.py``.

Source = T1-weighted slices with the phantom's tissue label maps (background, CSF, grey matter, white
matter, lesion); target = T2-weighted slices, whose masks are used only to score. The chain:

1. the phantom (one T1w and one T2w spin-echo series per subject) prepared into 2D axial slices, split by patient;
2. ``train vae`` on every slice, ``train ldm`` (text-conditioned), ``train controlnet`` (T1w slices with
   their masks, T2w slices with empty masks: MRGen's unpaired recipe);
3. ``train seg`` on the T1w slices (strong intensity randomisation): the filter's segmenter, and arm (a);
4. ``synth``: for every T1w mask of the training and validation patients, candidates of a T2w image,
   kept by the segmentation-agreement filter;
5. ``train seg`` on the synthetic T2w images only, and ``evaluate seg`` of every arm on the *real* T2w
   series of the held-out test patients (their true masks; 3D Dice per series, patient-bootstrap CIs).

With ``arms`` (the benchmark) also: (a') source-only without intensity randomisation, (b) synthetic
without the filter (the first candidates), (c) real labelled T2w (the ceiling); and with ``clip_steps``
a tiny metadata-CLIP whose zero-shot contrast class of the synthetic images is the contrast check
(``evaluate synth``, which also gives FID in that CLIP's image features).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radlens.errors import InputError
from radlens.report.html import Section

SOURCE, TARGET = "T1w", "T2w"
SEQUENCES = ("T1_SE", "T2_FSE")
ARMS = {
    "source": "(a) real T1w (source-only)",
    "source_plain": "(a') real T1w, no intensity randomisation",
    "filtered": "synthetic T2w, filtered",
    "unfiltered": "(b) synthetic T2w, unfiltered",
    "ceiling": "(c) real T2w (ceiling)",
}


@dataclass(frozen=True)
class MRGenSize:
    """How big each step of the chain is (steps per training stage, with a per-stage time cap)."""

    subjects: int
    slice_shape: tuple[int, int]
    every: int  # keep every k-th slice
    split: tuple[float, float, float]
    vae_steps: int
    ldm_steps: int
    controlnet_steps: int
    seg_steps: int
    stage_seconds: int  # wall-clock cap of each training stage
    candidates: int
    keep: int
    # (per-label, mean) IoU thresholds of the agreement filter. MRGen's (0.7, 0.8) suit SAM2 on 512^2 organs; the
    # CPU-sized segmenter never finds CSF on 32^2 slices and its best candidate per mask has a median mean IoU of
    # ~0.2 (240 candidates of 24 training masks of a 14-subject calibration chain, measured once before the benchmark
    # runs; no test data involved), so the benchmark filters on the mean only, at 0.2.
    filter: tuple[float, float]
    sampler_steps: int
    batch_size: int
    clip_steps: int  # 0: no contrast check
    arms: bool
    n_bootstrap: int


QUICK = MRGenSize(subjects=4, slice_shape=(32, 32), every=2, split=(0.5, 0.25, 0.25), vae_steps=15, ldm_steps=15,
                  controlnet_steps=15, seg_steps=15, stage_seconds=20, candidates=3, keep=1, filter=(0.0, 0.0), sampler_steps=4, batch_size=24,
                  clip_steps=0, arms=False, n_bootstrap=100)
DEMO = MRGenSize(subjects=6, slice_shape=(32, 32), every=2, split=(0.5, 0.17, 0.33), vae_steps=60, ldm_steps=80,
                 controlnet_steps=80, seg_steps=60, stage_seconds=60, candidates=4, keep=2, filter=(0.0, 0.3), sampler_steps=8, batch_size=24,
                 clip_steps=0, arms=False, n_bootstrap=200)
BENCHMARK = MRGenSize(subjects=20, slice_shape=(32, 32), every=2, split=(0.5, 0.14, 0.36), vae_steps=300, ldm_steps=500,
                      controlnet_steps=500, seg_steps=300, stage_seconds=240, candidates=10, keep=2, filter=(0.0, 0.2), sampler_steps=20,
                      batch_size=40, clip_steps=200, arms=True, n_bootstrap=1000)


def _say(text: str) -> None:
    print(f"[radlens mrgen] {text}", flush=True)


def _trainer(steps: int, seconds: int) -> Any:
    from radlens.train.config import TrainerConfig

    budget = time.strftime("%H:%M:%S", time.gmtime(seconds))
    return TrainerConfig(max_steps=steps, max_time=f"00:{budget}", accelerator="cpu", devices=1, val_every_n_steps=steps,
                         checkpoint_every_n_steps=steps, checkpoint_minutes=0, progress_bar=False, log_every_n_steps=10)


def _optim(lr: float) -> Any:
    from radlens.train.config import OptimConfig

    return OptimConfig(lr=lr, weight_decay=0.0, warmup_steps=10)


def phantom(out: Path, size: MRGenSize, seed: int) -> Path:
    """The raw phantom: one T1w and one T2w 2D spin-echo series per subject, with tissue label maps."""
    from radlens.phantoms.mri import MRIPhantomConfig, generate_mri_phantom

    if not (out / "truth.csv").is_file():
        generate_mri_phantom(out, MRIPhantomConfig(subjects=size.subjects, seed=seed, series_per_subject=2, resolution=4,
                                                   lesion_probability=0.5, sequences=SEQUENCES))
    return out


def prepare_slices(raw: Path, out: Path, size: MRGenSize, seed: int) -> Path:
    """Axial slices of ``slice_shape`` (every ``every``-th, between 30% and 85% of the way up the head, where the
    brain fills the slice) with their masks, split by patient."""
    from radlens.prepare.pipeline import default_config, prepare_dataset
    from radlens.prepare.slicing import SliceConfig
    from radlens.prepare.splits import SplitConfig

    if (out / "dataset.json").is_file():
        return out
    cfg = dataclasses.replace(default_config("bids"), dims=2, split=SplitConfig(ratios=size.split, seed=seed, stratify=False),
                              slicing=SliceConfig(plane="axial", slice_shape=size.slice_shape, min_foreground=0.2, every=size.every,
                                                  position_window=(0.3, 0.85)))
    return prepare_dataset("bids", raw, out, cfg).path


def _best(run: Path) -> Path:
    return run / "best"


def train_generator(prepared: Path, runs: Path, size: MRGenSize, seed: int) -> Path:
    """VAE -> text-conditioned LDM -> mask ControlNet (T1w masked, T2w empty); the ControlNet run folder."""
    from radlens.train.controlnet import train_controlnet
    from radlens.train.generative_config import GenerationDataConfig
    from radlens.train.ldm import train_ldm
    from radlens.train.vae import train_vae

    data = GenerationDataConfig(batch_size=16)
    vae, ldm, cn = runs / "vae", runs / "ldm", runs / "controlnet"
    if not _best(vae).is_dir():
        _say(f"train vae ({size.vae_steps} steps)")
        train_vae(str(prepared), str(vae), data=data, optim=_optim(2e-3), trainer=_trainer(size.vae_steps, size.stage_seconds),
                  scale_items=256, n_bootstrap=100, seed=seed)
    if not _best(ldm).is_dir():
        _say(f"train ldm ({size.ldm_steps} steps)")
        train_ldm(str(prepared), str(ldm), vae=str(_best(vae)), data=data, optim=_optim(1e-3),
                  trainer=_trainer(size.ldm_steps, size.stage_seconds), seed=seed)
    if not _best(cn).is_dir():
        _say(f"train controlnet ({size.controlnet_steps} steps): {SOURCE} with masks, {TARGET} with empty masks")
        train_controlnet(str(prepared), str(cn), ldm=str(_best(ldm)), source=[SOURCE], target=[TARGET], data=data,
                         optim=_optim(1e-3), trainer=_trainer(size.controlnet_steps, size.stage_seconds), seed=seed)
    return cn


def train_segmenter(data: Path, run: Path, size: MRGenSize, seed: int, contrasts: list[str] | None = None,
                    intensity: bool = True) -> Path:
    """``train seg`` (seg-unet-tiny) on ``data`` (its ``contrasts``); the run folder."""
    from radlens.data.intensity_augment import IntensityAugmentConfig
    from radlens.train.seg import SEG_OPTIM, SegDataConfig, train_seg

    if not _best(run).is_dir():
        cfg = SegDataConfig(batch_size=min(16, _train_items(data, contrasts)), contrasts=contrasts,
                            intensity=IntensityAugmentConfig(enabled=intensity))
        train_seg(str(data), str(run), data=cfg, optim=SEG_OPTIM, trainer=_trainer(size.seg_steps, size.stage_seconds), seed=seed)
    return run


def _train_items(data: Path, contrasts: list[str] | None) -> int:
    """Training slices of ``data`` (of ``contrasts``): a batch may not be larger."""
    from radlens.io.prepared import PreparedDataset

    ds = PreparedDataset(data)
    assert ds.slices is not None
    series = ds.series if not contrasts else ds.series[ds.series["contrast"].isin(contrasts)]
    return max(1, int(((ds.slices["split"] == "train") & ds.slices["series_id"].isin(series["series_id"])).sum()))


def evaluate_arm(run: Path, prepared: Path, out: Path, size: MRGenSize, seed: int) -> dict[str, Any]:
    """Dice of a segmenter on the real T2w series of the test patients (``evaluate seg``)."""
    from radlens.evaluate.seg import evaluate_seg

    if not (out / "metrics.json").is_file():
        evaluate_seg(str(_best(run)), str(prepared), str(out), split="test", contrasts=[TARGET], n_bootstrap=size.n_bootstrap,
                     seed=seed, device="cpu")
    return json.loads((out / "metrics.json").read_text())


def synthesize_arm(generator: Path, prepared: Path, out: Path, size: MRGenSize, seed: int, segmenter: Path | None) -> Path:
    """``synth`` from the T1w masks of the training and validation patients (filtered with ``segmenter``, else the first ones)."""
    from radlens.synth.command import synthesize
    from radlens.synth.filter import FilterConfig
    from radlens.synth.generate import SamplerConfig

    if not (out / "dataset.json").is_file():
        sampler = SamplerConfig(steps=size.sampler_steps, batch_size=size.batch_size)
        if segmenter is not None:
            _say(f"synth: {size.candidates} {TARGET} candidates per {SOURCE} mask, best {size.keep} by segmentation agreement")
            synthesize(_best(generator), prepared, out, contrast=TARGET, segmenter=_best(segmenter), candidates=size.candidates,
                       keep=size.keep, filter=FilterConfig(label_threshold=size.filter[0], mean_threshold=size.filter[1]),
                       sampler=sampler, seed=seed, device="cpu")
        else:
            _say(f"synth: {size.keep} {TARGET} images per {SOURCE} mask, unfiltered")
            synthesize(_best(generator), prepared, out, contrast=TARGET, select="first", keep=size.keep, sampler=sampler,
                       seed=seed, device="cpu")
    return out


def contrast_check(prepared: Path, synth: Path, runs: Path, out: Path, size: MRGenSize, seed: int) -> dict[str, Any]:
    """A tiny metadata-CLIP (TE/TR/TI soft targets) on the real slices, then ``evaluate synth`` with it: the zero-shot
    contrast of the synthetic images vs the T2w they were asked for, and FID in its image features."""
    from radlens.data.augment import AugmentConfig
    from radlens.data.datasets import ClipDataConfig
    from radlens.evaluate.synth import evaluate_synth
    from radlens.models.registry import get_config
    from radlens.train.clip import train_clip
    from radlens.train.config import LossConfig

    run = runs / "clip"
    if not _best(run).is_dir():
        spec = get_config("tiny-lit2d")
        spec["image"] = {**spec["image"], "input_shape": list(size.slice_shape)}
        model = runs / "clip-model.json"
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_text(json.dumps(spec))
        _say(f"train a tiny metadata-CLIP for the contrast check ({size.clip_steps} steps)")
        train_clip(str(prepared), str(run), data=ClipDataConfig(batch_size=32, augment=AugmentConfig(enabled=False)),
                   model=str(model), optim=_optim(1e-3), trainer=_trainer(size.clip_steps, size.stage_seconds),
                   loss=LossConfig(mode="soft", alpha=0.8, sigma=0.5), seed=seed)
    if not (out / "metrics.json").is_file():
        evaluate_synth(str(synth), str(prepared), str(out), encoder=str(_best(run)), contrast_clip=str(_best(run)),
                       real_split="test", n_bootstrap=size.n_bootstrap, seed=seed, device="cpu")
    return json.loads((out / "metrics.json").read_text())


def sample_grid(synth: Path, prepared: Path, path: Path, n: int = 4) -> Path:
    """PNG rows of mask | generated T2w | real T1w (the mask's own slice) | real T2w (same subject, nearest position),
    for ``n`` of the rank-0 synthetic slices with the most labelled tissue."""
    import numpy as np

    from radlens.common.montage import save_montage
    from radlens.io.prepared import PreparedDataset

    gen, real = PreparedDataset(synth), PreparedDataset(prepared)
    assert gen.slices is not None and real.slices is not None
    rank = gen.slices["series_id"].map(gen.series.set_index("series_id")["synth_rank"])
    pool = gen.slices[rank == 0]
    area = pool.index.map(lambda i: int(np.count_nonzero(gen.slice_mask(i))))
    pool = pool.assign(area=area).sort_values(["area", "slice_id"], ascending=[False, True]).head(3 * n)
    chosen = pool.sort_values("slice_id").iloc[np.linspace(0, len(pool) - 1, min(n, len(pool))).astype(int)]
    contrast = real.series.set_index("series_id")["contrast"]
    targets = real.slices[real.slices["series_id"].map(contrast) == TARGET]
    images, titles, ranges = [], [], []
    top = max(real.labels)
    for i, row in chosen.iterrows():
        source = real.slices.set_index("slice_id").loc[row["source_slice_id"]]
        same = targets[targets["patient_id"] == row["patient_id"]]
        images += [np.asarray(gen.slice_mask(i)), np.asarray(gen.slice(i)), np.asarray(real.slice(str(row["source_slice_id"])))]
        titles += [f"mask {row['source_slice_id']}", f"generated {TARGET} (seed {row['seed']})", f"real {SOURCE} (the mask's slice)"]
        ranges += [(0.0, float(top)), (0.0, 1.0), (0.0, 1.0)]
        if len(same):
            near = same.iloc[int(np.argmin(np.abs(same["position"].to_numpy() - float(source["position"]))))]
            images.append(np.asarray(real.slice(str(near["slice_id"]))))
            titles.append(f"real {TARGET} (same subject, nearest slice)")
        else:
            images.append(np.zeros_like(images[-1]))
            titles.append(f"no real {TARGET} of this subject")
        ranges.append((0.0, 1.0))
    return save_montage(images, titles, path, columns=4, vrange=ranges)


def _dice(metrics: dict[str, Any]) -> dict[str, Any]:
    return {"mean_dice": metrics["mean_dice"], "ci": metrics["mean_dice_ci"], "n_cases": metrics["n_cases"],
            "per_label": {name: entry["dice"] for name, entry in metrics["per_label"].items()},
            "cases_present": {name: entry["cases_present"] for name, entry in metrics["per_label"].items()}}


def _open_source(source: str | Path | None, out: Path, size: MRGenSize, seed: int) -> Path:
    """The prepared dataset: ``source`` itself when it is one, else ``source`` (or a new phantom) prepared."""
    if source is not None and (Path(source) / "dataset.json").is_file():
        return Path(source)
    raw = Path(source) if source is not None else phantom(out / "raw", size, seed)
    if not raw.is_dir():
        raise InputError(raw, "neither a prepared dataset nor a raw BIDS folder (e.g. `radlens phantom mri` output)")
    return prepare_slices(raw, out / "prepared", size, seed)


def run_chain(source: str | Path | None, out: str | Path, quick: bool = False, seed: int = 0,
              size: MRGenSize | None = None) -> dict[str, Any]:
    """Run the MRGen chain (module docstring) into ``out``; returns the headline numbers and the paths.

    ``source``: a prepared 2D dataset with T1w and T2w series and tissue masks, a raw BIDS folder of such
    series (``radlens phantom mri`` output), or None for a new phantom. ``size``: QUICK, DEMO (default) or
    BENCHMARK (or one's own); ``quick`` picks QUICK. Stages whose output exists in ``out`` are reused. The
    result (also ``out/mrgen.json``): per arm the mean Dice on the real T2w test series with its CI and per
    label; the synthesis counts; the contrast check (when run); the sample grid PNG; seconds per stage.
    """
    out = Path(out)
    size = size or (QUICK if quick else DEMO)
    seconds: dict[str, float] = {}
    start = clock = time.time()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.time()
        seconds[name] = round(now - clock, 1)
        clock = now

    prepared = _open_source(source, out, size, seed)
    lap("phantom + prepare")
    runs = out / "runs"
    generator = train_generator(prepared, runs, size, seed)
    lap("train vae + ldm + controlnet")
    _say(f"train seg on real {SOURCE} (the filter's segmenter; arm a)")
    source_seg = train_segmenter(prepared, runs / "seg-source", size, seed, [SOURCE])
    lap("train seg (source)")
    synth = synthesize_arm(generator, prepared, out / "synth" / "filtered", size, seed, source_seg)
    lap("synth (filtered)")
    _say(f"train seg on the synthetic {TARGET} images only")
    synth_seg = train_segmenter(synth, runs / "seg-synth-filtered", size, seed)
    lap("train seg (synthetic)")
    segs = {"source": source_seg, "filtered": synth_seg}
    if size.arms:
        unfiltered = synthesize_arm(generator, prepared, out / "synth" / "unfiltered", size, seed, None)
        lap("synth (unfiltered)")
        segs["unfiltered"] = train_segmenter(unfiltered, runs / "seg-synth-unfiltered", size, seed)
        segs["source_plain"] = train_segmenter(prepared, runs / "seg-source-plain", size, seed, [SOURCE], intensity=False)
        segs["ceiling"] = train_segmenter(prepared, runs / "seg-target", size, seed, [TARGET])
        lap("train seg (other arms)")
    _say(f"evaluate seg: every arm on the real {TARGET} series of the test patients")
    dice = {ARMS[k]: _dice(evaluate_arm(run, prepared, out / "eval" / k, size, seed)) for k, run in segs.items()}
    differences = paired_differences(out / "eval", size.n_bootstrap, seed)
    lap("evaluate seg")
    check = contrast_check(prepared, synth, runs, out / "eval" / "synth", size, seed) if size.clip_steps else None
    if check is not None:
        lap("contrast check (train clip + evaluate synth)")
    grid = sample_grid(synth, prepared, out / "sample_grid.png")
    card = json.loads((synth / "dataset.json").read_text())
    seconds["total"] = round(time.time() - start, 1)
    result = {
        "dice": dice, "differences": differences, "synth": card["synth"]["counts"], "contrast_check": _check_summary(check),
        "fid": None if check is None else {k: check["fid"][k] for k in ("fid", "n_generated", "n_real", "feature_dim")}
        | {"real_halves": (check["fid"].get("real_halves") or {}).get("fid"), "encoder": check["fid"]["encoder"]["name"]},
        "grid": str(grid), "paths": {"prepared": str(prepared), "generator": str(_best(generator)), "synth": str(synth),
                                     "runs": str(runs)},
        "test_patients": int(json.loads((out / "eval" / "filtered" / "metrics.json").read_text())["bootstrap"]["n_patients"]),
        "seconds": seconds, "size": dataclasses.asdict(size), "seed": seed,
    }
    (out / "mrgen.json").write_text(json.dumps(result, indent=2, default=str))
    return result


def paired_differences(evals: Path, n_bootstrap: int, seed: int) -> dict[str, Any]:
    """Mean per-case difference in mean Dice between arms evaluated on the same test series, with a patient-bootstrap
    CI (the arms' own CIs overlap far more than their paired difference varies)."""
    import pandas as pd

    from radlens.metrics.generation import bootstrap_mean

    pairs = [("filtered", "source"), ("filtered", "unfiltered"), ("ceiling", "filtered")]
    out: dict[str, Any] = {}
    for a, b in pairs:
        if (evals / a / "cases.csv").is_file() and (evals / b / "cases.csv").is_file():
            left = pd.read_csv(evals / a / "cases.csv").set_index("series_id")
            right = pd.read_csv(evals / b / "cases.csv").set_index("series_id").loc[left.index]
            diff = (left["mean_dice"] - right["mean_dice"]).to_numpy()
            out[f"{ARMS[a]} - {ARMS[b]}"] = bootstrap_mean(diff, left["patient_id"].to_numpy(), n_bootstrap, seed)
    return out


def _check_summary(check: dict[str, Any] | None) -> dict[str, Any] | None:
    if check is None or not check.get("contrast_check"):
        return None
    c = check["contrast_check"]
    return {"accuracy": c["accuracy"]["mean"], "ci": c["accuracy"]["ci"], "n": c["accuracy"]["n"], "classes": c["classes"],
            "chance": c["chance"], "real_reference": c["real_reference"]["accuracy"]["mean"], "confusion": c["confusion"]}


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def mrgen_table(result: dict[str, Any]) -> list[dict[str, str]]:
    """One row per arm: mean Dice (95% CI) on the real T2w test series and Dice per tissue label."""
    rows = []
    for arm, entry in result["dice"].items():
        ci = entry["ci"]
        rows.append({"segmenter trained on": arm,
                     "mean Dice (95% CI)": f"{_num(entry['mean_dice'])} ({_num(ci['low'], 2)}-{_num(ci['high'], 2)})",
                     **{name: _num(value) for name, value in entry["per_label"].items()}})
    return rows


def mrgen_section(result: dict[str, Any]) -> Section:
    """The report section: the Dice table, the contrast check and the sample grid."""
    import pandas as pd

    synth, check = result["synth"], result["contrast_check"]
    text = (f"Segmenters evaluated on the real {TARGET} series of {result['test_patients']} held-out phantom subjects "
            f"(3D Dice per series, patient-bootstrap CIs). Synthesis: {synth['kept']} {TARGET} images from {synth['masks']} "
            f"{SOURCE} masks ({synth['masks_by_level']}).")
    if check is not None:
        text += (f" Contrast check: a metadata-CLIP calls {_num(check['accuracy'])} of the synthetic images {TARGET} "
                 f"(chance {_num(check['chance'])}; on real test images it is right {_num(check['real_reference'])}).")
    grid = Path(result["grid"])
    return Section(f"MRGen: synthetic {TARGET} training data from {SOURCE} masks (MRI phantom)", text=text,
                   tables=[(f"Dice on real {TARGET} (test patients)", pd.DataFrame(mrgen_table(result)))],
                   figures=[("mask | generated | real (the mask's slice) | real target contrast", grid)] if grid.is_file() else [])


def clean(out: Path) -> None:
    """Remove a previous chain's output folder (the benchmark measures a fresh run)."""
    shutil.rmtree(out, ignore_errors=True)

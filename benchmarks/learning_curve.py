"""Learning curves of the demo's CLIP recipes: test metrics against CPU budget, training-set size and checkpoint rule.

One training run per (modality, training patients, seed) with the demo's recipe (``radlens.demo.CT`` /
``radlens.demo.MRI``), validated every ``--val_every`` steps with every validated checkpoint kept. The
validation pass logs retrieval (mean rank, loss) *and* the zero-shot metric (``--val_zeroshot``), so that
afterwards, for every budget ``b`` (wall time since the run started, validation included: what
``--trainer.max_time b`` would have allowed), three checkpoint rules can be compared on the same run:

- ``last``: the last checkpoint validated within ``b``;
- ``recipe``: the best by the demo recipe's monitor (CT: ``val/i2t_mean_rank``, MRI: ``val/loss``);
- ``zeroshot``: the best by ``val/zeroshot_auroc`` (CT) or ``val/zeroshot_bacc`` (MRI).

Each chosen checkpoint is scored on the test split of the full prepared dataset with the public
evaluation functions (patient-bootstrap 95% CIs): CT zero-shot macro AUROC over the 12 phantom findings
(``ctrate_reports``) and report -> volume R@5; MRI zero-shot contrast balanced accuracy
(``mri_contrast_captions``) and label-level R@1 slice -> caption.

Training-set size varies by keeping the first N training patients (a fixed shuffle) of one prepared
phantom; validation and test splits stay whole, so every arm is scored on the same held-out patients.

    OMP_NUM_THREADS=1 python benchmarks/learning_curve.py ct PREPARED/ct WORK --train_patients 150 \
        --minutes 10 --budgets 1,3,10 --seed 0

Writes ``WORK/curve-<modality>-<N>-s<seed>.json`` (every validation step and every scored point); the
tables in ``benchmarks/RESULTS-curve.md`` are made from these files by ``--table WORK``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

RULES = ("last", "recipe", "zeroshot")
SETUP = {
    "ct": {"prompts": "ctrate_reports", "label_column": None, "zs_metric": "val/zeroshot_auroc",
           "text_column": "report_findings"},
    "mri": {"prompts": "mri_contrast_captions", "label_column": "contrast", "zs_metric": "val/zeroshot_bacc",
            "text_column": "text"},
}


def subset(prepared: Path, out: Path, n_train: int) -> Path:
    """A prepared dataset holding the first ``n_train`` training patients (fixed shuffle) and every
    validation/test patient; arrays and masks are symlinked, nothing is copied."""
    if (out / "dataset.json").is_file():
        return out
    out.mkdir(parents=True)
    series = pd.read_parquet(prepared / "series.parquet")
    train = series.loc[series["split"] == "train", "patient_id"].drop_duplicates().to_numpy()
    if n_train > len(train):
        raise SystemExit(f"{prepared} has {len(train)} training patients, fewer than {n_train}")
    keep = set(np.random.default_rng(0).permutation(train)[:n_train]) | set(series.loc[series["split"] != "train", "patient_id"])
    for name in ("series.parquet", "slices.parquet"):
        if (prepared / name).is_file():
            table = pd.read_parquet(prepared / name)
            ids = table["patient_id"] if "patient_id" in table.columns else table["series_id"].map(
                series.set_index("series_id")["patient_id"])
            table[ids.isin(keep).to_numpy()].to_parquet(out / name, index=False)
    for name in os.listdir(prepared):
        if name not in ("series.parquet", "slices.parquet") and not (out / name).exists():
            os.symlink((prepared / name).resolve(), out / name)
    return out


def train_arm(modality: str, data: Path, run: Path, minutes: float, seed: int, val_every: int, model: str | None,
              augment: bool = False) -> float:
    """Train the demo's recipe for ``minutes``; every validated checkpoint is kept. Returns the start time.

    ``augment``: small affines and intensity changes on the training images, never a left-right flip
    (reports name the side of a finding)."""
    from radlens.data.augment import AugmentConfig
    from radlens.data.datasets import ClipDataConfig
    from radlens.demo import CT, MRI
    from radlens.io.prepared import PreparedDataset
    from radlens.train.clip import train_clip
    from radlens.train.clip_zeroshot import ZeroShotValConfig
    from radlens.train.config import LossConfig, OptimConfig, TrainerConfig

    recipe, setup = (CT if modality == "ct" else MRI), SETUP[modality]
    ds = PreparedDataset(data)
    n_train = int(((ds.slices if ds.dims == 2 else ds.series)["split"] == "train").sum())
    started = time.time()
    train_clip(
        str(data), str(run),
        data=ClipDataConfig(text_column=setup["text_column"], batch_size=min(recipe.batch_size, n_train),
                            augment=AugmentConfig(enabled=augment, flip_prob=0.0)),
        model=model or recipe.model, optim=OptimConfig(lr=recipe.lr, warmup_steps=10),
        trainer=TrainerConfig(max_steps=1_000_000, max_time=time.strftime("00:%H:%M:%S", time.gmtime(minutes * 60)),
                              accelerator="cpu", devices=1, val_every_n_steps=val_every, checkpoint_every_n_steps=val_every,
                              monitor=recipe.monitor, log_every_n_steps=10, progress_bar=False),
        loss=LossConfig(**recipe.loss), val_zeroshot=ZeroShotValConfig(setup["prompts"], setup["label_column"]), seed=seed,
    )
    return started


def validations(run: Path, started: float) -> pd.DataFrame:
    """One row per validated step: the logged validation metrics and the seconds since the start."""
    log = pd.concat(pd.read_csv(f) for f in sorted((run / "logs" / "csv").glob("version_*/metrics.csv")))
    val = log.dropna(subset=["val/loss"]).groupby("step").last()
    # Validation after optimiser step s is logged at step s - 1; its checkpoint is step-<s>.ckpt.
    val.index = val.index + 1
    ckpts = {int(p.stem.split("-")[1]): p for p in (run / "checkpoints").glob("step-*.ckpt")}
    val = val[val.index.isin(ckpts)].copy()
    val["seconds"] = [ckpts[s].stat().st_mtime - started for s in val.index]
    val["checkpoint"] = [str(ckpts[s]) for s in val.index]
    return val


def choose(val: pd.DataFrame, budget_s: float, rule: str, modality: str) -> int | None:
    """The step a rule keeps among the checkpoints validated within the budget."""
    from radlens.demo import CT, MRI

    within = val[val["seconds"] <= budget_s]
    if within.empty:
        return None
    if rule == "last":
        return int(within.index.max())
    monitor = (CT if modality == "ct" else MRI).monitor if rule == "recipe" else SETUP[modality]["zs_metric"]
    larger = "zeroshot" in monitor or "R@" in monitor
    column = within[monitor]
    return int(column.idxmax() if larger else column.idxmin())


def bundle_of(run: Path, checkpoint: str, out: Path) -> Path:
    """The run's bundle format with a checkpoint's weights (what ``best/`` holds when that step is best)."""
    import torch

    from radlens.models.bundle import load_model, save_bundle
    from radlens.train.clip_task import ClipTask

    if (out / "bundle.json").is_file():
        return out
    model = load_model(run / "last", kind="clip")
    # The task loads it as a resumed run would: the frozen text layers a checkpoint leaves out come from ``last/``.
    ClipTask(model).load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
    meta = json.loads((run / "last" / "bundle.json").read_text())
    return save_bundle(model, out, meta["preprocessing"], {"checkpoint": checkpoint})


def score(modality: str, bundle: Path, prepared: Path, out: Path, n_bootstrap: int) -> dict[str, Any]:
    """Test-split metrics of one bundle with their 95% CIs (public evaluation functions)."""
    from radlens.evaluate.retrieval import evaluate_retrieval
    from radlens.evaluate.zeroshot import zeroshot

    setup = SETUP[modality]
    zs, rt = out / "zeroshot", out / "retrieval"
    if not (zs / "metrics.json").is_file():
        zeroshot(str(bundle), str(prepared), str(zs), split="test", prompts=setup["prompts"],
                 label_column=setup["label_column"], n_bootstrap=n_bootstrap, batch_size=32, device="cpu",
                 overwrite=True)
    if not (rt / "metrics.json").is_file():
        evaluate_retrieval(str(bundle), str(prepared), str(rt), split="test", text_column=setup["text_column"],
                           device="cpu", overwrite=True)
    z = json.loads((zs / "metrics.json").read_text())
    r = json.loads((rt / "metrics.json").read_text())
    if modality == "ct":
        ci = z["macro"]["ci"]["auroc"]
        return {"zeroshot": z["macro"]["auroc"], "zeroshot_ci": [ci["low"], ci["high"]],
                "retrieval": r["t2i_R@5"], "retrieval_chance": r["chance_t2i_R@5"]}
    ci = z["ci"]["balanced_accuracy"]
    return {"zeroshot": z["balanced_accuracy"], "zeroshot_ci": [ci["low"], ci["high"]],
            "retrieval": r["i2t_label_R@1"], "retrieval_chance": r["chance_i2t_label_R@1"]}


def run_arm(args: argparse.Namespace) -> Path:
    work = Path(args.work)
    name = f"{args.modality}-{args.train_patients}-s{args.seed}{'-' + args.tag if args.tag else ''}"
    data = subset(Path(args.prepared), work / f"data-{args.modality}-{args.train_patients}", args.train_patients)
    run = work / f"run-{name}"
    stamp = run / "started.txt"
    if not stamp.is_file():
        shutil.rmtree(run, ignore_errors=True)  # an unfinished run of this script: its own folder
        run.mkdir(parents=True)
        stamp.write_text(str(time.time()))
        train_arm(args.modality, data, run, args.minutes, args.seed, args.val_every, args.model, args.augment)
        (run / "finished.txt").write_text("done")
    started = float(stamp.read_text())
    val = validations(run, started)
    points = []
    for budget in (float(b) for b in args.budgets.split(",")):
        for rule in RULES:
            step = choose(val, budget * 60, rule, args.modality)
            if step is None:
                continue
            target = work / f"eval-{name}" / f"step-{step:07d}"
            bundle = bundle_of(run, val.loc[step, "checkpoint"], target / "bundle")
            points.append({"budget_min": budget, "rule": rule, "step": step,
                           **score(args.modality, bundle, Path(args.prepared), target, args.n_bootstrap)})
            print(json.dumps(points[-1]), flush=True)
    result = {"modality": args.modality, "train_patients": args.train_patients, "seed": args.seed, "tag": args.tag,
              "model": args.model or "the demo recipe's", "augment": args.augment,
              "minutes": args.minutes, "threads": os.environ.get("OMP_NUM_THREADS"),
              "validations": val.drop(columns=["checkpoint"]).reset_index().to_dict(orient="records"), "points": points}
    path = work / f"curve-{name}.json"
    path.write_text(json.dumps(result, indent=1, default=float))
    return path


def table(work: Path) -> str:
    """Markdown tables of every ``curve-*.json`` in ``work``."""
    lines = []
    for path in sorted(work.glob("curve-*.json")):
        res = json.loads(path.read_text())
        what = ("zero-shot macro AUROC (12 findings)", "report->volume R@5") if res["modality"] == "ct" else (
            "zero-shot contrast balanced accuracy", "label-level R@1")
        variant = f", {res['tag']} ({res['model']})" if res.get("tag") else ""
        lines += [f"\n**{res['modality'].upper()}, {res['train_patients']} training patients, seed {res['seed']}{variant}**\n",
                  f"| budget | rule | step | {what[0]} (95% CI) | {what[1]} (chance) |", "| ---: | --- | ---: | --- | --- |"]
        for p in res["points"]:
            lo, hi = p["zeroshot_ci"]
            lines.append(f"| {p['budget_min']:g} min | {p['rule']} | {p['step']} | {p['zeroshot']:.3f} ({lo:.2f}-{hi:.2f}) | "
                         f"{p['retrieval']:.3f} ({p['retrieval_chance']:.3f}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("modality", nargs="?", choices=["ct", "mri"])
    parser.add_argument("prepared", nargs="?", help="the full prepared phantom dataset")
    parser.add_argument("work", nargs="?", help="working folder (runs, subsets, evaluations, curve files)")
    parser.add_argument("--train_patients", type=int, default=150)
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of the one run")
    parser.add_argument("--budgets", default="1,3,10", help="budgets (minutes) at which checkpoints are chosen")
    parser.add_argument("--val_every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", help="another model than the recipe's (registry name or JSON config)")
    parser.add_argument("--augment", action="store_true", help="findings-safe augmentation (affine, intensity; no flips)")
    parser.add_argument("--tag", default="", help="names the variant in the file names and the table")
    parser.add_argument("--n_bootstrap", type=int, default=500)
    parser.add_argument("--table", help="print the markdown tables of the curve files in this folder and exit")
    args = parser.parse_args()
    if args.table:
        print(table(Path(args.table)))
        return
    if not (args.modality and args.prepared and args.work):
        parser.error("modality, prepared and work are required")
    print(run_arm(args))


if __name__ == "__main__":
    main()

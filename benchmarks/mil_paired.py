"""Paired comparison of MIL runs on the same test patients: macro AUROC differences with patient-bootstrap CIs.

Separate 95% CIs of two encoders' AUROCs overlap long before their difference is uncertain, because both are
scored on the same patients. This resamples the test patients once per draw and scores every run on the same
draw, giving a CI for each difference (``radlens train mil`` fold-ensemble predictions, ``predictions.csv``).

    python benchmarks/mil_paired.py random=/tmp/lecl96/mil-large/random moco=/tmp/lecl96/mil-large/moco \\
        lecl=/tmp/lecl96/mil-large/lecl [--n_bootstrap 2000]

Prints a markdown table: each run's macro AUROC and every pairwise difference (later minus earlier) with its CI.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from radlens.metrics.findings import mean_auroc, patient_resamples


def test_scores(run: Path) -> tuple[pd.DataFrame, list[str]]:
    """The fold-ensemble test rows of a MIL run, indexed by bag file name, and its label columns."""
    table = pd.read_csv(run / "predictions.csv")
    table = table[(table["split"] == "test") & (table["fold"].astype(str) == "ensemble")]
    labels = [c.removeprefix("score:") for c in table.columns if c.startswith("score:")]
    return table.set_index(table["case_id"].map(lambda p: Path(p).name)).sort_index(), labels


def paired_table(runs: dict[str, Path], n_bootstrap: int = 2000, seed: int = 0) -> list[str]:
    """Markdown lines: each run's test macro AUROC with its CI, then every pairwise difference (later minus
    earlier) with its paired CI and the share of resamples above zero."""
    tables = {name: test_scores(Path(folder)) for name, folder in runs.items()}
    first, labels = next(iter(tables.values()))
    for name, (table, other) in tables.items():
        if other != labels or not table.index.equals(first.index):
            raise SystemExit(f"{name}: not the same test bags and labels as {next(iter(tables))}")
    targets = first[labels].to_numpy(dtype=np.float64)
    scores = {name: table[[f"score:{c}" for c in labels]].to_numpy() for name, (table, _) in tables.items()}
    draws: dict[str, list[float]] = {name: [] for name in scores}
    for idx in patient_resamples(first["patient_id"].to_numpy(), n_bootstrap, seed):
        for name, s in scores.items():
            draws[name].append(mean_auroc(targets[idx], s[idx]))
    values = {name: np.asarray(v) for name, v in draws.items()}
    lines = [f"{len(first)} test bags of {first['patient_id'].nunique()} patients, labels {', '.join(labels)}; "
             f"{n_bootstrap} paired patient resamples", "",
             "| comparison | macro AUROC or difference | 95% CI | share of resamples > 0 |", "| --- | ---: | --- | ---: |"]
    for name, s in scores.items():
        lo, hi = np.percentile(values[name], [2.5, 97.5])
        lines.append(f"| {name} | {mean_auroc(targets, s):.3f} | {lo:.3f}-{hi:.3f} | |")
    for a, b in itertools.combinations(scores, 2):
        diff = values[b] - values[a]
        lo, hi = np.percentile(diff, [2.5, 97.5])
        point = mean_auroc(targets, scores[b]) - mean_auroc(targets, scores[a])
        lines.append(f"| {b} - {a} | {point:+.3f} | {lo:+.3f} to {hi:+.3f} | {float((diff > 0).mean()):.3f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="NAME=MIL_RUN_FOLDER, in the order to compare")
    parser.add_argument("--n_bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    runs = {name: Path(folder) for name, folder in (item.split("=", 1) for item in args.runs)}
    print("\n".join(paired_table(runs, args.n_bootstrap, args.seed)))


if __name__ == "__main__":
    main()

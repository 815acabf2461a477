"""MRGen proof on the MRI phantom: can a segmenter trained only on filtered synthetic T2w images segment real T2w?

The chain is :mod:`radlens.demo_mrgen` (the demo's code) at the BENCHMARK size: the MRI phantom (one
T1-weighted and one T2-weighted spin-echo series per subject, tissue label maps), 2D axial slices split
by patient; VAE -> text-conditioned LDM -> mask ControlNet (T1w with masks, T2w unlabelled); a segmenter
on the T1w masks filters the T2w candidates generated from every T1w mask of the training and validation
subjects; the same segmenter recipe is then trained on (a) real T1w (source-only), (a') real T1w without
intensity randomisation, the filtered synthetic T2w, (b) unfiltered synthetic T2w, (c) real labelled T2w
(the ceiling), and every one is scored on the real T2w series of the held-out test subjects (3D Dice per
series, patient-bootstrap 95% CIs). A tiny metadata-CLIP trained on the real slices gives the contrast
check (its zero-shot contrast class of the synthetic images vs the T2w they were asked for) and FID in
its image features.

    OMP_NUM_THREADS=1 python benchmarks/mrgen_proof.py --out /tmp/mrgen-proof            # ~25 min on 2 cores
    OMP_NUM_THREADS=1 python benchmarks/mrgen_proof.py --out /tmp/mrgen-proof-q --quick   # ~3 min

Starts from scratch unless --resume (then every finished stage in OUT is reused). Writes the results
table to --results (default: benchmarks/RESULTS-mrgen.md for the full size, OUT/RESULTS-mrgen.md for --quick);
OUT/mrgen.json holds every number.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def _present(result: dict[str, Any], label: str) -> str:
    first = result["dice"][next(iter(result["dice"]))]
    return str((first.get("cases_present") or {}).get(label, "n/a"))


def results_markdown(result: dict[str, Any], command: str, wall: float) -> str:
    """The results file: setup, the Dice table, the contrast check, FID, synthesis counts and wall times."""
    from radlens.demo_mrgen import mrgen_table

    size, synth, check, fid = result["size"], result["synth"], result["contrast_check"], result["fid"]
    table = mrgen_table(result)
    lines = [
        "# MRGen proof on the MRI phantom (`benchmarks/mrgen_proof.py`)", "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} with {os.cpu_count()} CPU cores (shared), one torch thread; "
        f"wall time {wall / 60:.1f} min. Command: `{command}`.", "",
        f"Phantom: {size['subjects']} subjects, one T1w and one T2w 2D spin-echo series each, {size['slice_shape'][0]}x"
        f"{size['slice_shape'][1]} axial slices (every k-th, k = {size['every']}; 30-85% up the head), split by patient "
        f"{size['split']}; {result['test_patients']} test subjects. Training steps: VAE {size['vae_steps']}, LDM "
        f"{size['ldm_steps']}, ControlNet {size['controlnet_steps']}, each segmenter {size['seg_steps']} (seg-unet-tiny; "
        f"at most {size['stage_seconds']} s per stage). Synthesis: {size['candidates']} candidates per T1w mask "
        f"(DDIM {size['sampler_steps']} steps, guidance 7), best {size['keep']} kept by the agreement filter (IoU per label "
        f">= {size['filter'][0]}, mean >= {size['filter'][1]}, MRGen's relax-by-0.1-and-keep-1 fallback).", "",
        "## Dice on the real T2w series of the held-out subjects", "",
        "| " + " | ".join(table[0]) + " |", "|" + " --- |" * len(table[0]),
        *("| " + " | ".join(row.values()) + " |" for row in table), "",
        "Paired differences in mean Dice (same test series; mean over cases, patient-bootstrap 95% CI):", "",
        *(f"- {name}: {_fmt(d['mean'])} ({_fmt(d['ci']['low'])} to {_fmt(d['ci']['high'])})" for name, d in result["differences"].items()),
        "",
        "Mean Dice is over the four foreground labels per case; a label absent from both truth and prediction scores 1 "
        f"(`evaluate seg`'s convention): the lesion is present in {_present(result, 'lesion')} of the "
        f"{result['dice'][next(iter(result['dice']))]['n_cases']} test series, so a segmenter that never predicts one "
        "scores 1 on the others. No segmenter finds CSF (thin at 32x32).", "",
        f"Synthesis: {synth['kept']} images kept from {synth['masks']} T1w masks ({synth['skipped_near_empty']} near-empty "
        f"skipped); masks by filter level: {synth['masks_by_level']}.", "",
    ]
    if check is not None:
        lines += ["## Contrast check", "",
                  f"A tiny metadata-CLIP ({size['clip_steps']} steps on the real slices' MR-CLIP captions) classifies the "
                  f"synthetic images among {check['classes']}: **{_fmt(check['accuracy'])}** called T2w (95% CI "
                  f"{_fmt(check['ci']['low'], 2)}-{_fmt(check['ci']['high'], 2)}, n = {check['n']}, chance {_fmt(check['chance'])}); "
                  f"the same classifier is right on {_fmt(check['real_reference'])} of the real test slices. "
                  f"Confusion (asked -> predicted): {check['confusion']}.", ""]
    if fid is not None:
        lines += [f"FID in that CLIP's pooled image features ({fid['feature_dim']}-d): {_fmt(fid['fid'])} between "
                  f"{fid['n_generated']} synthetic and {fid['n_real']} real T2w test slices; two patient-disjoint halves of the "
                  f"real slices give {_fmt(fid['real_halves'])} (the floor at this sample size).", ""]
    lines += ["## Wall time per stage (s)", "", "| stage | seconds |", "| --- | --- |",
              *(f"| {k} | {v} |" for k, v in result["seconds"].items()), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/mrgen-proof"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes (~3 min): checks the script, not the claim")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="reuse the finished stages in OUT instead of starting afresh")
    parser.add_argument("--results", type=Path, default=None, help="markdown file to write the results to")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    from radlens.demo_mrgen import BENCHMARK, QUICK, clean, run_chain

    torch.set_num_threads(1)  # tiny models on 2 shared cores run much faster single-threaded
    size = dataclasses.replace(QUICK, arms=True, clip_steps=20) if args.quick else BENCHMARK
    if not args.resume:
        clean(args.out)
    start = time.time()
    result = run_chain(None, args.out, seed=args.seed, size=size)
    wall = time.time() - start
    command = "OMP_NUM_THREADS=1 python benchmarks/mrgen_proof.py" + (" --quick" if args.quick else "") + f" --seed {args.seed}"
    text = results_markdown(result, command, wall)
    target = args.results or (args.out / "RESULTS-mrgen.md" if args.quick else HERE / "RESULTS-mrgen.md")
    target.write_text(text)
    print(text)
    print(f"-> {target}")


if __name__ == "__main__":
    main()

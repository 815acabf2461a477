"""Slice-feature extraction throughput: ``radlens extract bags`` vs CLEAR's one-image-at-a-time loop.

The reference way is CLEAR's extraction loop (``src/extract_features``): for every patient, every
slice is loaded, given a batch dimension and put through the encoder alone (``torch.no_grad``),
and the patient's features are stacked into one HDF5 file. radlens batches slices across series
and bags from the prepared dataset's memory maps under ``torch.inference_mode`` and writes the same
files atomically (plus ``bags.csv``). Both use the same encoder (the image tower of a
``tiny-vit2d`` CLIP bundle, random init) on the same prepared slices, read from the same memory
maps: only the batching differs (CLEAR also decodes a PNG per slice, which radlens never does; see
``slice_loading``). The radlens time is the whole ``extract_bags`` call (bundle load and hash,
planning, writing); the reference gets its model already loaded. Features are checked to agree.

    .venv/bin/python benchmarks/extract_bags.py [--volumes 8] [--depth 32] [--repeats 2] [--threads N] [--device cuda]

Prints a markdown table and appends an "## extract_bags" section to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from radlens.evaluate.extract import extract_bags

RESULTS = Path(__file__).with_name("RESULTS.md")
SLICE = (64, 64)  # tiny-vit2d's input


def make_inputs(root: Path, volumes: int, depth: int) -> tuple[Path, Path]:
    """A 2D prepared dataset (radlens prepare on synthetic BIDS volumes) and a tiny-vit2d bundle for it."""
    sys.path.insert(0, str(Path(__file__).parent))
    from slice_loading import build_bids

    from radlens.data.modules import preprocessing_from_card
    from radlens.models.bundle import save_bundle
    from radlens.models.registry import build_model
    from radlens.prepare.pipeline import default_config, prepare_dataset

    build_bids(root / "bids", volumes, (80, 80, depth))
    cfg = default_config("bids")
    cfg = dataclasses.replace(cfg, slicing=dataclasses.replace(cfg.slicing, slice_shape=SLICE))
    ds = prepare_dataset("bids", root / "bids", root / "prepared", cfg)
    torch.manual_seed(0)
    model = build_model("tiny-vit2d", texts=["a brain MRI"])
    save_bundle(model, root / "bundle", preprocessing_from_card(ds.card))
    return root / "prepared", root / "bundle"


def reference_extract(prepared: Path, model: torch.nn.Module, out: Path, device: str = "cpu") -> int:
    """CLEAR's loop: per patient, one slice at a time through the encoder, then one HDF5 file."""
    from radlens.io.prepared import PreparedDataset

    ds = PreparedDataset(prepared)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for series_id, table in ds.slices.groupby("series_id", sort=True):
        feats = []
        for slice_id in table.sort_values("row")["slice_id"]:
            image = torch.from_numpy(np.array(ds.slice(slice_id), dtype=np.float32))[None, None].to(device)
            with torch.no_grad():
                feats.append(model(image).cpu().numpy())
        with h5py.File(out / f"{series_id}.h5", "w") as f:
            f.create_dataset("feats", data=np.concatenate(feats))
        n += len(feats)
    return n


def _max_diff(a: Path, b: Path) -> float:
    diff = 0.0
    for path in sorted(a.glob("*.h5")):
        with h5py.File(path, "r") as fa, h5py.File(b / path.name, "r") as fb:
            diff = max(diff, float(np.abs(fa["feats"][()] - fb["feats"][()]).max()))
    return diff


def run(volumes: int, depth: int, repeats: int, batch_size: int, device: str) -> dict[str, object]:
    import contextlib
    import io

    from radlens.models.bundle import load_model

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prepared, bundle = make_inputs(root, volumes, depth)
        model = load_model(bundle).image.eval().to(device)
        times: dict[str, list[float]] = {"radlens": [], "reference": [], "rerun": []}
        n = 0
        quiet = contextlib.redirect_stdout(io.StringIO())
        reference_extract(prepared, model, root / "warm", device)  # warm-up: first-touch of pages and kernels
        for r in range(repeats):  # interleaved, so load changes on a shared machine hit both ways alike
            start = time.perf_counter()
            with quiet:
                extract_bags(str(bundle), str(prepared), str(root / f"radlens{r}"), batch_size=batch_size, device=device)
            times["radlens"].append(time.perf_counter() - start)
            start = time.perf_counter()
            n = reference_extract(prepared, model, root / f"reference{r}", device)
            times["reference"].append(time.perf_counter() - start)
            start = time.perf_counter()
            with quiet:  # the same command again: every bag is current, nothing is encoded
                extract_bags(str(bundle), str(prepared), str(root / f"radlens{r}"), batch_size=batch_size, device=device)
            times["rerun"].append(time.perf_counter() - start)
        return {"times": times, "slices": n, "series": len(list((root / "radlens0").glob("*.h5"))),
                "max_diff": _max_diff(root / "radlens0", root / "reference0"), "batch_size": batch_size, "device": device}


def table(r: dict) -> str:
    n, times = r["slices"], r["times"]
    best = {k: min(v) for k, v in times.items()}
    speedup = best["reference"] / best["radlens"]
    rows = [
        ("radlens `extract_bags` (batched, whole call)", "radlens"),
        ("reference (CLEAR): one slice at a time", "reference"),
    ]
    lines = [f"| way (tiny-vit2d image tower, {r['device']}) | best time (s) | all runs (s) | slices/s | vs reference |",
             "| --- | ---: | --- | ---: | ---: |"]
    for label, key in rows:
        lines.append(f"| {label} | {best[key]:.2f} | {', '.join(f'{t:.2f}' for t in times[key])} | "
                     f"{n / best[key]:,.0f} | {best['reference'] / best[key]:.1f}x |")
    lines += ["", f"Speed-up of radlens over the reference: **{speedup:.1f}x** (target >= 10x). "
              f"{n} slices of {SLICE[0]}x{SLICE[1]} in {r['series']} series (one bag per series), batch size "
              f"{r['batch_size']}; max |feats_radlens - feats_reference| = {r['max_diff']:.1e}. A rerun of the same "
              f"command (every bag current, nothing encoded) took {min(times['rerun']):.2f} s."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=8, help="synthetic volumes (one series each)")
    parser.add_argument("--depth", type=int, default=32, help="slices per volume before the foreground filter")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (both ways run there)")
    parser.add_argument("--no-record", action="store_true", help="do not append to benchmarks/RESULTS.md")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    text = table(run(args.volumes, args.depth, args.repeats, args.batch_size, args.device))
    print(text)
    if not args.no_record:
        command = "python benchmarks/extract_bags.py " + " ".join(sys.argv[1:])
        stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        machine = (f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads, load average {load:.1f} at the end")
        with RESULTS.open("a") as fh:
            fh.write(f"\n## extract_bags\n\n`{command.strip()}` ({stamp}; {machine})\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

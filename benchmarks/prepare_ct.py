"""CT-CLIP model input from a chest-CT-sized NIfTI: radlens vs the equivalent MONAI Compose.

Writes a seeded, CT-like 512 x 512 x 300 int16 volume (0.7 x 0.7 x 1.25 mm, stored LPS like
converted DICOM) as .nii.gz in a temporary folder, then builds the CT-CLIP tensor (RAS,
0.75 x 0.75 x 1.5 mm, clip [-1000, 1000] HU / 1000, centre crop/pad to 480 x 480 x 240 with -1)
both ways. Each method runs in its own subprocess (fair memory accounting): best-of-N wall
time, and peak resident memory above the process's post-import baseline (Linux VmHWM, reset
before each run). Outputs are compared voxel by voxel. The markdown table is printed and
appended to the ``## prepare_ct`` section of benchmarks/RESULTS.md.

    python benchmarks/prepare_ct.py [--repeats 3] [--threads 2] [--size 512 512 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SPACING_IN = (0.7, 0.7, 1.25)
SPACING_OUT = (0.75, 0.75, 1.5)
SHAPE_OUT = (480, 480, 240)
RESULTS = Path(__file__).with_name("RESULTS.md")
SECTION = "## prepare_ct"


def make_ct(size: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A chest-CT-like int16 HU volume: air, body ellipse, lungs, spine, noise (built slab by slab)."""
    rng = np.random.default_rng(seed)
    nx, ny, nz = size
    x = np.linspace(-1, 1, nx, dtype=np.float32)[:, None]
    y = np.linspace(-1, 1, ny, dtype=np.float32)[None, :]
    out = np.empty(size, dtype=np.int16)
    for z in range(nz):
        t = z / max(nz - 1, 1)
        body = (x / (0.85 - 0.1 * t)) ** 2 + (y / 0.6) ** 2 < 1
        lungs = ((np.abs(x) - 0.38) / 0.25) ** 2 + ((y + 0.05) / (0.4 * (0.5 + t))) ** 2 < 1
        spine = x**2 + (y - 0.45) ** 2 < 0.01
        hu = np.full((nx, ny), -1024, dtype=np.int16)
        hu[body] = 40
        hu[body & lungs] = -850
        hu[spine] = 700
        noise = rng.integers(-30, 31, size=(nx, ny), dtype=np.int16)
        out[:, :, z] = np.where(body, hu + noise, hu)
    return out


def write_input(folder: Path, size: tuple[int, int, int]) -> Path:
    import nibabel as nib

    affine = np.diag([-SPACING_IN[0], -SPACING_IN[1], SPACING_IN[2], 1.0])  # LPS-stored, like DICOM
    affine[:3, 3] = [180.0, 180.0, -200.0]
    path = folder / "chest_ct.nii.gz"
    image = nib.Nifti1Image(make_ct(size), affine)
    image.header.set_data_dtype(np.int16)
    nib.save(image, path)
    return path


def _read_radlens(path: Path, reader: str):  # noqa: ANN202 - returns a Volume
    """``radlens.io.reader.read_volume``, or a bare ``nib.load`` wrapped in a Volume ("nibabel"):
    the reader's own cost (value checks, reorientation copy, sidecar) is the difference."""
    if reader == "read_volume":
        from radlens.io.reader import read_volume

        return read_volume(path)
    import nibabel as nib

    from radlens.io.metadata import AcquisitionMetadata
    from radlens.io.volume import Volume

    img = nib.load(path)
    return Volume(np.asanyarray(img.dataobj)[None], img.affine, AcquisitionMetadata(Modality="CT"), path, True)


def run_radlens(path: Path, reader: str) -> np.ndarray:
    from radlens.prepare.intensity import ct_window
    from radlens.prepare.spatial import SpatialConfig, apply_spatial

    volume = _read_radlens(path, reader)
    spatial = apply_spatial(volume, SpatialConfig(target_spacing=SPACING_OUT, shape=SHAPE_OUT, pad_value=-1000.0))
    del volume  # the raw input is no longer needed once resampled
    return ct_window(spatial.array, -1000.0, 1000.0, "hu/1000", out=spatial.array)  # fresh array: in place


def run_monai(path: Path) -> np.ndarray:
    from monai.transforms import (
        Compose,
        EnsureChannelFirst,
        LoadImage,
        Orientation,
        ResizeWithPadOrCrop,
        ScaleIntensityRange,
        Spacing,
    )

    pipeline = Compose(
        [
            LoadImage(image_only=True),
            EnsureChannelFirst(),
            Orientation(axcodes="RAS", labels=None),
            Spacing(pixdim=SPACING_OUT, mode="bilinear"),
            ScaleIntensityRange(a_min=-1000, a_max=1000, b_min=-1.0, b_max=1.0, clip=True),
            ResizeWithPadOrCrop(SHAPE_OUT, value=-1.0),
        ]
    )
    return np.asarray(pipeline(str(path)))


METHODS = {
    "radlens": lambda path: run_radlens(path, "read_volume"),
    "radlens, bare nibabel load": lambda path: run_radlens(path, "nibabel"),
    "monai": run_monai,
}


def _memory_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(method: str, path: Path, out: Path, repeats: int, threads: int) -> None:
    """Run one method ``repeats`` times in this process; print times and peaks as JSON."""
    import torch

    torch.set_num_threads(threads)
    func = METHODS[method]
    import monai.transforms  # noqa: F401 - both workers pay the same imports before the baseline

    import radlens.prepare.spatial  # noqa: F401

    times, peaks = [], []
    for i in range(repeats):
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # reset VmHWM to the current RSS
        baseline = _memory_kib("VmRSS")
        start = time.perf_counter()
        result = func(path)
        times.append(time.perf_counter() - start)
        peaks.append((_memory_kib("VmHWM") - baseline) * 1024)
        if i == 0:
            np.save(out, result)
        del result
    print(json.dumps({"times": times, "peaks": peaks}))


def _spawn(method: str, path: Path, out: Path, repeats: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--path", str(path), "--out", str(out)]
    cmd += ["--repeats", str(repeats), "--threads", str(threads)]
    proc = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _compare(a_path: Path, b_path: Path) -> tuple[float, float, tuple[int, ...], tuple[int, ...]]:
    a, b = np.load(a_path, mmap_mode="r"), np.load(b_path, mmap_mode="r")
    if a.shape != b.shape:
        return float("nan"), 0.0, a.shape, b.shape
    worst, within = 0.0, 0
    for i in range(a.shape[1]):  # chunked: the parent holds one slab at a time
        diff = np.abs(np.asarray(a[:, i], dtype=np.float32) - np.asarray(b[:, i], dtype=np.float32))
        worst = max(worst, float(diff.max()))
        within += int((diff <= 0.01).sum())
    return worst, within / a.size, a.shape, b.shape


def _append_results(block: str) -> None:
    """Add ``block`` at the end of the ``## prepare_ct`` section (created if missing), atomically."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n"
    start = text.index(SECTION) + len(SECTION)
    end = text.find("\n## ", start)
    end = len(text) if end < 0 else end
    text = text[:end].rstrip("\n") + "\n\n" + block.rstrip("\n") + "\n" + text[end:]
    tmp = RESULTS.with_name(f".{RESULTS.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, RESULTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--size", type=int, nargs=3, default=(512, 512, 300))
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to RESULTS.md")
    parser.add_argument("--worker", choices=tuple(METHODS), help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.path, args.out, args.repeats, args.threads)
        return

    size = tuple(args.size)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="radlens-bench-") as tmp:
        folder = Path(tmp)
        path = write_input(folder, size)
        outputs = {m: folder / f"out{i}.npy" for i, m in enumerate(METHODS)}
        stats = {m: _spawn(m, path, out, args.repeats, args.threads) for m, out in outputs.items()}
        agreement = {m: _compare(outputs[m], outputs["monai"]) for m in METHODS if m != "monai"}
    input_bytes = int(np.prod(size)) * 2
    best = {m: min(s["times"]) for m, s in stats.items()}
    peak = {m: max(s["peaks"]) for m, s in stats.items()}
    rows = [
        "| method | best time (s) | all runs (s) | peak memory above baseline (MiB) | peak / int16 input |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for m in METHODS:
        runs = ", ".join(f"{t:.2f}" for t in stats[m]["times"])
        rows.append(f"| {m} | {best[m]:.2f} | {runs} | {peak[m] / 2**20:.0f} | {peak[m] / input_bytes:.2f}x |")
    command = f"python benchmarks/prepare_ct.py --repeats {args.repeats} --threads {args.threads}"
    command += "" if size == (512, 512, 300) else " --size " + " ".join(map(str, size))
    lines = [
        f"### {time.strftime('%Y-%m-%d %H:%M %Z')} — `{command}`",
        "",
        f"Input {size[0]}x{size[1]}x{size[2]} int16 ({input_bytes / 2**20:.0f} MiB); {platform.machine()}, "
        f"{os.cpu_count()} CPUs (shared), load average {load_start:.1f} at the start and "
        f"{os.getloadavg()[0]:.1f} at the end; torch threads {args.threads}. "
        "\"radlens\" reads with `radlens.io.reader.read_volume` (int16 kept, one reoriented copy); "
        "\"radlens, bare nibabel load\" wraps `nib.load`'s int16 array in a Volume without the reader's "
        "checks, then the same `apply_spatial` + `ct_window`.",
        "",
        *rows,
        "",
    ]
    for m, (worst, within, shape, monai_shape) in agreement.items():
        speed, memory = best["monai"] / best[m], peak[m] / input_bytes
        verdict = "met" if speed >= 2.0 and memory <= 4.0 else "MISSED"
        lines.append(
            f"- {m}: {speed:.2f}x faster than MONAI at {memory:.2f}x the input's memory (targets >= 2x, <= 4x: "
            f"{verdict}); output {shape} vs MONAI {monai_shape}: max |diff| {worst:.2e}, "
            f"{100 * within:.4f}% of voxels within 0.01."
        )
    block = "\n".join(lines)
    print(block)
    if not args.no_record:
        _append_results(block)


if __name__ == "__main__":
    main()

"""Random-access 2D slice loading: prepared dataset (memmap) vs MR-CLIP PNG files vs slicing the .nii.gz.

Builds a small BIDS input with nibabel in a temporary folder (8 volumes of 192x192x40 by
default), prepares it as 2D slices, exports the MR-CLIP PNG layout, then reads the same random
slices three ways and reports slices/s:

- radlens: ``PreparedDataset.slice(i)`` (cached ``np.load(mmap_mode="r")``, copy to RAM);
- PNG: ``PIL.Image.open`` + ``np.asarray`` per slice (MR-CLIP's data loader);
- NIfTI: ``nibabel.load`` + take the slice per sample (reading straight from the source).

Run: ``python benchmarks/slice_loading.py [--volumes 8] [--samples 2000] [--append-results]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def build_bids(root: Path, volumes: int, shape: tuple[int, int, int]) -> list[Path]:
    import nibabel as nib

    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    head = ((grid**2).sum(0) < 0.8).astype(np.float32)
    paths = []
    for i in range(volumes):
        folder = root / f"sub-{i:02d}" / "anat"
        folder.mkdir(parents=True)
        data = head * (200 + 50 * rng.random(shape, dtype=np.float32))
        path = folder / f"sub-{i:02d}_T1w.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([1.0, 1.0, 3.0, 1.0])), path)
        (folder / f"sub-{i:02d}_T1w.json").write_text(json.dumps({"Modality": "MR", "EchoTime": 0.003, "RepetitionTime": 2.0}))
        paths.append(path)
    return paths


def rate(read: Callable[[int], np.ndarray], order: np.ndarray) -> float:
    """Slices per second reading ``order`` (after one warm-up read)."""
    read(int(order[0]))
    start = time.perf_counter()
    for i in order:
        read(int(i))
    return len(order) / (time.perf_counter() - start)


def run(volumes: int, samples: int, shape: tuple[int, int, int]) -> dict[str, float]:
    import nibabel as nib
    from PIL import Image

    from radlens.io.prepared import PreparedDataset
    from radlens.prepare.exporters.mrclip import export_mrclip
    from radlens.prepare.pipeline import default_config, prepare_dataset

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        build_bids(tmp_path / "bids", volumes, shape)
        prepare_dataset("bids", tmp_path / "bids", tmp_path / "prepared", default_config("bids"))
        export_mrclip(tmp_path / "prepared", tmp_path / "mrclip")
        ds = PreparedDataset(tmp_path / "prepared")
        slices = ds.slices
        pngs = [
            str(tmp_path / "mrclip" / "images" / p / s / f"{r:04d}.png")
            for p, s, r in zip(slices["patient_id"], slices["series_id"], slices["row"])
        ]
        sources = ds.series.set_index("series_id")["source_path"]
        niftis = [str(tmp_path / "bids" / sources[s]) for s in slices["series_id"]]
        index = slices["slice_index"].to_numpy()
        order = np.random.default_rng(1).integers(0, len(slices), samples)
        return {
            "radlens memmap": rate(lambda i: np.array(ds.slice(i)), order),
            "MR-CLIP PNG": rate(lambda i: np.asarray(Image.open(pngs[i])), order),
            "NIfTI (.nii.gz) per sample": rate(
                lambda i: np.asarray(nib.load(niftis[i]).dataobj[:, :, int(index[i])], dtype=np.float32), order[: max(50, samples // 20)]
            ),
        }


def table(results: dict[str, float]) -> str:
    base = results["radlens memmap"]
    lines = ["| loader | slices/s | radlens speed-up |", "| --- | ---: | ---: |"]
    for name, value in results.items():
        lines.append(f"| {name} | {value:,.0f} | {base / value:,.1f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--volumes", type=int, default=8)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--shape", type=int, nargs=3, default=(192, 192, 40))
    parser.add_argument("--append-results", action="store_true", help="append a section to benchmarks/RESULTS.md")
    args = parser.parse_args()
    results = run(args.volumes, args.samples, tuple(args.shape))
    text = table(results)
    print(text)
    if args.append_results:
        command = f"python benchmarks/slice_loading.py --volumes {args.volumes} --samples {args.samples} --shape {' '.join(map(str, args.shape))}"
        section = (
            f"\n## slice_loading\n\nRandom access to single 2D slices (224x224 float32 from {args.volumes} volumes of "
            f"{'x'.join(map(str, args.shape))}), {args.samples} random reads, warm page cache, one process "
            f"({platform.processor() or platform.machine()}, Python {platform.python_version()}).\n\n"
            f"{text}\n\nCommand: `{command}`\n"
        )
        with open(Path(__file__).with_name("RESULTS.md"), "a", encoding="utf-8") as fh:
            fh.write(section)


if __name__ == "__main__":
    main()

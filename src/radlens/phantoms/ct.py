"""Chest CT phantom in CT-RATE's layout: volumes, reports, labels, metadata, finding masks.

``radlens phantom ct OUT`` writes a small, fully known stand-in for CT-RATE so the whole CT path
(import, HU handling, CLIP training, zero-shot evaluation, lesion-aware sampling, segmentation)
can be run and checked without the real data. Each patient gets a procedural thorax
(``ct_anatomy``), findings drawn with CT-RATE's 18 names (``ct_findings``) and a report written
from that truth (``ct_reports``); files follow CT-RATE's names and tables (``ct_layout``, which
also documents how raw and already-HU volumes are stored). Everything is a function of the seed:
the number of worker processes does not change a single voxel.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from radlens.errors import ConfigError
from radlens.phantoms.ct_anatomy import Body, build_thorax
from radlens.phantoms.ct_findings import DEFAULT_PREVALENCES, FINDINGS, LABEL_IDS, draw_findings, heart_shape, sample_findings
from radlens.phantoms.ct_geometry import Grid
from radlens.phantoms.ct_layout import atomic_write, encode, mask_relpath, save_nifti, volume_name, volume_relpath, write_tables
from radlens.phantoms.ct_reports import write_report

if TYPE_CHECKING:
    import pandas as pd

# (Manufacturer, model, RescaleIntercept, share, (soft kernel, sharp kernel)); the -8192 scanner
# makes about 30% of volumes, close to CT-RATE's validation mix.
VENDORS: tuple[tuple[str, str, float, float, tuple[str, str]], ...] = (
    ("SIEMENS", "SOMATOM Definition Edge", -1024.0, 0.35, ("Br40d", "Bl64d")),
    ("PHILIPS", "Ingenuity CT", -1024.0, 0.20, ("B", "YB")),
    ("GE MEDICAL SYSTEMS", "Revolution EVO", -1024.0, 0.15, ("STANDARD", "LUNG")),
    ("PHILIPS", "Brilliance 16", -8192.0, 0.30, ("C", "L")),
)
# Reconstruction kernels: (Gaussian blur in voxels, white noise before the blur, HU).
KERNELS = {"soft": (0.7, 50.0), "sharp": (0.4, 40.0)}


@dataclass(frozen=True)
class CTPhantomConfig:
    """What to generate. Sizes in voxels and millimetres; rates are per patient/scan/volume."""

    patients: int = 24
    seed: int = 0
    shape: tuple[int, int, int] = (96, 96, 64)
    spacing: tuple[float, float, float] = (3.5, 3.5, 4.0)
    spacing_jitter: float = 0.06
    prevalences: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PREVALENCES))
    second_scan_rate: float = 0.3
    second_recon_rate: float = 0.45
    already_hu_fraction: float = 0.25
    valid_fraction: float = 0.25

    def __post_init__(self) -> None:
        if self.patients < 1 or any(n < 16 for n in self.shape) or any(s <= 0 for s in self.spacing):
            raise ConfigError(f"need patients >= 1, shape >= 16 and spacing > 0 (got {self.patients}, {self.shape}, {self.spacing})")
        unknown = set(self.prevalences) - set(FINDINGS)
        if unknown:
            raise ConfigError(f"unknown finding names in prevalences: {sorted(unknown)}; use CT-RATE's names {list(FINDINGS)}")
        rates = [self.spacing_jitter, self.second_scan_rate, self.second_recon_rate, self.already_hu_fraction, self.valid_fraction,
                 *self.prevalences.values()]
        if any(not 0.0 <= r <= 1.0 for r in rates):
            raise ConfigError("rates, fractions and prevalences must lie in [0, 1]")


@dataclass(frozen=True)
class PatientTask:
    """One patient to generate: its split, number within the split, and global index (seed key)."""

    split: str
    number: int
    index: int


@dataclass
class RenderedVolume:
    """One reconstruction, in memory: what the files hold plus the truth behind them."""

    name: str
    stored: np.ndarray  # int16 values as written to the NIfTI
    labels: np.ndarray  # uint8 finding label map (LABEL_IDS)
    tissue: np.ndarray  # uint8 tissue map (ct_anatomy.TISSUES)
    affine: np.ndarray
    row: dict[str, Any]  # metadata, report, labels and truth details of the volume


def plan_patients(cfg: CTPhantomConfig) -> list[PatientTask]:
    """Assign patients to train/valid (by patient, from the seed) and number them per split."""
    rng = np.random.default_rng((cfg.seed, 0xC7))
    n_valid = int(round(cfg.patients * cfg.valid_fraction))
    if cfg.valid_fraction > 0 and cfg.patients >= 2:
        n_valid = min(max(n_valid, 1), cfg.patients - 1)
    valid = set(rng.permutation(cfg.patients)[:n_valid].tolist())
    counts = {"train": 0, "valid": 0}
    tasks = []
    for i in range(cfg.patients):
        split = "valid" if i in valid else "train"
        counts[split] += 1
        tasks.append(PatientTask(split, counts[split], i))
    return tasks


def _reconstruct(hu: np.ndarray, kernel: str, rng: np.random.Generator) -> np.ndarray:
    """Scanner noise blurred by the reconstruction kernel (which also sets the image sharpness)."""
    from scipy.ndimage import gaussian_filter

    blur, noise = KERNELS[kernel]
    noisy = hu + rng.normal(0.0, noise, hu.shape).astype(np.float32)
    return gaussian_filter(noisy, blur, mode="nearest")


def render_patient(cfg: CTPhantomConfig, task: PatientTask) -> list[RenderedVolume]:
    """All scans and reconstructions of one patient (deterministic in seed and patient index)."""
    rng = np.random.default_rng((cfg.seed, task.index))
    sex = str(rng.choice(["M", "F"]))
    age = int(rng.integers(25, 89))
    body = Body.sample(rng, sex)
    n_scans = 1 + int(rng.random() < cfg.second_scan_rate)
    volumes: list[RenderedVolume] = []
    previous: dict[str, int] | None = None
    for s, scan in enumerate("ab"[:n_scans]):
        srng = np.random.default_rng((cfg.seed, task.index, s + 1))
        maker, model, intercept, _, kernels = VENDORS[srng.choice(len(VENDORS), p=[v[3] for v in VENDORS])]
        xy = round(cfg.spacing[0] * float(srng.uniform(1 - cfg.spacing_jitter, 1 + cfg.spacing_jitter)), 2)
        grid = Grid(cfg.shape, (xy, xy * cfg.spacing[1] / cfg.spacing[0], cfg.spacing[2]))
        findings = sample_findings(srng, age, cfg.prevalences, previous)
        previous = findings
        n_recons = 1 + int(srng.random() < cfg.second_recon_rate)
        order = ["soft", "sharp"] if srng.random() < 0.6 else ["sharp", "soft"]
        stored_hu = srng.random(2) < cfg.already_hu_fraction
        # Geometry has its own stream, so the grid size cannot change which scans/recons exist.
        grng = np.random.default_rng((cfg.seed, task.index, s + 1, 0))
        scale, rim = heart_shape(grng, findings)
        th = build_thorax(grid, body, grng, scale, rim, z_shift=float(grng.uniform(-12, 12)))
        labels, details = draw_findings(th, findings, grng)
        for r, kind in enumerate(order[:n_recons], start=1):
            name = volume_name(task.split, task.number, scan, r)
            kernel = kernels[0] if kind == "soft" else kernels[1]
            technique = (f"Non-contrast chest CT. Axial images with {grid.spacing[2]:g} mm slice thickness, "
                         f"{'soft-tissue' if kind == 'soft' else 'sharp lung'} kernel ({kernel}).")
            report = write_report(findings, details, np.random.default_rng((cfg.seed, task.index, s + 1, 100)), technique)
            hu = _reconstruct(th.hu, kind, np.random.default_rng((cfg.seed, task.index, s + 1, r)))
            stored_as_hu = bool(stored_hu[r - 1])
            row: dict[str, Any] = {
                "VolumeName": f"{name}.nii.gz", "split": task.split, "patient_id": f"{task.split}_{task.number}",
                "scan_id": f"{task.split}_{task.number}_{scan}", "reconstruction": r,
                "path": str(volume_relpath(name)), "mask_path": str(mask_relpath(name)),
                "Manufacturer": maker, "ManufacturerModelName": model, "SeriesDescription": f"THORAX {kernel}",
                "PatientSex": sex, "PatientAge": f"{age:03d}Y",
                "ReconstructionDiameter": round(grid.spacing[0] * grid.shape[0], 1),
                "XRayTubeCurrent": int(grng.integers(60, 300)), "KVP": 120, "ConvolutionKernel": kernel,
                "PatientPosition": "HFS", "SliceThickness": grid.spacing[2], "SpiralPitchFactor": 1.0,
                "CTDIvol": round(float(grng.uniform(2.5, 12.0)), 2), "ImageOrientationPatient": "[1, 0, 0, 0, 1, 0]",
                "Rows": grid.shape[1], "Columns": grid.shape[0],
                "XYSpacing": f"[{grid.spacing[0]:g}, {grid.spacing[1]:g}]", "RescaleIntercept": intercept,
                "RescaleSlope": 1.0, "RescaleType": "HU", "NumberofSlices": grid.shape[2], "ZSpacing": grid.spacing[2],
                "StoredAsHU": stored_as_hu, **report, **findings, "details": json.dumps(details, sort_keys=True),
            }
            volumes.append(RenderedVolume(name, encode(hu, 1.0, intercept, stored_as_hu), labels, th.tissue, grid.affine(), row))
    return volumes


def _lesion_rows(vol: RenderedVolume) -> list[dict[str, Any]]:
    """One row per axial slice: does a finding mask touch it, and which findings."""
    names = {i: n for n, i in LABEL_IDS.items()}
    rows = []
    for k in range(vol.labels.shape[2]):
        ids = [int(i) for i in np.unique(vol.labels[:, :, k]) if i]
        rows.append({"VolumeName": vol.row["VolumeName"], "slice_index": k, "lesion": int(bool(ids)),
                     "findings": ";".join(names[i] for i in ids)})
    return rows


def _write_patient(args: tuple[Path, CTPhantomConfig, PatientTask]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Render one patient and write its volumes and masks (runs in a worker process)."""
    out, cfg, task = args
    rows, lesions = [], []
    for vol in render_patient(cfg, task):
        save_nifti(vol.stored, vol.affine, out / vol.row["path"])
        save_nifti(vol.labels, vol.affine, out / vol.row["mask_path"])
        rows.append(vol.row)
        lesions.extend(_lesion_rows(vol))
    return rows, lesions


def generate_ct_phantom(out: Path, cfg: CTPhantomConfig, workers: int = 1) -> pd.DataFrame:
    """Write the phantom dataset to ``out``; return the truth table (one row per volume)."""
    import pandas as pd
    from tqdm.auto import tqdm

    from radlens import __version__

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = [(out, cfg, t) for t in plan_patients(cfg)]
    bar = dict(total=len(tasks), desc="phantom ct", unit="patient", disable=None)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(tqdm(pool.map(_write_patient, tasks), **bar))
    else:
        results = [_write_patient(t) for t in tqdm(tasks, **bar)]
    rows = [r for rs, _ in results for r in rs]
    lesions = [le for _, ls in results for le in ls]
    write_tables(out, rows, lesions)
    masks = {"0": "background", **{str(i): n for n, i in LABEL_IDS.items()}}
    atomic_write(out / "masks" / "labels.json", lambda tmp: tmp.write_text(json.dumps(
        {"labels": masks, "implemented": [n for n in FINDINGS if cfg.prevalences.get(n, 0) > 0]}, indent=2)))
    truth = pd.DataFrame(rows)
    card = {"radlens_version": __version__, "kind": "ct-phantom", "config": asdict(cfg), "seed": cfg.seed,
            "counts": {"patients": cfg.patients, "scans": int(truth["scan_id"].nunique()), "volumes": len(truth)},
            "stored_values": "raw = (HU - RescaleIntercept) / RescaleSlope unless StoredAsHU (then HU); NIfTI scl_slope/scl_inter = 1/0"}
    atomic_write(out / "phantom.json", lambda tmp: tmp.write_text(json.dumps(card, indent=2)))
    return truth


def phantom_ct(
    out: Path,
    patients: int = 24,
    seed: int = 0,
    preview: bool = False,
    workers: int = 1,
    phantom: CTPhantomConfig | None = None,
) -> None:
    """Generate a chest CT phantom in CT-RATE's layout (volumes, reports, labels, metadata, masks).

    Args:
        out: output folder.
        patients: number of patients (overrides phantom.patients).
        seed: random seed (overrides phantom.seed); the same seed gives the same files.
        preview: also write OUT/preview.png with findings outlined.
        workers: worker processes (the output does not depend on it).
        phantom: every other setting (shape, spacing, prevalences, rates).
    """
    cfg = replace(phantom or CTPhantomConfig(), patients=patients, seed=seed)
    truth = generate_ct_phantom(Path(out), cfg, workers=workers)
    if preview:
        from radlens.phantoms.ct_preview import write_preview

        write_preview(Path(out), truth)
    print(f"phantom ct: {truth['patient_id'].nunique()} patients, {truth['scan_id'].nunique()} scans, "
          f"{len(truth)} volumes -> {out}")

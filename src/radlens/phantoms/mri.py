"""Physics-based brain MRI phantom: real MNI152 anatomy, MR signal equations, messy scanner metadata.

``generate_mri_phantom(out, cfg)`` writes a BIDS-like tree of subjects with dcm2niix-style sidecars,
lesion masks, tissue label maps (``*_dseg.nii.gz`` named by ``dseg.tsv``: :mod:`radlens.phantoms.mri_labels`),
``truth.csv`` (the true parameters and contrast class of every series),
``lesions.csv`` (per stored slice) and, on request, real DICOM series and a preview montage. The
same seed gives the same arrays whatever the number of worker processes.
"""

from __future__ import annotations

import dataclasses
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from radlens.errors import ConfigError, InputError
from radlens.phantoms.mri_metadata import MessinessRates
from radlens.phantoms.mri_physics import FAMILIES

if TYPE_CHECKING:
    import pandas as pd

    from radlens.phantoms.mri_anatomy import Anatomy
    from radlens.phantoms.mri_physics import Protocol

# Contrast class -> BIDS-like file suffix.
SUFFIX = {"T1w": "T1w", "T2w": "T2w", "PDw": "PDw", "FLAIR": "FLAIR", "T2*w": "T2starw", "STIR": "STIR"}
PLANES = ("axial", "coronal", "sagittal")


@dataclass(frozen=True)
class MRIPhantomConfig:
    """Everything that decides what the MRI phantom contains; the seed makes it reproducible.

    Attributes:
        subjects: number of subjects (sub-001, sub-002, ...).
        seed: seeds anatomy, protocols, noise and messiness; the same seed gives the same files.
        series_per_subject: series acquired per subject (one session).
        sequences: sequence families to draw from: T1_SE, T2_FSE, PD_FSE, FLAIR, STIR, T2STAR_GRE, T1_GRE3D, MPRAGE.
        field_strengths: field strengths in tesla to draw the scanner from.
        resolution: grid of the subject maps in mm (1-4); 3D series are isotropic at this size.
        slice_thickness: range in mm of the slice thickness of 2D acquisitions.
        snr: range of the mean brain signal over the noise sigma (Rician noise).
        bias_strength: amplitude of the smooth multiplicative bias field.
        rotation_deg: largest random head rotation per subject, in degrees.
        scale: largest random head scaling per subject (0.1 = +-10%).
        warp_mm: amplitude in mm of the smooth random warp of each subject's anatomy.
        lesion_probability: chance that a subject has white-matter lesions (0 disables lesions and lesion masks).
        tissue_maps: write a tissue label map per series (<stem>_dseg.nii.gz) and dseg.tsv at the root.
        max_lesions: most lesions per subject.
        scalp: add a scalp and skull layer around the brain.
        reorient: random axis flips and in-plane swaps in the stored voxel order (the affine stays correct).
        any_axis_rate: share of series stored with the slice axis anywhere, as after a reorienting tool.
        messiness: how often sidecar fields go missing or are written in vendor variants.
        dicom: also write each series as DICOM (MR Image Storage, synthetic identity).
        preview: write preview.png with every contrast and the lesions outlined.
    """

    subjects: int = 6
    seed: int = 0
    series_per_subject: int = 6
    sequences: tuple[str, ...] = tuple(FAMILIES)
    field_strengths: tuple[float, ...] = (1.5, 3.0)
    resolution: int = 2  # mm (1-4), grid of the subject maps; 3D series are isotropic at this size
    slice_thickness: tuple[float, float] = (3.0, 6.0)  # mm, 2D acquisitions
    snr: tuple[float, float] = (12.0, 60.0)  # mean brain signal / noise sigma
    bias_strength: float = 0.15
    rotation_deg: float = 10.0
    scale: float = 0.10
    warp_mm: float = 3.0
    lesion_probability: float = 0.5  # per subject; 0 disables lesions and lesion masks
    tissue_maps: bool = True  # a tissue label map per series (<stem>_dseg.nii.gz) and dseg.tsv at the root
    max_lesions: int = 6
    scalp: bool = True
    reorient: bool = True  # random axis flips and in-plane swaps in the stored order (affine kept correct)
    any_axis_rate: float = 0.2  # share of series stored with the slice axis anywhere (as after a reorienting tool)
    messiness: MessinessRates = field(default_factory=MessinessRates)
    dicom: bool = False
    preview: bool = False

    def validate(self) -> None:
        """Raise ConfigError for a configuration that cannot work."""
        unknown = [s for s in self.sequences if s not in FAMILIES]
        if unknown:
            raise ConfigError(f"unknown MRI sequences {unknown}; known: {sorted(FAMILIES)}")
        if self.subjects < 1 or self.series_per_subject < 1 or not self.sequences:
            raise ConfigError("subjects, series_per_subject and sequences must be at least 1")
        if not 1 <= self.resolution <= 4:
            raise ConfigError(f"resolution must be 1 to 4 mm (block means of the 1 mm MNI152), got {self.resolution}")
        rates = [self.lesion_probability, self.any_axis_rate, *dataclasses.asdict(self.messiness).values()]
        if not all(0.0 <= r <= 1.0 for r in rates):
            raise ConfigError("lesion_probability, any_axis_rate and messiness rates must lie in [0, 1]")
        if not self.field_strengths or min(self.snr) <= 0 or min(self.slice_thickness) <= 0:
            raise ConfigError("field_strengths must be given; snr and slice_thickness must be positive")


def _draw_plane(rng: np.random.Generator, acquisition: str) -> str:
    """Axial is the usual 2D plane; 3D volumes are most often sagittal."""
    weights = (0.5, 0.25, 0.25) if acquisition == "2D" else (0.3, 0.2, 0.5)
    return str(rng.choice(PLANES, p=weights))


def _image_series(anatomy: Anatomy, cfg: MRIPhantomConfig, protocol: Protocol, plane: str, thickness: float,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray | None]:
    """Image one series: (int16 image, uint8 lesion mask, affine), RAS order on the acquisition grid, its SNR
    and, with ``cfg.tissue_maps``, its uint8 tissue label map on the same grid (else None).

    Partial volume: signal = sum over tissues of fraction x tissue signal, before slab averaging.
    """
    from radlens.phantoms import mri_acquisition as acq
    from radlens.phantoms.mri_physics import tissue_signals

    signals = tissue_signals(protocol)
    fractions = anatomy.fractions
    signal = sum(fractions[t] * np.float32(signals[t]) for t in fractions)
    brain = sum(fractions[t] for t in ("GM", "WM", "CSF", "lesion"))
    axis = acq.PLANE_AXIS[plane]
    image, affine = acq.slice_volume(np.asarray(signal, np.float32), anatomy.affine, axis, thickness)
    brain_sliced, _ = acq.slice_volume(np.asarray(brain, np.float32), anatomy.affine, axis, thickness)
    lesion, _ = acq.slice_volume(fractions["lesion"], anatomy.affine, axis, thickness)
    image = image * acq.bias_field(image.shape, rng, cfg.bias_strength)
    snr = round(float(rng.uniform(*cfg.snr)), 1)
    sigma = float(image[brain_sliced > 0.5].mean()) / snr
    image = acq.to_scanner_units(acq.rician_noise(image, sigma, rng))
    mask = (lesion > 0.5).astype(np.uint8)
    tissues = None
    if cfg.tissue_maps:
        from radlens.phantoms.mri_labels import tissue_label_map

        tissues = tissue_label_map(anatomy, axis, thickness, brain_sliced, mask)
    return image, mask, affine, snr, tissues


def _generate_subject(out: Path, cfg: MRIPhantomConfig, index: int) -> tuple[list[dict], list[dict]]:
    """Write every series of one subject; return its truth rows and per-slice lesion rows."""
    import nibabel as nib

    from radlens.phantoms import mri_acquisition as acq
    from radlens.phantoms.mri_anatomy import make_subject
    from radlens.phantoms.mri_dicom import image_orientation, write_dicom_series
    from radlens.phantoms.mri_io import write_json, write_nifti
    from radlens.phantoms.mri_metadata import draw_scanner, make_sidecar, true_values
    from radlens.phantoms.mri_physics import sample_protocol

    rng = np.random.default_rng([cfg.seed, index])
    subject = f"sub-{index + 1:03d}"
    scanner = draw_scanner(rng, cfg.field_strengths)
    count = int(rng.integers(1, cfg.max_lesions + 1)) if rng.random() < cfg.lesion_probability else 0
    anatomy = make_subject(cfg.resolution, rng, count, cfg.scalp, cfg.rotation_deg, cfg.scale, cfg.warp_mm)
    order = [cfg.sequences[i] for i in rng.permutation(len(cfg.sequences))]
    families = [order[i % len(order)] for i in range(cfg.series_per_subject)]
    folder = out / subject / "ses-01" / "anat"
    truth, lesions = [], []
    for number, family in enumerate(families, start=1):
        protocol = sample_protocol(family, scanner.field_strength, rng)
        spec = FAMILIES[family]
        plane = _draw_plane(rng, spec.acquisition)
        drawn = round(float(rng.uniform(*cfg.slice_thickness)) * 2) / 2
        thickness = anatomy.spacing if spec.acquisition == "3D" else max(drawn, anatomy.spacing)
        image, mask, affine, snr, tissues = _image_series(anatomy, cfg, protocol, plane, thickness, rng)
        any_axis = bool(rng.random() < cfg.any_axis_rate)
        ornt = acq.random_orientation(rng, acq.PLANE_AXIS[plane], any_axis)
        if not cfg.reorient:
            ornt = np.array([[0, 1], [1, 1], [2, 1]], float)
        image, stored_affine = acq.reorient(image, affine, ornt)
        mask, _ = acq.reorient(mask, affine, ornt)
        if tissues is not None:
            tissues, _ = acq.reorient(tissues, affine, ornt)
        slice_axis = int(ornt[acq.PLANE_AXIS[plane], 0])
        sidecar, notes = make_sidecar(protocol, scanner, plane, thickness, number, rng, cfg.messiness)
        # dcm2niix records the acquisition's orientation; it survives a tool reorienting the NIfTI.
        sidecar["ImageOrientationPatientDICOM"] = image_orientation(stored_affine, slice_axis)
        stem = f"{subject}_ses-01_run-{number:02d}_{SUFFIX[spec.contrast]}"
        write_nifti(folder / f"{stem}.nii.gz", image, stored_affine)
        write_json(folder / f"{stem}.json", sidecar)
        mask_file = ""
        if cfg.lesion_probability > 0:
            mask_file = f"{subject}/ses-01/anat/{stem}_desc-lesion_mask.nii.gz"
            write_nifti(out / mask_file, mask, stored_affine)
            flags = np.moveaxis(mask, slice_axis, 0).reshape(mask.shape[slice_axis], -1).any(axis=1)
            file = f"{subject}/ses-01/anat/{stem}.nii.gz"
            lesions += [{"file": file, "slice_index": k, "lesion": int(f)} for k, f in enumerate(flags)]
        tissue_file = ""
        if tissues is not None:
            tissue_file = f"{subject}/ses-01/anat/{stem}_dseg.nii.gz"
            write_nifti(out / tissue_file, tissues, stored_affine)
        dicom_dir = ""
        if cfg.dicom:
            dicom_dir = f"dicom/{subject}/series-{number:02d}"
            key = f"{cfg.seed}/{stem}"
            write_dicom_series(out / dicom_dir, image, stored_affine, slice_axis, sidecar, subject, key)
        true = true_values(protocol, scanner, plane, thickness)
        del true["SeriesDescription"]  # the written one is in notes; description_status says if it is right
        for key in ("ScanningSequence", "SequenceVariant"):
            true[key] = "_".join(true[key])
        truth.append({
            "subject": subject, "session": "ses-01", "series": stem, "file": f"{subject}/ses-01/anat/{stem}.nii.gz",
            "contrast": spec.contrast, "sequence": family, "plane": plane, **true,
            "shape": "x".join(str(s) for s in image.shape), "orientation": "".join(nib.aff2axcodes(stored_affine)),
            "slice_axis": slice_axis, "snr": snr, "lesion_count": anatomy.lesion_count,
            "lesion_voxels": int(mask.sum()), "lesion_mask": mask_file, "tissue_map": tissue_file, "dicom_dir": dicom_dir,
            **notes,
        })
    return truth, lesions


def generate_mri_phantom(out: Path, cfg: MRIPhantomConfig = MRIPhantomConfig(), workers: int = 1) -> pd.DataFrame:
    """Generate the phantom under ``out`` and return the truth table (also written as ``truth.csv``)."""
    import pandas as pd
    from tqdm import tqdm

    import radlens
    from radlens.phantoms.mri_anatomy import template_anatomy
    from radlens.phantoms.mri_io import write_csv, write_json

    cfg.validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(out, "the phantom output must be a folder")
    out.mkdir(parents=True, exist_ok=True)
    template_anatomy(cfg.resolution, cfg.scalp)  # load once here; forked workers inherit the cache
    progress = partial(tqdm, desc="MRI phantom", unit="subject", disable=None)
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_generate_subject, out, cfg, i) for i in range(cfg.subjects)]
            results = [f.result() for f in progress(futures)]
    else:
        results = [_generate_subject(out, cfg, i) for i in progress(range(cfg.subjects))]
    truth = pd.DataFrame([row for rows, _ in results for row in rows])
    write_csv(out / "truth.csv", truth)
    if cfg.lesion_probability > 0:
        write_csv(out / "lesions.csv", pd.DataFrame([row for _, rows in results for row in rows],
                                                    columns=["file", "slice_index", "lesion"]))
    if cfg.tissue_maps:
        from radlens.phantoms.mri_labels import write_label_table

        write_label_table(out / "dseg.tsv")
    write_json(out / "phantom.json", {"kind": "mri", "radlens_version": radlens.__version__,
                                      "seed": cfg.seed, "config": dataclasses.asdict(cfg)})
    if cfg.preview:
        from radlens.phantoms.mri_preview import write_preview

        write_preview(out, truth)
    return truth


def phantom_mri(
    out: Path,
    subjects: int = 6,
    seed: int = 0,
    dicom: bool = False,
    preview: bool = False,
    workers: int = 1,
    phantom: MRIPhantomConfig = MRIPhantomConfig(),
) -> int:
    """Generate a physics-based brain MRI phantom (NIfTI + sidecars + tissue label maps + truth.csv, optionally DICOM
    and a preview).

    Args:
        out: output folder.
        subjects: number of subjects (overrides phantom.subjects).
        seed: random seed (overrides phantom.seed); the same seed gives the same files.
        dicom: also write every series as a DICOM series under OUT/dicom.
        preview: write OUT/preview.png.
        workers: worker processes (results do not depend on it).
        phantom: every other setting of the phantom.
    """
    cfg = dataclasses.replace(phantom, subjects=subjects, seed=seed, dicom=dicom or phantom.dicom,
                              preview=preview or phantom.preview)
    truth = generate_mri_phantom(Path(out), cfg, workers=workers)
    print(f"phantom mri: {truth['subject'].nunique()} subjects, {len(truth)} series -> {out}")
    return 0

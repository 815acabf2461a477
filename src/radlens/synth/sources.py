"""What ``radlens synth`` generates from: the source masks of a prepared dataset, their prompts and seeds.

A source mask is a 2D slice's label map, of a series of the source contrast classes, in the chosen
splits, with more foreground than ``min_foreground`` (MRGen skips masks covering at most 0.5% of the
slice). Its prompt is the generator's template for the *target* contrast (its typical TE/TR/TI as the
generator recorded them from training) with the source slice's own plane and body part and, as in
MRGen, the names of the structures the mask holds. Candidate ``j`` of a mask gets the seed
:func:`candidate_seed` ``(seed, slice id, j)``: the same image whatever the batch, shard or rerun.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from radlens.errors import ConfigError, InputError

if TYPE_CHECKING:
    from radlens.data.generation_prompts import PromptBuilder
    from radlens.io.prepared import PreparedDataset
    from radlens.models.generator import Generator

# Prompt fields that describe the acquisition: taken from the target contrast, never from the source slice.
CONTRAST_FIELDS = ("contrast", "echo_time", "repetition_time", "inversion_time", "flip_angle")


@dataclass(frozen=True)
class SourceMask:
    """One source slice whose label map conditions the generation."""

    key: str  # the source slice_id
    row: int  # its row in the source slices table
    series_id: str
    patient_id: str
    split: str
    slice_index: int
    position: float
    plane: str
    labels: tuple[int, ...]
    foreground: float
    prompt: str


def candidate_seed(seed: int, key: str, candidate: int) -> int:
    """The recorded seed of candidate ``candidate`` of mask ``key`` (31 bits of a SHA-256)."""
    digest = hashlib.sha256(f"{seed}|{key}|{candidate}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def source_contrasts(generator: Generator, given: Sequence[str] | None) -> list[str] | None:
    """The contrast classes whose masks are used: ``given``, else the ControlNet's training source, else all (None)."""
    if given:
        return list(given)
    found = (generator.extra.get("controlnet") or {}).get("source")
    return list(found) if found else None


def target_contrast(generator: Generator, given: str | None) -> str:
    """The contrast the prompts ask for: ``given``, else the ControlNet's (first) training target; checked
    against the contrasts the generator knows."""
    contrast = given or next(iter((generator.extra.get("controlnet") or {}).get("target") or []), None)
    if not contrast:
        raise ConfigError(f"{generator.bundle}: the bundle records no target contrast; give --contrast (e.g. T2w)")
    known = sorted(generator.contrast_fields) or sorted(generator.prompts.attributes if generator.prompts else [])
    if known and contrast not in known:
        raise ConfigError(f"--contrast {contrast!r}: the generator {generator.bundle} knows {', '.join(known)}")
    return contrast


def check_labels(generator: Generator, ds: PreparedDataset) -> None:
    """InputError naming the dataset card when its label table does not fit the ControlNet's."""
    from radlens.prepare.masks import conflict

    card = ds.path / "dataset.json"
    labels = ds.labels
    if not [k for k in labels if k > 0]:
        raise InputError(card, "no mask labels: synthesis is conditioned on the masks of a prepared dataset")
    assert generator.controlnet is not None
    top = int(generator.controlnet.num_labels) - 1
    if max(labels) > top:
        raise InputError(card, f"label ids up to {max(labels)}, but the ControlNet of {generator.bundle} knows ids 0..{top}")
    why = conflict(generator.labels, labels, f"the generator {generator.bundle}") if generator.labels else None
    if why is not None:
        raise InputError(card, why)


def target_prompt(generator: Generator, builder: PromptBuilder, series_id: str, present: Sequence[int], contrast: str,
                  structures: bool) -> str:
    """The prompt for one source slice: the target contrast's fields, the slice's plane and body part,
    and (``structures``) the names of the labels ``present``."""
    fields = {k: v for k, v in builder.fields(series_id).items() if k not in CONTRAST_FIELDS and v is not None}
    names = builder.structure_names(present) if structures else []
    return generator.prompt(contrast, names, **fields)


def source_masks(ds: PreparedDataset, generator: Generator, builder: PromptBuilder, contrast: str,
                 contrasts: Sequence[str] | None, splits: Sequence[str], min_foreground: float,
                 structures: bool) -> tuple[list[SourceMask], int]:
    """The source masks in slice-table order, and how many were skipped as near-empty."""
    slices = ds.slices
    if slices is None:
        raise InputError(ds.path, "a 3D dataset: synthesis generates 2D slices; prepare the source with dims 2")
    chosen = slices["split"].isin(list(splits)).to_numpy() & (slices["mask_path"].fillna("") != "").to_numpy()
    if contrasts is not None:
        if "contrast" not in ds.series.columns:
            raise InputError(ds.path / "series.parquet", "has no 'contrast' column: source masks cannot be chosen by contrast")
        wanted = set(ds.series.loc[ds.series["contrast"].isin(list(contrasts)), "series_id"])
        chosen &= slices["series_id"].isin(wanted).to_numpy()
    rows = np.flatnonzero(chosen)
    if len(rows) == 0:
        which = f"contrast {', '.join(contrasts)}" if contrasts else "any contrast"
        raise InputError(ds.path, f"no slice with a mask of {which} in split(s) {', '.join(splits)}")
    out, skipped = [], 0
    for row in rows:
        mask = np.asarray(ds.slice_mask(int(row)))
        fraction = float(np.count_nonzero(mask)) / mask.size
        if fraction <= min_foreground:
            skipped += 1
            continue
        s = slices.iloc[row]
        present = tuple(int(i) for i in np.unique(mask) if i > 0)
        out.append(SourceMask(
            key=str(s["slice_id"]), row=int(row), series_id=str(s["series_id"]), patient_id=str(s["patient_id"]),
            split=str(s["split"]), slice_index=int(s["slice_index"]), position=float(s["position"]),
            plane=str(s["plane"]), labels=present, foreground=float(s["foreground"]),
            prompt=target_prompt(generator, builder, str(s["series_id"]), present, contrast, structures),
        ))
    return out, skipped

"""``radlens synth GENERATOR DATA OUT``: filtered synthetic labelled images of a target contrast from source masks.

MRGen's data engine (``synthesize_*_filter_multi.py``): for every source mask (:mod:`radlens.synth.sources`)
generate ``candidates`` images with recorded seeds (target-contrast prompt + the mask through the
ControlNet, :mod:`radlens.synth.generate`), segment each with a segmenter bundle and keep the best
``keep`` by the segmentation-agreement filter (:mod:`radlens.synth.filter`), and write the kept images
with their conditioning masks as a prepared dataset (:mod:`radlens.synth.output`).

Resumable and sharded like ``radlens prepare``: every mask's result (all candidates' seeds and scores,
the kept images) is written atomically to ``OUT/work/`` with a fingerprint of everything that decides it
(the networks' weights, prompt, mask, sampler and filter settings, seed); a rerun reuses every intact
record and generates only the rest. ``--shard i/n`` processes the i-th of n consecutive blocks of the
masks into the same OUT (a shared folder); whichever run finds every mask done writes the dataset, so the
last shard to finish (or any plain rerun, which then generates nothing) completes it.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from radlens.common.sharding import Shard
from radlens.errors import ConfigError, InputError
from radlens.synth.filter import FilterConfig
from radlens.synth.generate import SamplerConfig

if TYPE_CHECKING:
    from radlens.io.prepared import PreparedDataset
    from radlens.models.generator import Generator
    from radlens.models.segmenter import Segmenter
    from radlens.prepare.dataset import SeriesRecord
    from radlens.synth.sources import SourceMask

Select = Literal["agreement", "first"]
STATE = "synth.json"


def _device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _load_segmenter(path: str, ds: PreparedDataset) -> Segmenter:
    """The segmenter bundle, checked to judge 2D slices with the dataset's label ids."""
    from radlens.models.bundle import load_model
    from radlens.models.segmenter import segmenter_labels
    from radlens.prepare.masks import conflict

    model = load_model(path, kind="segmenter")
    if int(model.spatial_dims) != 2:
        raise InputError(path, f"a {model.spatial_dims}D segmenter; the filter segments 2D slices")
    why = conflict(segmenter_labels(path), ds.labels, f"the segmenter {path}")
    if why is not None:
        raise InputError(ds.path / "dataset.json", why)
    return model.eval()


def _check_out(out: Path) -> None:
    """InputError unless OUT is missing, empty, or an output of ``radlens synth`` (a rerun or another shard)."""
    if out.exists() and not out.is_dir():
        raise InputError(out, "is a file, not an output folder")
    if out.is_dir() and any(out.iterdir()) and not ((out / STATE).is_file() or list(out.glob("synth-shard-*.json"))):
        raise InputError(out, "holds files radlens synth did not write; choose another output folder")


def _digest(generator: Generator, segmenter: Segmenter | None, settings: dict[str, Any]) -> str:
    """Hash of what decides every image and score: the networks' weights and prompts, and the settings."""
    from radlens.models.components import weights_digest
    from radlens.prepare.dataset import config_hash

    nets = {name: weights_digest(part) for name, part in (("vae", generator.vae), ("unet", generator.unet),
                                                          ("text", generator.text), ("controlnet", generator.controlnet))}
    if segmenter is not None:
        nets["segmenter"] = weights_digest(segmenter)
    return config_hash({"weights": nets, "prompts": generator.extra.get("prompts"), "settings": settings})


def _mask_fingerprint(digest: str, mask: SourceMask, array: np.ndarray) -> str:
    import hashlib

    from radlens.prepare.dataset import config_hash

    content = hashlib.sha256(np.ascontiguousarray(array, dtype=np.int64).tobytes()).hexdigest()
    return config_hash({"run": digest, "key": mask.key, "prompt": mask.prompt, "mask": content})


def _record(mask: SourceMask, truth: np.ndarray, seeds: Sequence[int], images: np.ndarray, segs: np.ndarray | None,
            keep: int, select: Select, cfg: FilterConfig, labels: dict[int, str], fingerprint: str, out: Path) -> SeriesRecord:
    """Choose the kept candidates of one mask (label map ``truth``), save their images and return its work record."""
    from radlens.common.atomic import save_array_atomic
    from radlens.prepare.dataset import WORK, SeriesRecord, safe_name
    from radlens.synth.filter import agreement, scores_json
    from radlens.synth.filter import select as choose

    scores = [agreement(seg, truth) for seg in segs] if segs is not None else None
    if select == "agreement":
        assert scores is not None
        chosen = choose(scores, keep, cfg)
        kept, level, thresholds = list(chosen.kept), chosen.level, chosen.thresholds
    else:
        kept, level, thresholds = list(range(min(keep, len(seeds)))), None, None
    array_path = f"{WORK}/{safe_name(mask.key)}.npy"
    save_array_atomic(out / array_path, np.asarray(images[kept], dtype=np.float32).reshape(len(kept), *images.shape[1:]))
    candidates = []
    for j, seed in enumerate(seeds):
        entry: dict[str, Any] = {"candidate": j, "seed": int(seed), "kept_rank": kept.index(j) if j in kept else -1,
                                 "mean_dice": None, "mean_iou": None, "scores": None}
        if scores is not None:
            entry.update(mean_dice=round(scores[j].mean_dice, 6), mean_iou=round(scores[j].mean_iou, 6),
                         scores=scores_json(scores[j], labels))
        candidates.append(entry)
    row = {"array_path": array_path, "key": mask.key, "n_kept": len(kept), "level": level,
           "thresholds": list(thresholds) if thresholds else None}
    return SeriesRecord(fingerprint=fingerprint, row=row, slices=candidates)


def _process(todo: list[tuple[SourceMask, str]], ds: PreparedDataset, generator: Generator, segmenter: Segmenter | None,
             n_candidates: int, keep: int, select: Select, cfg: FilterConfig, sampler: SamplerConfig, seed: int,
             out: Path) -> None:
    """Generate, score, select and record ``todo`` (mask, fingerprint), several masks per batch."""
    from tqdm import tqdm

    from radlens.prepare.dataset import WorkRecords
    from radlens.synth.generate import Job, PromptCache, generate
    from radlens.synth.sources import candidate_seed

    work, cache = WorkRecords(out), PromptCache(generator)
    per_group = max(1, sampler.batch_size // n_candidates)
    with tqdm(total=len(todo), desc="synth", unit="mask", file=sys.stderr, disable=None) as bar:
        for start in range(0, len(todo), per_group):
            group = todo[start : start + per_group]
            jobs = []
            for mask, _ in group:
                array = np.asarray(ds.slice_mask(mask.row))
                jobs.append(Job(mask.prompt, array, tuple(candidate_seed(seed, mask.key, j) for j in range(n_candidates))))
            results = generate(generator, jobs, sampler, cache, ds.value_range, segmenter)
            for (mask, fingerprint), job, (images, segs) in zip(group, jobs, results):
                record = _record(mask, job.mask, job.seeds, images, segs, keep, select, cfg, ds.labels, fingerprint, out)
                work.save(mask.key, record)
                bar.update(1)


@dataclasses.dataclass
class SynthSummary:
    """What a ``radlens synth`` run did: masks in all and in this run's part, records reused and made,
    near-empty masks skipped, and (once every mask is done) the written dataset's card."""

    masks: int
    mine: int
    reused: int
    generated: int
    skipped_empty: int
    card: dict[str, Any] | None


def synthesize(
    generator: str | Path,
    data: str | Path,
    out: str | Path,
    contrast: str | None = None,
    segmenter: str | Path | None = None,
    candidates: int = 20,
    keep: int = 2,
    select: Select = "agreement",
    filter: FilterConfig | None = None,
    sampler: SamplerConfig | None = None,
    source_contrasts: Sequence[str] | None = None,
    splits: Sequence[str] = ("train", "validation"),
    min_foreground: float = 0.005,
    structures: bool = True,
    seed: int = 0,
    device: str = "auto",
    shard: str | None = None,
    limit: int | None = None,
) -> SynthSummary:
    """The Python API of ``radlens synth`` (arguments: see :func:`synth`); returns what was done."""
    from radlens.common.atomic import check_apart, write_json_atomic
    from radlens.common.runinfo import run_info
    from radlens.data.generation_prompts import PromptBuilder
    from radlens.io.prepared import SPLITS, PreparedDataset
    from radlens.models.generator import load_generator
    from radlens.prepare.dataset import WorkRecords, remove_temporaries
    from radlens.synth.output import assemble
    from radlens.synth.sources import check_labels, source_masks, target_contrast, target_prompt
    from radlens.synth.sources import source_contrasts as chosen_sources

    cfg, sampling = filter or FilterConfig(), sampler or SamplerConfig()
    checks = [(keep >= 1, f"keep must be >= 1, got {keep}"),
              (candidates >= keep, f"candidates ({candidates}) must be >= keep ({keep})"),
              (sampling.batch_size >= 1 and sampling.steps >= 1, "sampler.batch_size and sampler.steps must be >= 1"),
              (0.0 <= min_foreground < 1.0, f"min_foreground must be in [0, 1), got {min_foreground}"),
              (bool(splits) and set(splits) <= set(SPLITS), f"splits must be among {', '.join(SPLITS)}, got {list(splits)}"),
              (select != "agreement" or segmenter is not None,
               "the agreement filter needs --segmenter (a `radlens train seg` bundle); --select first keeps candidates unfiltered"),
              (select in ("agreement", "first"), f"select must be agreement or first, got {select!r}"),
              (limit is None or limit >= 1, f"limit must be >= 1, got {limit}")]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    part = Shard.parse(shard)
    ds = PreparedDataset(data)
    out = Path(out).resolve()
    check_apart(ds.path.resolve(), out)
    _check_out(out)
    gen = load_generator(generator)
    if gen.controlnet is None:
        raise InputError(gen.bundle or generator, "has no ControlNet: synthesis needs the bundle of `radlens train controlnet`")
    if gen.prompts is None:
        raise InputError(gen.bundle or generator, "records no prompt template (extra.prompts)")
    shape = ds.card.get("array_shape")
    if shape is None or tuple(int(s) for s in shape) != tuple(gen.image_shape):
        raise InputError(ds.path / "dataset.json", f"slices of shape {shape}, but the generator {gen.bundle} makes "
                                                   f"{list(gen.image_shape)} images")
    check_labels(gen, ds)
    target = target_contrast(gen, contrast)
    sources = chosen_sources(gen, source_contrasts)
    seg = _load_segmenter(str(segmenter), ds) if segmenter is not None else None
    dev = _device(device)
    gen.to(dev)
    if seg is not None:
        seg.to(dev)
    builder = PromptBuilder(ds, gen.prompts)
    masks, skipped = source_masks(ds, gen, builder, target, sources, splits, min_foreground, structures)
    masks = masks[:limit] if limit is not None else masks
    n_candidates = candidates if select == "agreement" else keep
    settings = {"contrast": target, "structures": structures, "candidates": n_candidates, "keep": keep, "select": select,
                "filter": dataclasses.asdict(cfg) if select == "agreement" else None, "seed": seed,
                "sampler": {k: v for k, v in dataclasses.asdict(sampling).items() if k != "batch_size"},
                "value_range": list(ds.value_range)}
    digest = _digest(gen, seg, settings)
    fingerprints = {m.key: _mask_fingerprint(digest, m, np.asarray(ds.slice_mask(m.row))) for m in masks}
    if part is None:
        remove_temporaries(out)  # a sharded run leaves the others' files in progress alone
    work = WorkRecords(out)
    mine = masks if part is None else masks[part.block(len(masks))]
    done = {m.key: r for m in mine if (r := work.load(m.key, fingerprints[m.key])) is not None}
    todo = [(m, fingerprints[m.key]) for m in mine if m.key not in done]
    config = {"generator": str(generator), "data": str(data), "out": str(out), "segmenter": None if segmenter is None else str(segmenter),
              "source_contrasts": sources, "splits": list(splits), "min_foreground": min_foreground, "limit": limit,
              "shard": str(part) if part else None, **settings, "sampler": dataclasses.asdict(sampling)}
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / (STATE if part is None else f"synth-{part.tag}.json"), run_info("synth", config, seed))
    _process(todo, ds, gen, seg, n_candidates, keep, select, cfg, sampling, seed, out)
    records = {m.key: r for m in masks if (r := work.load(m.key, fingerprints[m.key])) is not None}
    card = None
    if len(records) == len(masks):
        levels: dict[str, int] = {}
        for r in records.values():
            name = "unfiltered" if select == "first" else ("none kept" if r.row["level"] is None else f"level {r.row['level']}")
            levels[name] = levels.get(name, 0) + 1
        synth_card = {
            "generator": str(gen.bundle), "generator_digest": digest, "segmenter": config["segmenter"],
            "contrast": target, "source_contrasts": sources, "splits": list(splits), "select": select,
            "candidates": n_candidates, "keep": keep, "filter": settings["filter"], "sampler": settings["sampler"],
            "seed": seed, "structures_in_prompt": structures, "min_foreground": min_foreground,
            "counts": {"masks": len(masks), "skipped_near_empty": skipped, "masks_by_level": levels,
                       "kept": int(sum(int(r.row["n_kept"]) for r in records.values()))},
        }
        text = target_prompt(gen, builder, masks[0].series_id, [], target, False) if masks else ""
        card = assemble(out, ds, masks, records, target, gen.contrast_fields.get(target, {}), text, synth_card) or None
        if card is None:
            raise InputError(ds.path, f"no candidate passed the filter for any of the {len(masks)} masks: nothing to write "
                                      f"(scores in {out / 'work'}; relax --filter.* or train the generator longer)")
    return SynthSummary(len(masks), len(mine), len(done), len(todo), skipped, card)


def synth(
    generator: str,
    data: str,
    out: str,
    contrast: str | None = None,
    segmenter: str | None = None,
    candidates: int = 20,
    keep: int = 2,
    select: Select = "agreement",
    filter: FilterConfig = FilterConfig(),
    sampler: SamplerConfig = SamplerConfig(),
    source_contrasts: list[str] | None = None,
    splits: list[str] = ["train", "validation"],  # noqa: B006 (jsonargparse shows it as the default)
    min_foreground: float = 0.005,
    structures: bool = True,
    seed: int = 0,
    device: str = "auto",
    shard: str | None = None,
    limit: int | None = None,
) -> int:
    """Generate filtered synthetic labelled images of a target contrast from the masks of a prepared dataset.

    For every source mask: ``candidates`` images with recorded seeds (the target-contrast prompt and
    the mask through the ControlNet), each segmented by ``segmenter``; the best ``keep`` by agreement with
    the mask pass the filter (MRGen's rule: per-label and mean IoU thresholds over the 5 best; when too few
    pass, thresholds drop 0.1 and fewer are kept). OUT becomes a prepared dataset (images + the
    conditioning masks, patients and splits of the source; per slice its seed, prompt and filter scores;
    every candidate in extras/candidates.parquet). Rerun to resume; --shard i/n splits the masks
    between runs writing into one OUT.

    Args:
        generator: the bundle (or run folder) of ``radlens train controlnet``.
        data: prepared 2D dataset with masks (the source contrast's label maps).
        out: output folder: a prepared dataset once every mask is done (its work/ records let a rerun resume).
        contrast: the target contrast the prompts ask for (default: the ControlNet's training target, e.g. T2w).
        segmenter: segmenter bundle (or run folder) of ``radlens train seg`` judging the candidates; required by
            the agreement filter.
        candidates: images generated per mask (MRGen: 20).
        keep: images kept per mask (MRGen: 2).
        select: agreement (the segmentation-agreement filter) or first (the first ``keep`` candidates, unfiltered;
            scores are still recorded when a segmenter is given).
        filter: the filter's metric (iou/dice), label and mean thresholds, shortlist and relaxation steps.
        sampler: DDIM steps, guidance scale, ControlNet conditioning scale, images per network call.
        source_contrasts: contrast classes whose masks are used (default: the ControlNet's training source; all if unrecorded).
        splits: splits of the source whose masks are used (test patients are left out by default, so they stay
            held out); each synthetic image keeps its source patient's split.
        min_foreground: masks whose foreground covers at most this fraction of the slice are skipped (MRGen: 0.005).
        structures: name the mask's structures in the prompt (as MRGen does).
        seed: the base of every candidate's seed (each candidate's seed is recorded).
        device: auto, cpu, cuda, cuda:1, ...
        shard: i/n (i from 0): process only the i-th of n blocks of the masks; all shards write into the same OUT.
        limit: use only the first N masks, for a quick look.
    """
    summary = synthesize(generator, data, out, contrast, segmenter, candidates, keep, select, filter, sampler,
                         source_contrasts, splits, min_foreground, structures, seed, device, shard, limit)
    what = f"{summary.mine} of {summary.masks} masks ({summary.reused} done before, {summary.skipped_empty} near-empty skipped)"
    if summary.card is None:
        print(f"shard {shard}: {what}; the dataset is written once every shard is done (rerun without --shard to finish) -> {out}")
    else:
        counts = summary.card["counts"]
        print(f"synth: {what} -> {counts['slices']} images in {counts['series']} series -> {out}")
    return 0

"""``radlens prepare``: import a source layout into a prepared dataset folder.

One function per arrow of the design: an importer finds the series (``discover``) and reads
each one (``load``); every series then goes through the same steps (check, spatial,
intensity, slicing or 3D, caption) and is written as an array plus a work record; labels,
bins and splits are assigned globally when the tables are assembled. Series run in a process
pool when ``workers > 1`` (:mod:`radlens.prepare.workers`: the workers end with this process); the
result does not depend on the number of workers. :func:`prepare_shard` prepares one shard of a
scaled-out run (:mod:`radlens.prepare.shards` merges them into the dataset one run writes).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from radlens.common.atomic import check_apart, save_array_atomic
from radlens.common.sharding import Shard
from radlens.errors import ConfigError, InputError
from radlens.io.phi import check_key_outside
from radlens.prepare.binning import BinningConfig
from radlens.prepare.captions import CaptionConfig
from radlens.prepare.dataset import (
    ARRAYS,
    MASKS,
    TABLE_COLUMNS,
    Discovery,
    Failure,
    SeriesItem,
    SeriesRecord,
    WorkRecords,
    config_hash,
    fingerprint,
    remove_temporaries,
    safe_name,
)
from radlens.prepare.intensity import HuRule, IntensityConfig
from radlens.prepare.labels import LabelConfig
from radlens.prepare.slicing import SliceConfig
from radlens.prepare.spatial import SpatialConfig
from radlens.prepare.splits import SplitConfig

if TYPE_CHECKING:
    from radlens.io.prepared import PreparedDataset
    from radlens.io.volume import Volume
    from radlens.prepare.shard_state import ShardState

Source = Literal["bids", "dicom", "ct-rate", "m3d", "csv", "nnunet", "deeplesion", "clear"]
SOURCES: dict[str, str] = {
    "bids": "radlens.prepare.importers.bids",
    "dicom": "radlens.prepare.importers.dicom",
    "ct-rate": "radlens.prepare.importers.ctrate",
    "m3d": "radlens.prepare.importers.m3d",
    "csv": "radlens.prepare.importers.csv",
    "nnunet": "radlens.prepare.importers.nnunet",
    "deeplesion": "radlens.prepare.importers.deeplesion",
    "clear": "radlens.prepare.importers.clear",
}


@dataclass(frozen=True)
class PrepareConfig:
    """Everything that decides what ``radlens prepare`` writes.

    ``dims``: 2 writes slices (``slices.parquet``), 3 writes whole volumes. ``already_hu``
    (CT-RATE): ``"auto"`` decides per volume (files under ``*_fixed`` hold HU, others take the
    metadata table's RescaleSlope/Intercept, a per-volume flag column such as ``StoredAsHU``
    decides where present); ``"auto-column"`` needs that flag column; ``"yes"`` every file holds
    HU; ``"no"`` apply RescaleSlope/Intercept to every file. Every volume is checked on its data
    (air near -1000 HU, body in the soft-tissue range) and refused when it disagrees.
    ``patient_from`` (M3D, CSV): the patient of a sample without a patient id: ``folder`` (the
    image's folder), ``parent`` (the folder above), or a regular expression on the image's path
    relative to the source whose group ``patient`` (or first group) is the id. ``source_valid_split``: where a
    source's own validation part (CT-RATE ``valid``) goes; its ``train`` part is split by
    patient with ``split``. ``phi_key_file``: the file holding the secret key of the keyed
    patient pseudonyms (DICOM); None takes ``$RADLENS_PHI_KEY`` or the user's key file
    (:func:`radlens.io.phi.load_phi_key`); only the key's fingerprint is recorded, never the key.
    """

    dims: Literal[2, 3] = 2
    dtype: Literal["float32", "float16"] = "float32"
    already_hu: HuRule = "auto"
    patient_from: str = "folder"
    source_valid_split: Literal["test", "validation"] = "test"
    phi_key_file: str | None = None
    spatial: SpatialConfig = field(default_factory=SpatialConfig)
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    slicing: SliceConfig = field(default_factory=SliceConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    binning: BinningConfig = field(default_factory=BinningConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    split: SplitConfig = field(default_factory=SplitConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def series_digest(self) -> str:
        """Hash of the settings that change a single series' array or row (not labels/splits, nor where
        the key file lies: another key gives other ids, and so other fingerprints, anyway)."""
        d = self.to_dict()
        for key in ("binning", "labels", "split", "source_valid_split", "phi_key_file"):
            d.pop(key)
        return config_hash(d)


def importer(source: str) -> ModuleType:
    """The importer module of a source name."""
    if source not in SOURCES:
        raise ConfigError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    return importlib.import_module(SOURCES[source])


def default_config(source: str) -> PrepareConfig:
    """The source's defaults (e.g. CT-CLIP geometry for CT-RATE, MR-CLIP slices for BIDS)."""
    return importer(source).default_config()


def check_dims(volume: Volume, cfg: PrepareConfig, path: str) -> None:
    """A 2D image cannot become a 3D training volume (readers already refuse NaN/inf and all-zero data)."""
    if cfg.dims == 3 and min(volume.shape) == 1:
        raise InputError(path, f"2D image (shape {list(volume.shape)}) where a 3D volume is needed")


def load_label_map(item: SeriesItem, volume: Volume, module: ModuleType) -> Volume:
    """The item's mask as label ids on ``volume``'s voxel grid, or InputError naming the mask file.

    An importer may read its own masks (``load_mask(item)``, e.g. PNG masks of 2D images);
    otherwise the mask is a NIfTI file. It must have the image's shape and affine.
    """
    from radlens.prepare.masks import check_aligned, to_label_map

    reader = getattr(module, "load_mask", None)
    if reader is not None:
        mask = reader(item)
    else:
        from radlens.io.nifti import read_mask

        mask = read_mask(item.mask)  # type: ignore[arg-type]
    check_aligned(mask, volume)
    return to_label_map(mask, item.mask_labels, item.mask_binary)


def prepare_series(item: SeriesItem, cfg: PrepareConfig, source: str, out: Path) -> SeriesRecord:
    """Read one series (and its label map), preprocess it, write its arrays; return its table rows.

    A label map goes through the image's spatial steps by nearest neighbour (and, for 2D, the
    same slice selection) and is written to ``masks/`` with the image array's shape; its label
    ids present and their boxes become table columns.
    """
    from radlens.prepare.captions import make_caption
    from radlens.prepare.intensity import apply_intensity
    from radlens.prepare.masks import lesion_part, mask_columns, open_name, present, scheme_json, storage_dtype
    from radlens.prepare.slicing import acquisition_plane, extract_mask_slices, extract_slices
    from radlens.prepare.spatial import apply_spatial_pair

    module = importer(source)
    volume = module.load(item, cfg)
    check_dims(volume, cfg, item.source_path)
    label_map = load_label_map(item, volume, module) if item.mask else None
    plane = acquisition_plane(volume.slice_normal) if volume.slice_normal is not None else "unknown"
    meta = volume.metadata
    processed, mask = apply_spatial_pair(volume, label_map, cfg.spatial)
    if (meta.Modality or "").upper() in ("CT", "MR", "MRI"):
        processed = apply_intensity(processed, cfg.intensity)
    name = safe_name(item.series_id)
    array_path = f"{ARRAYS}/{name}.npy"
    mask_path = f"{MASKS}/{name}.npy" if mask is not None else ""
    slice_rows: list[dict[str, Any]] = []
    mask_array = None
    if cfg.dims == 3:
        array = processed.array
        if mask is not None:
            mask_array = mask.array
    else:
        array, infos = extract_slices(processed, cfg.slicing, mask=None if mask is None else lesion_part(mask, item.mask_labels))
        if len(infos) == 0:
            raise InputError(item.source_path, "no slice kept after slicing (all background?)")
        if mask is not None:
            mask_array = extract_mask_slices(mask, infos, cfg.slicing)
        elif item.lesion is not None:  # a source's slice-level flag, without a mask (CLEAR)
            for info in infos:
                info["lesion"] = int(item.lesion)
        for row, info in enumerate(infos):
            per_slice = mask_columns(mask_array[row] if mask_array is not None else None)
            slice_rows.append({"slice_id": f"{item.series_id}:{info['slice_index']}", "row": row, **info, **per_slice})
    labels: dict[str, str] = {}
    if mask_array is not None and label_map is not None:
        scheme = item.mask_labels or {i: open_name(i) for i in [0, *present(label_map.array)]}
        labels = scheme_json(scheme)
        mask_array = np.asarray(mask_array).astype(storage_dtype(scheme, label_map.array), copy=False)
        save_array_atomic(out / mask_path, mask_array)
    else:
        (out / MASKS / f"{name}.npy").unlink(missing_ok=True)  # a mask an earlier run wrote
    save_array_atomic(out / array_path, np.asarray(array, dtype=cfg.dtype))
    text = item.text if item.text is not None else make_caption(meta, plane, cfg.caption)
    row: dict[str, Any] = {
        "series_id": item.series_id,
        "patient_id": item.patient_id,
        "study_id": item.study_id,
        "scan_id": item.scan_id or item.series_id,
        "source_path": item.source_path,
        "array_path": array_path,
        "mask_path": mask_path,
        "modality": meta.Modality or item.modality or "",
        "plane": plane,
        "orig_shape": list(volume.shape),
        "orig_spacing": [round(s, 6) for s in volume.spacing],
        "shape": list(processed.shape),
        "spacing": [round(s, 6) for s in processed.spacing],
        "text": text,
        # 3D: the volume's label ids and boxes in (X, Y, Z); 2D: over the stack (row, H, W).
        **mask_columns(None if mask_array is None else (mask_array[0] if cfg.dims == 3 else mask_array)),
        **meta.to_dict(),
        **item.fields,
        **meta.extra.get(TABLE_COLUMNS, {}),  # what the importer measured while reading (CT-RATE: the HU check)
    }
    row["modality"] = row.pop("Modality") or item.modality or ""
    return SeriesRecord(fingerprint="", row=row, slices=slice_rows, labels=labels)


def _run_one(item: SeriesItem, cfg: PrepareConfig, source: str, out: Path, digest: str) -> tuple[str, SeriesRecord | Failure]:
    """Worker entry: prepare and record one series, turning bad input into a Failure; with its series id."""
    try:
        record = prepare_series(item, cfg, source, out)
    except InputError as err:
        named = Path(err.path).name if err.path else ""
        where = "" if not named or item.source_path.endswith(named) else f"{named}: "
        return item.series_id, Failure(item.source_path, "prepare", where + err.reason)
    except (OSError, ValueError, RuntimeError, EOFError) as err:  # library errors on odd files
        return item.series_id, Failure(item.source_path, "prepare", f"{type(err).__name__}: {err}")
    record.fingerprint = digest
    WorkRecords(out).save(item.series_id, record)
    return item.series_id, record


def _execute(
    todo: list[tuple[SeriesItem, str]], cfg: PrepareConfig, source: str, out: Path, workers: int
) -> Iterator[tuple[str, SeriesRecord | Failure]]:
    if workers <= 1:
        for item, digest in todo:
            yield _run_one(item, cfg, source, out, digest)
        return
    from radlens.prepare.workers import run_in_processes

    yield from run_in_processes(_run_one, [(item, cfg, source, out, digest) for item, digest in todo], workers)


@dataclass
class _Job:
    """A discovered source: what :func:`prepare_dataset` and :func:`prepare_shard` share."""

    source: str
    module: ModuleType
    cfg: PrepareConfig
    root: Path
    out: Path
    found: Discovery
    items: list[SeriesItem]
    digests: dict[str, str]

    def notes(self) -> tuple[str, ...]:
        return (*getattr(self.module, "NOTES", ()), *self.found.notes)


def _start(source: str, input: str | Path, output: str | Path, cfg: PrepareConfig | None, limit: int | None) -> _Job:
    """Check the folders, discover the series (the first ``limit``) and fingerprint them."""
    module = importer(source)
    cfg = cfg if cfg is not None else module.default_config()
    root = Path(input).resolve()
    out = Path(output).resolve()
    if not root.exists():
        raise InputError(root, "does not exist")
    check_apart(root, out)
    check_key_outside(cfg.phi_key_file, [out])
    found = module.discover(root, cfg)
    _check_same_key(out, found.phi_key_fingerprint)
    remove_temporaries(out)
    items = found.items if limit is None else found.items[:limit]
    series_digest = cfg.series_digest()
    digests = {item.series_id: fingerprint(item, series_digest) for item in items}
    return _Job(source, module, cfg, root, out, found, items, digests)


def _check_same_key(out: Path, key_fingerprint: str | None) -> None:
    """An output made with another pseudonym key is refused: its ids would not match this run's."""
    from radlens.prepare.dataset import CARD
    from radlens.prepare.shard_state import STATE

    for name, field_name in ((CARD, "pseudonym_key_fingerprint"), (STATE, "phi_key_fingerprint")):
        try:
            earlier = json.loads((out / name).read_text(encoding="utf-8")).get(field_name)
        except (OSError, ValueError, AttributeError):
            continue
        if earlier and key_fingerprint and earlier != key_fingerprint:
            raise ConfigError(f"{out} was prepared with the pseudonym key of fingerprint {earlier}, this run's key has "
                              f"{key_fingerprint}: the ids would differ. Use the same key (--phi_key_file, $RADLENS_PHI_KEY) "
                              "or another output folder")


def _prepare_items(
    job: _Job, items: list[SeriesItem], workers: int, strict: bool
) -> tuple[dict[str, SeriesRecord], dict[str, Failure]]:
    """Prepare ``items`` (reusing series already prepared alike): their records and failures by series id."""
    from tqdm import tqdm

    records: dict[str, SeriesRecord] = {}
    failed: dict[str, Failure] = {}
    todo: list[tuple[SeriesItem, str]] = []
    work = WorkRecords(job.out)
    for item in items:
        done = work.load(item.series_id, job.digests[item.series_id])
        if done is not None:
            records[item.series_id] = done
        else:
            todo.append((item, job.digests[item.series_id]))
    bar = tqdm(total=len(items), initial=len(records), desc=f"prepare {job.source}", unit="series", file=sys.stderr)
    with bar:
        for item_id, result in _execute(todo, job.cfg, job.source, job.out, workers):
            bar.update(1)
            if isinstance(result, Failure):
                failed[item_id] = result
                _report([result], strict, write=lambda line: bar.write(line, file=sys.stderr))
            else:
                records[item_id] = result
    return records, failed


def prepare_dataset(
    source: Source,
    input: str | Path,
    output: str | Path,
    cfg: PrepareConfig | None = None,
    workers: int = 1,
    limit: int | None = None,
    strict: bool = False,
) -> PreparedDataset:
    """Import ``input`` (a ``source`` layout) into the prepared dataset folder ``output``.

    Bad inputs are skipped with one console line each and listed in ``failures.csv`` (those
    found while discovering first, then the series that failed, in discovery order); with
    ``strict`` the first one raises. Series already prepared with the same inputs and config
    are reused, so an interrupted run can be rerun. Raises InputError if nothing was usable.
    """
    from radlens.io.prepared import PreparedDataset
    from radlens.prepare.dataset import assemble

    job = _start(source, input, output, cfg, limit)
    _report(job.found.failures, strict)
    records, failed = _prepare_items(job, job.items, workers, strict)
    ordered = [records[i.series_id] for i in job.items if i.series_id in records]
    failures = [*job.found.failures, *(failed[i.series_id] for i in job.items if i.series_id in failed)]
    assemble(
        job.out, source, job.root, job.cfg, ordered, failures, job.found.findings,
        protocol_labels=getattr(job.module, "PROTOCOL_LABELS", False), notes=job.notes(),
        phi_key_fingerprint=job.found.phi_key_fingerprint,
    )
    if not ordered:
        raise InputError(job.root, f"nothing usable was produced ({len(failures)} inputs failed, see {job.out / 'failures.csv'})")
    return PreparedDataset(job.out)


def prepare_shard(
    source: Source,
    input: str | Path,
    output: str | Path,
    shard: Shard,
    cfg: PrepareConfig | None = None,
    workers: int = 1,
    limit: int | None = None,
    strict: bool = False,
) -> ShardState:
    """Prepare the series of the patients that fall to ``shard`` into the shard folder ``output``
    (``radlens.prepare.shards``: every shard discovers the whole source; ``radlens prepare merge``
    assembles the shards into the dataset one run would write). Resumes like :func:`prepare_dataset`."""
    from dataclasses import asdict

    from radlens.common.atomic import write_csv_atomic
    from radlens.prepare.dataset import FAILURES, failures_frame
    from radlens.prepare.shard_state import STATE, ShardState

    job = _start(source, input, output, cfg, limit)
    (job.out / STATE).unlink(missing_ok=True)  # complete again only when this run is
    _report(job.found.failures, strict)
    mine = [item for item in job.items if shard.owns(item.patient_id)]
    records, failed = _prepare_items(job, mine, workers, strict)
    state = ShardState(
        index=shard.index, count=shard.count, source=source, root=str(job.root), config=job.cfg.to_dict(),
        items=[[item.series_id, job.digests[item.series_id]] for item in job.items],
        series=[item.series_id for item in mine if item.series_id in records],
        discovery_failures=[asdict(f) for f in job.found.failures],
        failures=[{**asdict(failed[i.series_id]), "series_id": i.series_id} for i in mine if i.series_id in failed],
        findings=list(job.found.findings), notes=list(job.notes()),
        protocol_labels=bool(getattr(job.module, "PROTOCOL_LABELS", False)),
        phi_key_fingerprint=job.found.phi_key_fingerprint,
    )
    failures = [*job.found.failures, *(failed[i.series_id] for i in mine if i.series_id in failed)]
    write_csv_atomic(job.out / FAILURES, failures_frame(failures))
    state.write(job.out)
    return state


def _report(failures: list[Failure], strict: bool, write: Any = None) -> None:
    for failure in failures:
        if strict:
            raise InputError(failure.path, failure.reason)
        (write or (lambda line: print(line, file=sys.stderr)))(failure.line())


def prepare(
    source: Source,
    input: Path,
    output: Path,
    dims: Literal[2, 3] | None = None,
    dtype: Literal["float32", "float16"] | None = None,
    already_hu: HuRule | None = None,
    patient_from: str | None = None,
    source_valid_split: Literal["test", "validation"] | None = None,
    phi_key_file: str | None = None,
    spatial: SpatialConfig | None = None,
    intensity: IntensityConfig | None = None,
    slicing: SliceConfig | None = None,
    caption: CaptionConfig | None = None,
    binning: BinningConfig | None = None,
    labels: LabelConfig | None = None,
    split: SplitConfig | None = None,
    workers: int = 1,
    limit: int | None = None,
    strict: bool = False,
    shard: str | None = None,
) -> int:
    """Prepare a dataset folder from SOURCE layout IN into OUT.

    Options left at None take the source's preset, ``default_config(source)`` (CT-CLIP geometry
    for ct-rate, MR-CLIP slices for bids); every option given wins over the preset, whatever its
    value. A group (``spatial``, ``split``, ...) is a whole dataclass, so a group passed here
    replaces the preset's group: its fields not named in the call are the class defaults, not the
    preset's. To change part of a group, start from the preset's:
    ``spatial=dataclasses.replace(default_config(source).spatial, pad_value=0.0)``. On the command
    line (``radlens prepare SOURCE IN OUT``, see :func:`source_command`) the preset is the
    parser's default, so ``--spatial.pad_value 0`` changes that field only and ``--print_config``
    shows the preset. Exit status 0 when something usable was produced (and, with ``--strict``,
    nothing failed).

    Args:
        source: input layout: bids, dicom, ct-rate, m3d, csv, nnunet, deeplesion or clear.
        input: the input folder (or CSV file for ``csv``); never written to.
        output: the prepared dataset folder to write (rerun to resume); must lie apart from the input's folder.
        already_hu: CT-RATE HU rule: auto (per volume: *_fixed trees hold HU, others take the metadata
            slope/intercept, a StoredAsHU-like column decides where present), auto-column, yes or no; the data is
            checked on every volume (air near -1000 HU, body in the soft-tissue range) and a volume it contradicts is refused.
        patient_from: M3D/CSV samples without a patient id: folder (the image's folder is the patient), parent
            (the folder above it), or a regular expression on the relative path whose group "patient" is the id.
        dims: 2 writes slices (slices.parquet), 3 writes whole volumes.
        dtype: the arrays' data type.
        source_valid_split: where a source's own validation part goes (CT-RATE's valid volumes).
        phi_key_file: file holding the secret key of the patient pseudonyms (default: $RADLENS_PHI_KEY,
            else ~/.config/radlens/phi.key, created on first use).
        spatial: how a volume is brought to the model's grid (spacing, crop, shape).
        intensity: CT window and output range; MRI percentile normalisation.
        slicing: which 2D slices are kept and their shape (dims 2).
        caption: the metadata caption template.
        binning: TE/TR/TI bins of the protocol labels.
        labels: the fields that make a protocol label.
        split: train/validation/test ratios, seed, stratification and folds (always by patient).
        workers: series prepared in parallel (processes; they end when this command ends).
        limit: prepare only the first N series found, for a quick look.
        strict: stop at the first bad input.
        shard: i/n (i from 0): prepare only the patients of shard i of n into OUTPUT, a shard folder;
            `radlens prepare merge` joins the n shards.
    """
    options = {
        "dims": dims, "dtype": dtype, "already_hu": already_hu, "patient_from": patient_from,
        "source_valid_split": source_valid_split,
        "phi_key_file": phi_key_file, "spatial": spatial, "intensity": intensity, "slicing": slicing,
        "caption": caption, "binning": binning, "labels": labels, "split": split,
    }
    given = {name: value for name, value in options.items() if value is not None}
    cfg = dataclasses.replace(default_config(source), **given)
    part = Shard.parse(shard)
    if part is not None:
        state = prepare_shard(source, input, output, part, cfg, workers=workers, limit=limit, strict=strict)
        print(f"shard {part}: prepared {len(state.series)} of {len(state.items)} series ({len(state.failures)} failed, "
              f"{len(state.discovery_failures)} inputs skipped) -> {output}; merge all {part.count} with `radlens prepare merge`")
        return 0
    ds = prepare_dataset(source, input, output, cfg, workers=workers, limit=limit, strict=strict)
    counts = ds.card["counts"]
    print(f"prepared {counts['series']} series ({counts.get('slices', 0)} slices), {counts['failures']} failures -> {ds.path}")
    return 0


def source_command(source: str) -> Callable[..., int]:
    """``radlens prepare SOURCE``: :func:`prepare` for one source, with its preset as defaults.

    The command's signature is ``prepare``'s without ``source``, each config option defaulting
    to ``default_config(source)``'s value, so the parser starts from the preset before parsing:
    what it resolves is the preset plus every option the user gave (a group given in part keeps
    the preset's other fields; an option equal to the generic class default still wins), and
    ``--print_config`` shows the preset.
    """
    import inspect
    from typing import get_type_hints

    preset = default_config(source)
    fields = get_type_hints(PrepareConfig)
    hints = get_type_hints(prepare)
    params = []
    for param in list(inspect.signature(prepare).parameters.values())[1:]:  # all but source
        if param.name in fields:
            param = param.replace(annotation=fields[param.name], default=getattr(preset, param.name))
        else:
            param = param.replace(annotation=hints[param.name])
        params.append(param)

    def command(*args: Any, **kwargs: Any) -> int:
        return prepare(source, *args, **kwargs)  # type: ignore[arg-type]

    args_doc = (prepare.__doc__ or "").split("Args:\n")[1]
    command.__signature__ = inspect.Signature(params, return_annotation=int)  # type: ignore[attr-defined]
    command.__name__ = command.__qualname__ = f"prepare_{source.replace('-', '_')}"
    command.__doc__ = (
        f"Prepare a dataset folder from a {source} layout INPUT into OUTPUT.\n\n"
        f"    Every option defaults to the {source} preset (--print_config shows it) and an option\n"
        "    given always wins; a group given in part (--spatial.pad_value 0) keeps the preset's\n"
        "    other fields. Exit status 0 when something usable was produced (and, with --strict,\n"
        "    nothing failed).\n\n    Args:\n"
        + "".join(line for line in args_doc.splitlines(keepends=True) if not line.lstrip().startswith("source:"))
    )
    return command


def prepare_commands() -> dict[str, Callable[..., int]]:
    """The ``radlens prepare`` subcommands: one per source (see :func:`source_command`)."""
    return {source: source_command(source) for source in SOURCES}

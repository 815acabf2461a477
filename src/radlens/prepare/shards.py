"""Scale-out: ``radlens prepare SOURCE IN DIR --shard i/n`` on many machines, then ``radlens prepare merge``.

Every shard walks the whole source (discovery is cheap next to preprocessing) and prepares the
series of the patients that fall to it (:meth:`radlens.common.sharding.Shard.owns` on the
patient id: a patient's series stay together, and which shard gets a patient depends on
neither the walk order nor the other patients). A shard folder holds ``arrays/``, ``masks/``,
``work/`` (the series' records, as in a prepared dataset), ``failures.csv`` (its own and the
discovery's) and, once complete, ``shard.json``
(:class:`radlens.prepare.shard_state.ShardState`): what was discovered, in
which order, with which config. It holds no tables and no card: splits, bins and protocol
labels are decided over the whole dataset, by the merge.

:func:`merge_shards` checks that the shards are ``0..n-1`` of one job (same source, inputs,
config and pseudonym key), copies their arrays and records into the output and assembles the
tables exactly as one run would: the merged folder equals a one-run folder byte for byte, except
the card's ``created`` time.
"""

from __future__ import annotations

import glob
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from radlens.common.atomic import atomic_path
from radlens.common.configs import from_json_dict
from radlens.errors import ConfigError, InputError
from radlens.prepare.dataset import WORK, Failure, SeriesRecord, WorkRecords, assemble, safe_name
from radlens.prepare.pipeline import PrepareConfig
from radlens.prepare.shard_state import STATE, ShardState

if TYPE_CHECKING:
    from radlens.io.prepared import PreparedDataset

# What must be the same in every shard of one job.
_SAME = ("source", "root", "config", "items_digest", "findings", "notes", "protocol_labels", "phi_key_fingerprint",
         "discovery_failures")


def shard_folders(pattern: str | Sequence[str | Path]) -> list[Path]:
    """Shard folders from a glob pattern (``"work/shard-*"``), a folder, or a list of them."""
    patterns = [pattern] if isinstance(pattern, (str, Path)) else list(pattern)
    found: list[Path] = []
    for p in patterns:
        matches = sorted(glob.glob(str(p))) or ([str(p)] if Path(p).exists() else [])
        if not matches:
            raise InputError(p, "no shard folder matches")
        found.extend(Path(m) for m in matches if Path(m).is_dir())
    return list(dict.fromkeys(found))


def _check_job(folders: list[Path], states: list[ShardState]) -> None:
    """The shards are 0..n-1 of one job: InputError naming the first one that is not."""
    first = states[0]
    for folder, state in zip(folders, states):
        if state.count != first.count:
            raise InputError(folder, f"shard {state.index}/{state.count} is not of the job of {folders[0]} "
                                     f"({first.index}/{first.count})")
        for key in _SAME:
            if getattr(state, key) != getattr(first, key):
                raise InputError(folder, f"shard {state.index}/{state.count} differs from {folders[0]} in its {key}: "
                                         "all shards must run the same command on the same inputs (and pseudonym key)")
    seen: dict[int, Path] = {}
    for folder, state in zip(folders, states):
        if state.index in seen:
            raise InputError(folder, f"shard {state.index}/{state.count} given twice (also {seen[state.index]})")
        seen[state.index] = folder
    missing = sorted(set(range(first.count)) - set(seen))
    if missing:
        raise InputError(folders[0], f"shard(s) {', '.join(f'{i}/{first.count}' for i in missing)} missing: "
                                     "run them, then merge again")


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _take_series(shard: Path, out: Path, series_id: str, fingerprint: str) -> SeriesRecord:
    """A shard's record of one series, its array and mask copied into ``out`` (record last)."""
    record = WorkRecords(shard).load(series_id, fingerprint)
    if record is None:
        raise InputError(shard, f"series {series_id}: listed as prepared, but its work record or array is missing "
                                "or stale (rerun this shard)")
    files = [p for p in (record.row["array_path"], record.row.get("mask_path")) if p]
    record_rel = Path(WORK) / f"{safe_name(series_id)}.json"
    same = (out / record_rel).is_file() and (out / record_rel).read_bytes() == (shard / record_rel).read_bytes() and all(
        (out / f).is_file() and (out / f).stat().st_size == (shard / f).stat().st_size for f in files)
    if not same:
        for rel in files:
            _copy(shard / rel, out / rel)
        _copy(shard / record_rel, out / record_rel)
    return record


def merge_shards(shards: Sequence[str | Path], output: str | Path) -> PreparedDataset:
    """Merge complete shard folders (``0..n-1`` of one job) into the prepared dataset ``output``:
    the same folder one run of the command without ``--shard`` writes (only ``created`` differs)."""
    from radlens.io.prepared import PreparedDataset

    folders = [Path(s).resolve() for s in shards]
    if not folders:
        raise ConfigError("no shard folders given")
    out = Path(output).resolve()
    for folder in folders:
        if out == folder or folder in out.parents:
            raise ConfigError(f"output {out} must not be inside the shard folder {folder}")
    states = [ShardState.read(f) for f in folders]
    _check_job(folders, states)
    first = states[0]
    cfg = from_json_dict(PrepareConfig, first.config)
    order = {sid: i for i, (sid, _) in enumerate(first.items)}
    fingerprints = dict((sid, fp) for sid, fp in first.items)
    records: dict[str, SeriesRecord] = {}
    failed: list[tuple[int, Failure]] = []
    for folder, state in zip(folders, states):
        for sid in state.series:
            if sid not in order or sid in records:
                raise InputError(folder / STATE, f"series {sid} is {'not discovered' if sid not in order else 'in two shards'}")
            records[sid] = _take_series(folder, out, sid, fingerprints[sid])
        for f in state.failures:
            failed.append((order.get(f["series_id"], len(order)), Failure(f["path"], f["stage"], f["reason"])))
    ordered = [records[sid] for sid, _ in first.items if sid in records]
    failures = [Failure(**f) for f in first.discovery_failures] + [f for _, f in sorted(failed, key=lambda x: x[0])]
    assemble(out, first.source, Path(first.root), cfg, ordered, failures, tuple(first.findings),
             protocol_labels=first.protocol_labels, notes=tuple(first.notes), phi_key_fingerprint=first.phi_key_fingerprint)
    if not ordered:
        raise InputError(out, f"nothing usable was produced ({len(failures)} inputs failed, see {out / 'failures.csv'})")
    return PreparedDataset(out)


def merge(shards: str, output: Path) -> int:
    """Merge the shard folders of a `radlens prepare SOURCE IN DIR --shard i/n` job into one prepared dataset.

    The result is the folder one run without --shard writes (tables, arrays, splits decided over
    all patients; only the card's created time differs). Every shard 0..n-1 must be complete
    and made by the same command on the same inputs with the same pseudonym key.

    Args:
        shards: the shard folders: a glob pattern, quoted (e.g. 'work/shard-*'), or one folder.
        output: the prepared dataset folder to write (not inside a shard folder).
    """
    ds = merge_shards(shard_folders(shards), output)
    counts = ds.card["counts"]
    print(f"merged {counts['series']} series ({counts.get('slices', 0)} slices), {counts['failures']} failures -> {ds.path}")
    return 0

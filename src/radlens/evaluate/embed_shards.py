"""``radlens embed-merge``: join the folders of ``radlens embed ... --shard i/n`` into one embeddings folder.

``embed`` writes one array for the whole item table, so a shard cannot add to a shared output;
instead shard ``i`` of ``n`` embeds the ``i``-th of ``n`` consecutive blocks of whole batches of the
item table (:meth:`radlens.common.sharding.Shard.batch_rows`) into a folder of its own, a valid
embeddings folder for those rows. Every batch holds the same items as in one run, so the numbers
are the same; the shards joined in shard order are the folder one run writes (``embeddings.npy``
and ``ids.parquet`` byte for byte; ``run.json`` names the shards).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from radlens.common.sharding import Shard
from radlens.errors import InputError
from radlens.evaluate.embed import EMBEDDINGS, IDS, RUN

# What every shard of one job shares (run.json ``config``).
_SAME = ("prepared", "bundle", "split", "batch_size")


def _shard_config(folder: Path) -> tuple[Shard, dict[str, Any]]:
    try:
        run = json.loads((folder / RUN).read_text(encoding="utf-8"))
        config = run["config"]
        shard = Shard.parse(config.get("shard"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise InputError(folder, f"not an embeddings folder of `radlens embed` ({err})") from None
    if shard is None:
        raise InputError(folder, "not a shard: its run.json names no --shard")
    for name in (EMBEDDINGS, IDS):
        if not (folder / name).is_file():
            raise InputError(folder, f"no {name}: the shard did not finish")
    return shard, config


def merge_embeddings(shards: list[Path], out: str | Path, overwrite: bool = False) -> Path:
    """Join embeddings shard folders (``0..n-1`` of one job) into ``out``; InputError naming a shard
    that is missing, given twice, unfinished or of another job."""
    import pandas as pd

    from radlens.common.atomic import check_output, staged_output, write_json_atomic
    from radlens.common.runinfo import run_info

    if not shards:
        raise InputError(out, "no shard folders given")
    check_output(out, overwrite)
    found = [(folder, *_shard_config(folder)) for folder in shards]
    first = found[0][2]
    by_index: dict[int, Path] = {}
    for folder, shard, config in found:
        differs = [k for k in _SAME if config.get(k) != first.get(k)]
        if shard.count != found[0][1].count or differs:
            raise InputError(folder, f"shard {shard} is not of the job of {found[0][0]} ({found[0][1]}; differs in "
                                     f"{differs or ['the number of shards']})")
        if shard.index in by_index:
            raise InputError(folder, f"shard {shard} given twice (also {by_index[shard.index]})")
        by_index[shard.index] = folder
    count = found[0][1].count
    missing = [f"{i}/{count}" for i in range(count) if i not in by_index]
    if missing:
        raise InputError(found[0][0], f"shard(s) {', '.join(missing)} missing: run them, then merge again")
    ordered = [by_index[i] for i in range(count)]
    emb = np.concatenate([np.load(f / EMBEDDINGS) for f in ordered])
    ids = pd.concat([pd.read_parquet(f / IDS) for f in ordered], ignore_index=True)
    config = {k: first.get(k) for k in _SAME}
    with staged_output(out, overwrite, "embed-merge") as tmp:
        np.save(tmp / EMBEDDINGS, emb, allow_pickle=False)
        ids.to_parquet(tmp / IDS, index=False)
        write_json_atomic(tmp / RUN, run_info("embed", {**config, "merged_from": [str(f) for f in ordered]}))
    return Path(out)


def embed_merge(shards: str, out: str, overwrite: bool = False) -> int:
    """Join the folders of `radlens embed ... --shard i/n` (all n of one job) into one embeddings folder.

    The result is what one `radlens embed` run without --shard writes: embeddings.npy and
    ids.parquet row for row, and a run.json naming the shards.

    Args:
        shards: the shard folders: a glob pattern, quoted (e.g. 'emb/part-*').
        out: output folder; a rerun replaces the files radlens wrote there, nothing else.
        overwrite: write into an existing folder radlens did not create; only radlens' files are replaced, nothing is deleted.
    """
    import glob

    folders = [Path(p) for p in sorted(glob.glob(shards)) if Path(p).is_dir()]
    if not folders:
        raise InputError(shards, "no shard folder matches")
    merge_embeddings(folders, out, overwrite)
    print(f"joined {len(folders)} shards into {out}")
    return 0

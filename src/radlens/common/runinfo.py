"""What every command that produces results records about itself (``run.json``), and result folders."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


def run_info(command: str, config: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
    """What ``RUN`` (run.json) records: command, resolved config, radlens version, seed, time."""
    import radlens

    return {
        "command": command,
        "radlens_version": radlens.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seed": seed,
        "config": config,
    }


def write_results(
    out: str | Path, metrics: dict[str, Any], predictions: pd.DataFrame, run: dict[str, Any], overwrite: bool = False
) -> Path:
    """``OUT/metrics.json``, ``OUT/predictions.csv``, ``OUT/run.json``, all appearing at once
    (``overwrite``: see :func:`radlens.common.atomic.staged_output`)."""
    from radlens.common.atomic import staged_output, write_json_atomic

    with staged_output(out, overwrite, run.get("command")) as tmp:
        write_json_atomic(tmp / "metrics.json", metrics)
        predictions.to_csv(tmp / "predictions.csv", index=False)
        write_json_atomic(tmp / "run.json", run)
    return Path(out)

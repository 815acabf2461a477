"""What every command that produces results records about itself (``run.json``)."""

from __future__ import annotations

import datetime
from typing import Any


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

"""Worker processes that die with their parent.

``radlens prepare --workers N`` runs series in a process pool. A pool's workers outlive a parent
that is killed (SIGKILL, an OOM kill, a scheduler ending the job): they would go on preparing
series and writing into the output folder that a rerun is already writing to. Every worker here
ends itself when its parent goes: on Linux the kernel sends it SIGKILL (``PR_SET_PDEATHSIG``);
elsewhere a thread notices the parent is gone (``os.getppid()`` changes) within half a second.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1
POLL_SECONDS = 0.5


def die_with_parent(parent: int) -> None:
    """Pool initializer: end this process as soon as process ``parent`` (its parent) ends."""
    import signal

    armed = False
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="radlens-parent-watch").start()
    if os.getppid() != parent:  # the parent ended before the line above took effect
        os._exit(1)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    os._exit(1)


def run_in_processes(fn: Callable[..., T], calls: Sequence[tuple[Any, ...]], workers: int) -> Iterator[T]:
    """``fn(*args)`` for every ``args`` of ``calls`` in ``workers`` spawned processes, yielding
    results as they finish (any order). The workers end with this process; leaving the generator
    early cancels the calls not started."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=die_with_parent,
                             initargs=(os.getpid(),)) as pool:
        futures = [pool.submit(fn, *args) for args in calls]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()

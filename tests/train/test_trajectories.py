"""Every trainer gives, for the same seed, the training losses it gave before it moved onto the shared
task base and run function (``golden_losses.json``, recorded with the earlier trainers), and a run
stopped mid-epoch and resumed gives them too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.trajectories import trajectories

GOLDEN = json.loads((Path(__file__).parent / "golden_losses.json").read_text())


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[float]]:
    return trajectories(tmp_path_factory.mktemp("trajectories"))


@pytest.mark.parametrize("task", sorted(GOLDEN))
def test_same_seed_gives_the_recorded_losses(measured: dict[str, list[float]], task: str) -> None:
    assert measured[task] == pytest.approx(GOLDEN[task], rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[float]]:
    return trajectories(tmp_path_factory.mktemp("resumed"), stop_at=5)


@pytest.mark.parametrize("task", sorted(GOLDEN))
def test_a_resumed_run_continues_exactly(resumed: dict[str, list[float]], task: str) -> None:
    assert resumed[task] == pytest.approx(GOLDEN[task], rel=1e-5, abs=1e-6)

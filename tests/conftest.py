"""Shared pytest options: slow tests are opt-in with --runslow."""

from __future__ import annotations

import os

import pytest

# Never reach for a hub at test time: the CI machine has no network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# A fixed pseudonym key (radlens.io.phi.load_phi_key): reproducible ids, and no key file in the user's home.
os.environ["RADLENS_PHI_KEY"] = "radlens-test-key-0123456789abcdef-not-secret"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)

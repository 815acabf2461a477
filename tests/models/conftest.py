"""Shared fixtures for model tests: one tiny CLIP model per session (building it trains a tokenizer)."""

from __future__ import annotations

import pytest

CAPTIONS = [
    "A brain MRI, plane axial, Scanner (SIEMENS, Skyra, 3.0), Echo Time 0.012, Repetition Time 0.5",
    "A brain MRI, plane sagittal, Scanner (GE, Signa, 1.5), Echo Time 0.090, Repetition Time 4.0",
    "A brain MRI, plane coronal, Scanner (Philips, Achieva, 3.0), Inversion Time 2.5, Flip Angle 90",
]


@pytest.fixture(scope="session")
def captions() -> list[str]:
    """A few MR-CLIP-style metadata captions."""
    return list(CAPTIONS)


@pytest.fixture(scope="session")
def tiny2d():
    """tiny-vit2d with a WordPiece vocabulary trained on CAPTIONS, in eval mode."""
    from radlens.models.registry import build_model

    return build_model("tiny-vit2d", texts=CAPTIONS * 4).eval()

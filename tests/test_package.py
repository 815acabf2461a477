"""The top-level package: fast to import, with lazy entry points."""

from __future__ import annotations

import subprocess
import sys

import radlens


def test_import_radlens_does_not_import_torch() -> None:
    code = "import sys, radlens; print('torch' in sys.modules, 'monai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_entry_points_resolve_to_their_modules() -> None:
    from radlens.evaluate.embed import embed_volume
    from radlens.io.reader import read_volume
    from radlens.models.bundle import load_model

    assert radlens.embed_volume is embed_volume and radlens.load_model is load_model
    assert radlens.read_volume is read_volume
    assert set(radlens.__all__) >= {"prepare_dataset", "train_clip", "PreparedDataset", "build_model"}

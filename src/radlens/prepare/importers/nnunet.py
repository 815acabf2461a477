"""nnU-Net v2 raw datasets (``Dataset{id:03d}_{name}/``): images with their label maps.

Layout (``/work/shared/FORMATS.md``): ``imagesTr/{case}_{channel:04d}{file_ending}`` (4-digit channel
index), ``labelsTr/{case}{file_ending}`` (consecutive integer labels from 0), optional
``imagesTs/`` without labels, and ``dataset.json`` with ``channel_names`` (``{"0": "CT"}``),
``labels`` (name -> id, ``background: 0``) and ``file_ending``. NIfTI file endings only.

Every image file is a series ``{case}_{channel:04d}`` whose mask is its case's ``labelsTr`` file (each
channel of a case shares it); the case is the patient (nnU-Net has no patient ids). A channel named
``CT`` is CT (nnU-Net's CT normalisation assumes HU, so the files must hold HU: ``already_hu``
``yes``), any other channel is MR. The text is the channel name. ``imagesTs`` cases go to the test
split; ``imagesTr`` cases are split by patient. Region-based labels (a name mapped to several ids)
are refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from radlens.errors import ConfigError, InputError
from radlens.prepare.dataset import Discovery, Failure, SeriesItem

if TYPE_CHECKING:
    from radlens.io.volume import Volume
    from radlens.prepare.pipeline import PrepareConfig

NOTES = ("nnU-Net has no patient ids: each case is a patient",)
ENDINGS = (".nii.gz", ".nii")
_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>[0-9]{4})$")


def default_config() -> PrepareConfig:
    """3D volumes as stored; CT files hold HU; imagesTs is the test split, imagesTr is split by case."""
    from radlens.prepare.pipeline import PrepareConfig
    from radlens.prepare.splits import SplitConfig

    return PrepareConfig(dims=3, already_hu="yes", split=SplitConfig(keep_existing=True, existing_col="split_given"))


def _dataset_json(root: Path) -> dict[str, Any]:
    path = root / "dataset.json"
    if not path.is_file():
        raise InputError(root, "no dataset.json (an nnU-Net raw dataset describes its channels and labels there)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"malformed JSON: {err}") from None
    if not isinstance(data, dict) or "labels" not in data:
        raise InputError(path, "missing key 'labels'")
    ending = data.get("file_ending", ".nii.gz")
    if ending not in ENDINGS:
        raise InputError(path, f"file_ending {ending!r}: radlens imports NIfTI nnU-Net datasets ({', '.join(ENDINGS)})")
    return data


def discover(root: Path, cfg: PrepareConfig) -> Discovery:
    """One item per image file of ``imagesTr``/``imagesTs`` (sorted), with its case's label map."""
    from radlens.prepare.masks import parse_label_table

    if not root.is_dir():
        raise InputError(root, "an nnU-Net dataset must be a folder")
    data = _dataset_json(root)
    ending = data.get("file_ending", ".nii.gz")
    scheme = parse_label_table({"labels": data["labels"]}, root / "dataset.json")
    channels = {str(k): str(v) for k, v in (data.get("channel_names") or data.get("modality") or {}).items()}
    if any(v.upper() == "CT" for v in channels.values()) and cfg.already_hu != "yes":
        raise ConfigError("nnU-Net CT images hold HU and there is no metadata to rescale them: set already_hu to 'yes'")
    items: list[SeriesItem] = []
    failures: list[Failure] = []
    for folder, split in (("imagesTr", None), ("imagesTs", "test")):
        if not (root / folder).is_dir():
            if folder == "imagesTr":
                raise InputError(root, "no imagesTr folder")
            continue
        for path in sorted(p for p in (root / folder).iterdir() if p.is_file() and p.name.endswith(ending)):
            rel = path.relative_to(root).as_posix()
            match = _CHANNEL.match(path.name[: -len(ending)])
            if match is None:
                failures.append(Failure(rel, "discover", f"not {{case}}_{{channel:04d}}{ending} (4-digit channel index)"))
                continue
            case, channel = match["case"], match["channel"]
            name = channels.get(str(int(channel)), "")
            label = root / "labelsTr" / f"{case}{ending}"
            mask = label if split is None else None
            if mask is not None and not mask.is_file():
                failures.append(Failure(rel, "discover", f"no label map labelsTr/{case}{ending}"))
                continue
            fields: dict[str, Any] = {"channel": name}
            if split is not None:
                fields["split_given"] = split
            items.append(
                SeriesItem(
                    series_id=f"{case}_{channel}",
                    patient_id=case,
                    study_id=case,
                    source_path=rel,
                    inputs=(str(path), *((str(mask), str(root / "dataset.json")) if mask is not None else ())),
                    modality="CT" if name.upper() == "CT" else "MR",
                    text=name,
                    mask=str(mask) if mask is not None else None,
                    mask_labels=scheme if mask is not None else None,
                    fields=fields,
                )
            )
    return Discovery(items, failures)


def load(item: SeriesItem, cfg: PrepareConfig) -> Volume:
    """The NIfTI image, marked with its channel's modality (CT in HU)."""
    from radlens.io.reader import read_volume

    volume = read_volume(item.inputs[0])
    volume.metadata = volume.metadata.replace(Modality=item.modality)
    if item.modality == "CT":
        volume.hu = True  # nnU-Net's CT convention (checked against already_hu in discover)
    return volume

"""Image embeddings from a model bundle: one scan file, or every item of a prepared dataset.

A bundle's ``config.json`` carries a ``preprocessing`` section saying what its inputs look like
(written by ``radlens.train.clip.preprocessing_from_card``: the card's subset that decides the
arrays)::

    {"dims": 3, "modality": "CT", "array_shape": [X, Y, Z], "dtype": "float32", "intensity": "<card note>",
     "prepare": {"spatial": {...SpatialConfig...}, "intensity": {...IntensityConfig...}, ...}}

``embed_volume`` replays that preprocessing on a raw file; ``check_compatible`` refuses a
prepared dataset whose arrays were made differently.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from radlens.errors import ConfigError, InputError

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from radlens.data.prepared import PreparedDataset
    from radlens.models.clip import CLIPModel

EMBEDDINGS = "embeddings.npy"
IDS = "ids.parquet"
RUN = "run.json"
# Which IntensityConfig fields matter for which modality (the others do not change the arrays).
_INTENSITY_KEYS = {"CT": ("ct_window", "ct_output"), "MR": ("mri_percentiles", "mri_mask")}


def _section(pre: dict[str, Any], key: str) -> dict[str, Any] | None:
    """A prepare-config section (``spatial``/``intensity``) of the bundle preprocessing, or None."""
    for source in (pre.get("prepare") or {}, pre):
        value = source.get(key)
        if isinstance(value, dict):
            return value
    return None


def _model_shape(model: CLIPModel) -> list[int]:
    return [int(s) for s in model.input_shape[1:]]


def _bundle_shape(model: CLIPModel) -> list[int]:
    """The array shape the bundle's preprocessing names (no channel), else the network's own."""
    shape = (model.preprocessing or {}).get("array_shape")
    return [int(s) for s in shape] if shape else _model_shape(model)


def _canonical(value: Any) -> Any:
    """Tuples and lists compare equal after a JSON round trip."""
    return json.loads(json.dumps(value))


def check_compatible(model: CLIPModel, ds: PreparedDataset) -> None:
    """Raise InputError when the dataset's arrays are not what the model's bundle expects.

    Compared: the network's input shape and the bundle's ``array_shape`` with the card's
    ``array_shape``; the bundle's modality and intensity (note or config) with the card's.
    """
    card, card_path = ds.card, ds.path / "dataset.json"
    shape = card.get("array_shape")
    for what, expected in (("model input", _model_shape(model)), ("bundle preprocessing", _bundle_shape(model))):
        if shape is None or [int(s) for s in shape] != expected:
            raise InputError(card_path, f"array_shape {shape} does not match the {what} shape {expected}")
    pre = model.preprocessing or {}
    modality = pre.get("modality")
    if modality and card.get("modality") and modality != card["modality"]:
        raise InputError(card_path, f"modality {card['modality']!r} but the bundle was trained on {modality!r}")
    note = pre.get("intensity")
    if isinstance(note, str) and card.get("intensity") is not None and note != card["intensity"]:
        raise InputError(card_path, f"intensity {card['intensity']!r} but the bundle expects {note!r}")
    bundle_int, card_int = _section(pre, "intensity"), (card.get("config") or {}).get("intensity")
    if bundle_int and isinstance(card_int, dict):
        keys = _INTENSITY_KEYS.get(str(card.get("modality")), tuple(bundle_int))
        for key in keys:
            if key in bundle_int and key in card_int and _canonical(bundle_int[key]) != _canonical(card_int[key]):
                raise InputError(card_path, f"intensity {key}={card_int[key]} but the bundle expects {bundle_int[key]}")


def _dataclass_from(cls: type, values: dict[str, Any]) -> Any:
    """A frozen config dataclass from a JSON dict (lists become tuples; unknown keys are an error)."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"bundle preprocessing: unknown {cls.__name__} key(s) {', '.join(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def resolve_model(bundle: str | os.PathLike[str] | CLIPModel) -> CLIPModel:
    """A CLIPModel in eval mode from a bundle folder / registry name / hub id, or the model itself."""
    from radlens.models.bundle import load_model

    model = bundle if hasattr(bundle, "encode_image") else load_model(bundle)  # type: ignore[arg-type]
    return model.eval()


def _device(device: str) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def encode_images(model: CLIPModel, arrays: np.ndarray, device: str = "cpu") -> np.ndarray:
    """(B, C, *spatial) model-ready arrays -> (B, D) float32 L2-normalised embeddings (no grad)."""
    import torch

    dev = _device(device)
    model.to(dev)
    with torch.inference_mode():
        batch = torch.from_numpy(np.ascontiguousarray(arrays, dtype=np.float32)).to(dev)
        return model.encode_image(batch).float().cpu().numpy()


def embed_volume(
    path: str | os.PathLike[str],
    bundle: str | os.PathLike[str] | CLIPModel,
    *,
    modality: str | None = None,
    already_hu: bool = False,
    rescale: tuple[float, float] | None = None,
    device: str = "cpu",
) -> np.ndarray:
    """Embed one scan file in one call: read -> the bundle's spatial + intensity preprocessing -> encode.

    ``modality`` fills in a file that does not say (NIfTI without sidecar; default: the bundle's);
    CT values must be HU: ``already_hu=True`` says the file holds HU, ``rescale=(slope, intercept)``
    converts it (never assumed). Returns the (D,) L2-normalised embedding.
    """
    from radlens.io.reader import read_volume
    from radlens.prepare.intensity import IntensityConfig, apply_intensity
    from radlens.prepare.spatial import SpatialConfig, apply_spatial

    model = resolve_model(bundle)
    pre = model.preprocessing or {}
    spatial = _section(pre, "spatial")
    if spatial is None or len(_model_shape(model)) != 3:
        raise ConfigError("embed_volume needs a 3D model bundle whose config.json has preprocessing.prepare.spatial")
    try:
        volume = read_volume(path, rescale=rescale)
    except InputError:
        raise
    except (OSError, RuntimeError, ValueError) as err:  # reader back ends raise their own classes
        raise InputError(path, f"cannot read the scan ({err})") from err
    modality = (volume.metadata.Modality or modality or pre.get("modality") or "").upper()
    volume.metadata = volume.metadata.replace(Modality=modality or None)
    volume.hu = volume.hu or already_hu
    volume = apply_spatial(volume, _dataclass_from(SpatialConfig, spatial))
    if modality in ("CT", "MR", "MRI"):
        volume = apply_intensity(volume, _dataclass_from(IntensityConfig, _section(pre, "intensity") or {}))
    if list(volume.shape) != _model_shape(model):
        raise InputError(path, f"preprocessed shape {list(volume.shape)} is not the model input {_model_shape(model)}")
    return encode_images(model, volume.array[None], device)[0]


def item_table(ds: PreparedDataset, split: str | None = None) -> pd.DataFrame:
    """The items a model sees (3D: series, 2D: slices) with ``series_id, patient_id, scan_id, split``."""
    series = ds.series if "scan_id" in ds.series.columns else ds.series.assign(scan_id=ds.series["series_id"])
    if ds.dims == 3:
        table = series if split is None else ds.split(split)
        if "scan_id" not in table.columns:
            table = table.assign(scan_id=table["series_id"])
        return table.reset_index(drop=True)
    slices = ds.slices if split is None else ds.split(split)
    return slices.join(series.set_index("series_id")[["scan_id"]], on="series_id").reset_index(drop=True)


def embed_items(
    ds: PreparedDataset, model: CLIPModel, items: pd.DataFrame, batch_size: int = 8, device: str = "cpu"
) -> np.ndarray:
    """(N, D) embeddings of the rows of :func:`item_table`, one image pass each, with a progress bar."""
    from tqdm.auto import tqdm

    out = np.empty((len(items), model.embed_dim), dtype=np.float32)
    keys = items["slice_id"].tolist() if ds.dims == 2 else items["series_id"].tolist()
    for lo in tqdm(range(0, len(keys), batch_size), desc="embedding", unit="batch", leave=False):
        chunk = keys[lo : lo + batch_size]
        arrays = [ds.slice(k)[None] for k in chunk] if ds.dims == 2 else [ds.array(k) for k in chunk]
        out[lo : lo + len(chunk)] = encode_images(model, np.stack(arrays), device)
    return out


def embed(
    prepared: str,
    bundle: str,
    out: str,
    split: Literal["train", "validation", "test"] | None = None,
    batch_size: int = 8,
    device: str = "auto",
) -> int:
    """Write image embeddings of a prepared dataset: OUT/embeddings.npy (N, D), ids.parquet, run.json.

    Row i of ``embeddings.npy`` (float32, L2-normalised, memory-mappable) is row i of
    ``ids.parquet`` (series_id, patient_id, scan_id, split; slice_id first for 2D datasets).

    Args:
        prepared: prepared dataset folder.
        bundle: model bundle folder, registry name or Hugging Face Hub id.
        out: output folder (replaced as a whole when it exists).
        split: embed only this split (default: every item).
        batch_size: items per image-encoder pass.
        device: auto, cpu, cuda, cuda:1, ...
    """
    from radlens.data.prepared import PreparedDataset
    from radlens.common.atomic import write_json_atomic

    ds = PreparedDataset(prepared)
    model = resolve_model(bundle)
    check_compatible(model, ds)
    items = item_table(ds, split)
    if items.empty:
        raise InputError(prepared, f"no items in split {split!r}" if split else "the dataset has no items")
    emb = embed_items(ds, model, items, batch_size, device)
    id_cols = [c for c in ("slice_id", "series_id", "patient_id", "scan_id", "split") if c in items.columns]
    config = {"prepared": str(prepared), "bundle": str(bundle), "split": split, "batch_size": batch_size}
    with staged_output(out) as tmp:
        np.save(tmp / EMBEDDINGS, emb, allow_pickle=False)
        items[id_cols].to_parquet(tmp / IDS, index=False)
        write_json_atomic(tmp / RUN, run_info("embed", config))
    print(f"wrote {len(emb)} embeddings ({emb.shape[1]}-d) to {out}")
    return 0

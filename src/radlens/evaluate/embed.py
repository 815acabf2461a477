"""Image embeddings from a model bundle: one scan file, or every item of a prepared dataset.

A bundle's ``config.json`` carries a ``preprocessing`` section saying what its inputs look like
(written by ``radlens.data.modules.preprocessing_from_card``: the card's subset that decides the
arrays)::

    {"dims": 3, "modality": "CT", "array_shape": [X, Y, Z], "dtype": "float32", "intensity": "<card note>",
     "prepare": {"spatial": {...SpatialConfig...}, "intensity": {...IntensityConfig...}, ...}}

``embed_volume`` replays that preprocessing on a raw file; ``check_compatible`` refuses a
prepared dataset whose arrays were made differently.
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from radlens.common.sharding import Shard
from radlens.errors import ConfigError, InputError
from radlens.models.compat import check_compatible, model_shape, preprocessing_section

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from radlens.io.prepared import PreparedDataset
    from radlens.models.clip import CLIPModel

EMBEDDINGS = "embeddings.npy"
IDS = "ids.parquet"
RUN = "run.json"
def _dataclass_from(cls: type, values: dict[str, Any]) -> Any:
    """A frozen config dataclass from a JSON dict (lists become tuples; unknown keys are an error)."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"bundle preprocessing: unknown {cls.__name__} key(s) {', '.join(unknown)}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def resolve_model(bundle: str | os.PathLike[str] | CLIPModel) -> CLIPModel:
    """A CLIPModel in eval mode from a bundle folder / run folder / registry name / hub id, or the model
    itself. A ClassFine bundle gives its CLIP encoder (fine-tuned if it was trained with ``train_encoder``) with
    the bundle's preprocessing."""
    from radlens.models.bundle import load_model

    if hasattr(bundle, "encode_image"):
        return bundle.eval()  # type: ignore[union-attr]
    model = load_model(bundle, kind=("clip", "classfine"))  # type: ignore[arg-type]
    if model.config["kind"] == "classfine":
        model.clip.preprocessing = model.preprocessing
        model = model.clip
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
    spatial = preprocessing_section(pre, "spatial")
    if spatial is None or len(model_shape(model)) != 3:
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
        volume = apply_intensity(volume, _dataclass_from(IntensityConfig, preprocessing_section(pre, "intensity") or {}))
    if list(volume.shape) != model_shape(model):
        raise InputError(path, f"preprocessed shape {list(volume.shape)} is not the model input {model_shape(model)}")
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
    bundle: str,
    prepared: str,
    out: str,
    split: Literal["train", "validation", "test"] | None = None,
    batch_size: int = 8,
    device: str = "auto",
    overwrite: bool = False,
    shard: str | None = None,
) -> int:
    """Write image embeddings of a prepared dataset: OUT/embeddings.npy (N, D), ids.parquet, run.json.

    Row i of ``embeddings.npy`` (float32, L2-normalised, memory-mappable) is row i of
    ``ids.parquet`` (series_id, patient_id, scan_id, split; slice_id first for 2D datasets).

    Args:
        bundle: model bundle folder (or run folder), registry name or Hugging Face Hub id.
        prepared: prepared dataset folder.
        out: output folder; a rerun replaces the files radlens wrote there, nothing else.
        split: embed only this split (default: every item).
        batch_size: items per image-encoder pass.
        device: auto, cpu, cuda, cuda:1, ...
        overwrite: write into an existing folder radlens did not create; only radlens' files are replaced, nothing is deleted.
        shard: i/n (i from 0): embed only the i-th of n consecutive blocks of whole batches into OUT;
            `radlens embed-merge` joins the n shard folders into the output one run writes.
    """
    from radlens.common.atomic import check_output, staged_output, write_json_atomic
    from radlens.common.runinfo import run_info
    from radlens.io.prepared import PreparedDataset

    check_output(out, overwrite)
    ds = PreparedDataset(prepared)
    model = resolve_model(bundle)
    check_compatible(model, ds)
    items = item_table(ds, split)
    if items.empty:
        raise InputError(prepared, f"no items in split {split!r}" if split else "the dataset has no items")
    part = Shard.parse(shard)
    if part is not None:
        items = items.iloc[part.batch_rows(len(items), batch_size)].reset_index(drop=True)
    emb = embed_items(ds, model, items, batch_size, device)
    id_cols = [c for c in ("slice_id", "series_id", "patient_id", "scan_id", "split") if c in items.columns]
    config = {"prepared": str(prepared), "bundle": str(bundle), "split": split, "batch_size": batch_size,
              **({"shard": str(part)} if part is not None else {})}
    with staged_output(out, overwrite, "embed") as tmp:
        np.save(tmp / EMBEDDINGS, emb, allow_pickle=False)
        items[id_cols].to_parquet(tmp / IDS, index=False)
        write_json_atomic(tmp / RUN, run_info("embed", config))
    print(f"wrote {len(emb)} embeddings ({emb.shape[1]}-d) to {out}")
    return 0

"""Whether a prepared dataset's arrays are what a model's bundle was trained on (preprocessing travels with
the weights: a bundle's ``preprocessing`` names the card subset that decides the arrays)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from radlens.errors import InputError

if TYPE_CHECKING:
    from radlens.io.prepared import PreparedDataset

# Which IntensityConfig fields matter for which modality (the others do not change the arrays).
_INTENSITY_KEYS = {"CT": ("ct_window", "ct_output"), "MR": ("mri_percentiles", "mri_mask")}


def preprocessing_section(pre: dict[str, Any], key: str) -> dict[str, Any] | None:
    """A prepare-config section (``spatial``/``intensity``) of the bundle preprocessing, or None."""
    for source in (pre.get("prepare") or {}, pre):
        value = source.get(key)
        if isinstance(value, dict):
            return value
    return None


def model_shape(model: Any) -> list[int]:
    return [int(s) for s in model.input_shape[1:]]


def _bundle_shape(model: Any) -> list[int]:
    """The array shape the bundle's preprocessing names (no channel), else the network's own."""
    shape = (model.preprocessing or {}).get("array_shape")
    return [int(s) for s in shape] if shape else model_shape(model)


def _canonical(value: Any) -> Any:
    """Tuples and lists compare equal after a JSON round trip."""
    return json.loads(json.dumps(value))


def check_compatible(model: Any, ds: PreparedDataset) -> None:
    """Raise InputError when the dataset's arrays are not what the model's bundle expects.

    Compared: the network's input shape and the bundle's ``array_shape`` with the card's
    ``array_shape``; the bundle's modality and intensity (note or config) with the card's.
    """
    card, card_path = ds.card, ds.path / "dataset.json"
    shape = card.get("array_shape")
    for what, expected in (("model input", model_shape(model)), ("bundle preprocessing", _bundle_shape(model))):
        if shape is None or [int(s) for s in shape] != expected:
            raise InputError(card_path, f"array_shape {shape} does not match the {what} shape {expected}")
    pre = model.preprocessing or {}
    modality = pre.get("modality")
    if modality and card.get("modality") and modality != card["modality"]:
        raise InputError(card_path, f"modality {card['modality']!r} but the bundle was trained on {modality!r}")
    note = pre.get("intensity")
    if isinstance(note, str) and card.get("intensity") is not None and note != card["intensity"]:
        raise InputError(card_path, f"intensity {card['intensity']!r} but the bundle expects {note!r}")
    bundle_int, card_int = preprocessing_section(pre, "intensity"), (card.get("config") or {}).get("intensity")
    if bundle_int and isinstance(card_int, dict):
        keys = _INTENSITY_KEYS.get(str(card.get("modality")), tuple(bundle_int))
        for key in keys:
            if key in bundle_int and key in card_int and _canonical(bundle_int[key]) != _canonical(card_int[key]):
                raise InputError(card_path, f"intensity {key}={card_int[key]} but the bundle expects {bundle_int[key]}")

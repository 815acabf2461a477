"""``radlens evaluate seg``: Dice (IoU, optional HD95) of a segmenter bundle on the masked series of a prepared dataset.

One case is one series. A 2D dataset's slices are predicted one by one and **re-stacked per series**
(its prepared slices, in order) before any metric, so Dice is a 3D Dice per case as MRGen evaluates
its 2D nnU-Net predictions; a 3D dataset's volumes are predicted whole. Metrics per label and their
mean over the foreground labels, averaged over cases with patient-bootstrap 95% CIs
(:mod:`radlens.metrics.segmentation`, which states the conventions: empty vs empty = 1, HD95 undefined
when a structure is absent from one side only).

The segmenter must fit the data: same dimensionality, same modality and intensity settings as its
bundle's preprocessing, and a label table that names shared ids alike (the dataset's foreground labels
are evaluated; ids the segmenter predicts that the dataset lacks count as errors).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from radlens.errors import ConfigError, InputError

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from radlens.io.prepared import PreparedDataset
    from radlens.models.segmenter import Segmenter

Split = Literal["train", "validation", "test"]


def check_segmenter_data(model: Any, ds: PreparedDataset) -> None:
    """InputError naming the dataset card when the segmenter was trained on different data: dims, modality,
    intensity settings, or a label id named differently."""
    from radlens.models.compat import preprocessing_section
    from radlens.prepare.masks import conflict

    card_path = ds.path / "dataset.json"
    if int(model.spatial_dims) != ds.dims:
        raise InputError(card_path, f"a {ds.dims}D dataset, but the segmenter is {model.spatial_dims}D")
    pre = model.preprocessing or {}
    modality, card_modality = pre.get("modality"), ds.card.get("modality")
    if modality and card_modality and modality != card_modality:
        raise InputError(card_path, f"modality {card_modality!r} but the segmenter was trained on {modality!r}")
    bundle_int, card_int = preprocessing_section(pre, "intensity"), (ds.card.get("config") or {}).get("intensity")
    if bundle_int and isinstance(card_int, dict):
        for key in ("mri_percentiles", "mri_mask") if card_modality != "CT" else ("ct_window", "ct_output"):
            if key in bundle_int and key in card_int and list(np.ravel(bundle_int[key])) != list(np.ravel(card_int[key])):
                raise InputError(card_path, f"intensity {key}={card_int[key]} but the segmenter expects {bundle_int[key]}")
    trained = {int(k): str(v) for k, v in (pre.get("labels") or {}).items()}
    why = conflict(trained, ds.labels, "the segmenter's label table") if trained else None
    if why is not None:
        raise InputError(card_path, why)


def _device(device: str) -> torch.device:
    import torch

    return torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))


def predict_case(model: Segmenter, array: np.ndarray, dims: int, batch_size: int = 32, device: str = "cpu") -> np.ndarray:
    """Label ids of one prepared case: a 2D stack ``(n, H, W)`` predicted slice by slice (in batches) and
    re-stacked, or a 3D volume ``(1, X, Y, Z)`` predicted whole; the result has the array's shape."""
    import torch

    dev = _device(device)
    model.to(dev).eval()
    data = np.array(array, dtype=np.float32)  # a writable copy of the memory map
    with torch.inference_mode():
        if dims == 3:
            return model.segment(torch.from_numpy(data)[None].to(dev))[0:1].cpu().numpy()
        parts = [model.segment(torch.from_numpy(data[i : i + batch_size])[:, None].to(dev)).cpu().numpy()
                 for i in range(0, len(data), batch_size)]
    return np.concatenate(parts) if parts else np.zeros(data.shape, np.int64)


def cases_of(ds: PreparedDataset, split: str, series_ids: Sequence[str] | None) -> pd.DataFrame:
    """The series of ``split`` that have a mask (and are among ``series_ids`` when given): one row per case."""
    series = ds.series
    if ds.slices is not None:  # 2D: a series is in the split of its slices (splits are by patient)
        in_split = set(ds.slices.loc[ds.slices["split"] == split, "series_id"])
        chosen = series["series_id"].isin(in_split)
    else:
        chosen = series["split"] == split
    if "mask_path" not in series.columns:
        raise InputError(ds.path, "prepared without masks (no mask_path column): nothing to compare with")
    chosen &= series["mask_path"].fillna("") != ""
    if series_ids is not None:
        chosen &= series["series_id"].isin(list(series_ids))
    table = series[chosen].reset_index(drop=True)
    if table.empty:
        raise InputError(ds.path, f"no series with a mask in split {split!r}" + (" of the chosen contrasts" if series_ids else ""))
    return table


def evaluate_seg(
    model: str,
    data: str,
    out: str,
    split: Split = "test",
    contrasts: list[str] | None = None,
    hd95: bool = False,
    save_masks: bool = False,
    n_bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 32,
    device: str = "auto",
    overwrite: bool = False,
) -> int:
    """Evaluate a segmenter on the masked series of a prepared dataset: Dice/IoU per label in 3D, with CIs.

    Writes OUT/metrics.json (per label: mean Dice and IoU over cases with patient-bootstrap 95% CIs,
    cases where the structure is present, mean HD95 with ``--hd95``; the mean Dice over foreground
    labels with its CI; the conventions), OUT/cases.csv (one row per case: series, patient, contrast,
    slices, per-label Dice/IoU/voxel counts/HD95, mean Dice), OUT/run.json and, with ``--save_masks``,
    OUT/masks/<series>.npy (predicted label ids, the prepared array's shape), all at once.

    Args:
        model: segmenter bundle folder or run folder (its best/), from radlens train seg.
        data: prepared dataset folder with masks (2D slices or 3D volumes, like the segmenter's).
        out: output folder; a rerun replaces the files radlens wrote there, nothing else.
        split: the split to evaluate.
        contrasts: evaluate only the series of these contrast classes (series column ``contrast``).
        hd95: also the 95th-percentile Hausdorff distance per label (mm for 3D volumes, pixels/slices for 2D stacks).
        save_masks: also write the predicted label maps.
        n_bootstrap: bootstrap resamples of patients for the 95% CIs.
        seed: bootstrap seed.
        batch_size: slices per segmenter pass (2D).
        device: auto, cpu, cuda, cuda:1, ...
        overwrite: write into an existing folder radlens did not create; only radlens' files are replaced, nothing is deleted.
    """
    config = dict(locals())
    import pandas as pd
    from tqdm import tqdm

    from radlens.common.atomic import check_output, save_array_atomic, staged_output, write_json_atomic
    from radlens.common.runinfo import run_info
    from radlens.io.prepared import SPLITS, PreparedDataset
    from radlens.metrics.segmentation import case_metrics, summarize
    from radlens.models.bundle import load_model
    from radlens.prepare.dataset import safe_name
    from radlens.train.seg import contrast_series

    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if n_bootstrap < 0 or batch_size < 1:
        raise ConfigError(f"n_bootstrap must be >= 0 and batch_size >= 1, got {n_bootstrap} and {batch_size}")
    check_output(out, overwrite)
    ds = PreparedDataset(data)
    segmenter = load_model(model, kind="segmenter")
    check_segmenter_data(segmenter, ds)
    cases = cases_of(ds, split, contrast_series(ds, contrasts))
    labels = ds.labels
    names = [labels[i] for i in sorted(labels) if i != 0]
    rows, predicted = [], {}
    for case in tqdm(cases.itertuples(), total=len(cases), desc="evaluate seg", unit="case", disable=None):
        array, truth = ds.array(case.series_id), np.asarray(ds.mask(case.series_id))
        pred = predict_case(segmenter, array, ds.dims, batch_size, device)
        spacing = list(case.spacing) if ds.dims == 3 and hasattr(case, "spacing") and case.spacing is not None else None
        grid = (pred[0], truth[0]) if ds.dims == 3 else (pred, truth)
        rows.append({"series_id": case.series_id, "patient_id": case.patient_id,
                     "contrast": getattr(case, "contrast", None), "slices": int(truth.shape[0]) if ds.dims == 2 else None,
                     **case_metrics(*grid, labels, spacing=spacing, with_hd95=hd95)})
        if save_masks:
            predicted[case.series_id] = pred.astype(truth.dtype)
    table = pd.DataFrame(rows)
    metrics = summarize(table, names, n_bootstrap, seed)
    metrics.update(split=split, contrasts=list(contrasts or []), dims=ds.dims, model=str(model), data=str(data),
                   labels={str(k): v for k, v in sorted(labels.items())},
                   hd95_unit=("mm" if ds.dims == 3 else "pixels (slice index along the stack)") if hd95 else None)
    with staged_output(out, overwrite, "evaluate seg") as tmp:
        table.to_csv(tmp / "cases.csv", index=False)
        write_json_atomic(tmp / "metrics.json", metrics)
        write_json_atomic(tmp / "run.json", run_info("evaluate seg", config, seed))
        for series_id, pred in predicted.items():
            save_array_atomic(tmp / "masks" / f"{safe_name(series_id)}.npy", pred)
    per_label = ", ".join(f"{n} {_fmt(metrics['per_label'][n]['dice'])}" for n in names)
    ci = metrics["mean_dice_ci"]
    print(f"{len(table)} cases ({split}): mean Dice {_fmt(metrics['mean_dice'])} [{_fmt(ci['low'])}, {_fmt(ci['high'])}]; "
          f"{per_label} -> {out}")
    return 0


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"

"""``radlens evaluate synth GENERATED REAL OUT``: how real generated images look, judged by radlens' own models.

MRGen reports FID (Inception features), SSIM/PSNR against paired real images and CLIP image-image and
image-text similarity (BiomedCLIP). Here every number names the model it was measured with:

- **FID** in the feature space of a named radlens encoder (``--encoder``: a CLIP bundle's pooled image
  features, a MoCo/LeCL bundle, any image encoder; :func:`radlens.evaluate.slice_encoder.load_slice_encoder`),
  recorded with its name, kind and SHA-256 (Inception FID means little for MRI, and no Inception weights
  can be downloaded here). Next to it the FID between two patient-disjoint halves of the real images:
  the value a perfect generator would get with this many images.
- **SSIM/PSNR** (MONAI, declared data range, 11-pixel Gaussian window) where images are paired: a
  generated slice whose ``pair_column`` (default ``source_slice_id``, which ``radlens synth`` writes)
  names a slice of REAL.
- **CLIP similarity** with a radlens CLIP bundle (``--clip``): image-text (each generated image with its
  prompt; real images with their own captions as the reference) and image-image (paired, and with the
  real set's mean embedding, real images likewise as the reference).
- **Contrast check**: the zero-shot contrast class (a ``mode: classes`` prompt set, by default
  ``mri_contrast_captions``, rendered in REAL's caption template) that a metadata-CLIP
  (``--contrast_clip``, default ``--clip``) gives each generated image, against the contrast its prompt
  asked for (the generated series' ``contrast`` column): accuracy with a patient-bootstrap CI, per asked
  contrast, the confusion counts, and the same classifier's accuracy on REAL's images (how far the check
  itself can be trusted).

Images are compared as stored (prepared slices of one shape); both datasets must be 2D and prepared
alike (the models' bundles check their preprocessing against both cards).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from radlens.errors import ConfigError, InputError

if TYPE_CHECKING:
    import pandas as pd

    from radlens.io.prepared import PreparedDataset

Split = Literal["train", "validation", "test"]


def _items(ds: PreparedDataset, split: str | None, contrasts: Sequence[str] | None, what: str) -> pd.DataFrame:
    """Slices of ``split`` (None: all) of series of ``contrasts`` (None: all), with their series' contrast."""
    if ds.dims != 2 or ds.slices is None:
        raise InputError(ds.path, f"{what}: a {ds.dims}D dataset; evaluate synth compares 2D slices")
    if "contrast" not in ds.series.columns:
        raise InputError(ds.path / "series.parquet", f"{what}: no 'contrast' column (the contrast each image shows or was asked for)")
    contrast = ds.series.set_index("series_id")["contrast"]
    table = ds.slices.assign(contrast=ds.slices["series_id"].map(contrast).fillna("").astype(str))
    table["position_in_table"] = np.arange(len(table))
    if split is not None:
        table = table[table["split"] == split]
    if contrasts is not None:
        table = table[table["contrast"].isin(list(contrasts))]
    if table.empty:
        raise InputError(ds.path, f"{what}: no slices" + (f" in split {split!r}" if split else "")
                         + (f" of contrast {', '.join(contrasts)}" if contrasts else ""))
    return table.reset_index(drop=True)


def _embed(fn: Callable[[np.ndarray], np.ndarray], ds: PreparedDataset, rows: Sequence[int], batch_size: int) -> np.ndarray:
    """``fn`` of ``(B, 1, H, W)`` batches of the slices at table positions ``rows``, concatenated."""
    parts = [fn(np.stack([np.asarray(ds.slice(int(r)), np.float32)[None] for r in rows[lo : lo + batch_size]]))
             for lo in range(0, len(rows), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def _fid(encoder: str, features: str, gen: PreparedDataset, g: pd.DataFrame, real: PreparedDataset, r: pd.DataFrame,
         batch_size: int, device: str, seed: int) -> dict[str, Any]:
    """FID of generated vs real in the encoder's feature space, with the real-halves reference."""
    import torch

    from radlens.evaluate.embed import _device
    from radlens.evaluate.slice_encoder import load_slice_encoder
    from radlens.metrics.generation import fid

    enc = load_slice_encoder(encoder, features, seed)  # type: ignore[arg-type]
    shape = list(gen.card.get("array_shape") or [])
    if enc.input_shape is not None and list(enc.input_shape) != shape:
        raise InputError(gen.path / "dataset.json", f"slices of shape {shape}, but the encoder {enc.name} takes {list(enc.input_shape)}")
    dev = _device(device)
    enc.module.to(dev)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = enc.encode(torch.from_numpy(batch).to(dev))
        return out.reshape(len(batch), -1).float().cpu().numpy()

    fg, fr = _embed(run, gen, g["position_in_table"].tolist(), batch_size), _embed(run, real, r["position_in_table"].tolist(), batch_size)
    result = {**fid(fg, fr), "encoder": {"name": enc.name, "kind": enc.kind, "features": enc.features, "sha256": enc.sha256,
                                         "seed": enc.seed}}
    patients = np.unique(r["patient_id"].astype(str))
    rng = np.random.default_rng(seed)
    half = set(rng.permutation(patients)[: len(patients) // 2])
    first = r["patient_id"].astype(str).isin(half).to_numpy()
    if first.sum() >= 2 and (~first).sum() >= 2:
        result["real_halves"] = {**fid(fr[first], fr[~first]), "note": "two patient-disjoint halves of REAL: a perfect generator's FID"}
    else:
        result["real_halves"] = None
    return result


def _paired(gen: PreparedDataset, g: pd.DataFrame, real: PreparedDataset, pair_column: str, n_bootstrap: int,
            seed: int) -> tuple[dict[str, Any], pd.Series]:
    """PSNR/SSIM of generated slices against the REAL slices their ``pair_column`` names; the paired REAL position per item."""
    import pandas as pd
    import torch

    from radlens.metrics.generation import bootstrap_mean
    from radlens.metrics.image_quality import psnr_ssim

    assert real.slices is not None
    lookup = pd.Series(np.arange(len(real.slices)), index=real.slices["slice_id"].astype(str))
    if pair_column not in g.columns:
        return {"pair_column": pair_column, "n_pairs": 0, "note": f"GENERATED has no {pair_column!r} column"}, pd.Series(dtype=float)
    target = g[pair_column].astype(str).map(lookup)
    has = target.notna().to_numpy()
    if not has.any():
        return {"pair_column": pair_column, "n_pairs": 0, "note": f"no {pair_column} value names a slice of REAL"}, target
    lo, hi = real.value_range
    a = torch.from_numpy(np.stack([np.asarray(gen.slice(int(p)), np.float32) for p in g.loc[has, "position_in_table"]]))[:, None]
    b = torch.from_numpy(np.stack([np.asarray(real.slice(int(p)), np.float32) for p in target[has]]))[:, None]
    psnr, ssim = psnr_ssim(a, b, data_range=hi - lo)
    patients = g.loc[has, "patient_id"].to_numpy()
    psnr_values = psnr.numpy().astype(np.float64)
    return {"pair_column": pair_column, "n_pairs": int(has.sum()), "data_range": hi - lo,
            "psnr": bootstrap_mean(np.where(np.isfinite(psnr_values), psnr_values, np.nan), patients, n_bootstrap, seed),
            "ssim": bootstrap_mean(ssim.numpy(), patients, n_bootstrap, seed)}, target


def _clip_model(bundle: str, gen: PreparedDataset, real: PreparedDataset) -> tuple[Any, dict[str, Any]]:
    from radlens.evaluate.embed import resolve_model
    from radlens.evaluate.slice_encoder import bundle_sha256
    from radlens.models.bundle import resolve_bundle
    from radlens.models.compat import check_compatible

    model = resolve_model(bundle)
    for ds in (gen, real):
        check_compatible(model, ds)
    path = Path(bundle)
    sha = bundle_sha256(resolve_bundle(path)) if path.is_dir() else None
    return model, {"bundle": str(bundle), "sha256": sha}


def _texts(model: Any, texts: Sequence[str]) -> np.ndarray:
    """Text embeddings of ``texts``, each distinct text encoded once."""
    import torch

    from radlens.models.prompts import encode_prompt_groups

    unique = sorted(set(texts))
    with torch.inference_mode():
        emb = encode_prompt_groups(model, [[t] for t in unique]).cpu().numpy()
    index = {t: i for i, t in enumerate(unique)}
    return emb[[index[t] for t in texts]]


def _clip(model: Any, gen: PreparedDataset, g: pd.DataFrame, real: PreparedDataset, r: pd.DataFrame, pairs: pd.Series,
          text_column: str, batch_size: int, device: str, n_bootstrap: int, seed: int) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """CLIP image-text and image-image similarities (generated, and REAL as the reference); the image embeddings."""
    from radlens.evaluate.embed import encode_images
    from radlens.metrics.generation import bootstrap_mean, centroid_cosine, paired_cosine

    def run(batch: np.ndarray) -> np.ndarray:
        return encode_images(model, batch, device)

    eg, er = _embed(run, gen, g["position_in_table"].tolist(), batch_size), _embed(run, real, r["position_in_table"].tolist(), batch_size)
    gp, rp = g["patient_id"].to_numpy(), r["patient_id"].to_numpy()
    column = text_column if text_column in g.columns else "text"
    out: dict[str, Any] = {"text_column": column,
                           "image_text": bootstrap_mean(paired_cosine(eg, _texts(model, g[column].fillna("").astype(str).tolist())),
                                                        gp, n_bootstrap, seed),
                           "real_image_text": bootstrap_mean(paired_cosine(er, _texts(model, r["text"].fillna("").astype(str).tolist())),
                                                             rp, n_bootstrap, seed),
                           "image_image_centroid": bootstrap_mean(centroid_cosine(eg, er), gp, n_bootstrap, seed),
                           "real_image_image_centroid": bootstrap_mean(centroid_cosine(er, er), rp, n_bootstrap, seed),
                           "image_image_paired": None}
    has = pairs.notna().to_numpy() if len(pairs) else np.zeros(len(g), bool)
    if has.any():
        ep = _embed(run, real, [int(p) for p in pairs[has]], batch_size)
        out["image_image_paired"] = bootstrap_mean(paired_cosine(eg[has], ep), gp[has], n_bootstrap, seed)
    return out, eg, er


def _contrast_check(model: Any, prompts: str, classes: Sequence[str] | None, gen: PreparedDataset, g: pd.DataFrame,
                    gen_emb: np.ndarray | None, real: PreparedDataset, real_split: str | None, batch_size: int, device: str,
                    n_bootstrap: int, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    """Zero-shot contrast of each generated image vs the contrast asked for, and the same classifier on REAL's
    images of those classes (the reference); the predicted class per generated image."""
    from radlens.evaluate.embed import encode_images
    from radlens.metrics.generation import bootstrap_mean
    from radlens.models.prompts import load_class_prompts
    from radlens.models.zeroshot import ClassZeroShotClassifier, dataset_caption_config

    def run(batch: np.ndarray) -> np.ndarray:
        return encode_images(model, batch, device)

    prompt_set = load_class_prompts(prompts, dataset_caption_config(real))
    asked = sorted(set(g["contrast"]))
    found = sorted(set(real.series["contrast"].dropna().astype(str)) | set(asked))
    wanted = list(classes) if classes else [c for c in prompt_set.classes if c in found]
    if len(wanted) < 2:
        wanted = list(prompt_set.classes)
    unknown = sorted({c for c in [*asked, *wanted] if c not in prompt_set.classes})
    if unknown:
        raise ConfigError(f"contrast class(es) {unknown} have no prompts in {prompts!r} (it has {list(prompt_set.classes)})")
    classifier = ClassZeroShotClassifier(model, prompt_set.subset(wanted))
    names = np.asarray(classifier.classes)
    emb = gen_emb if gen_emb is not None else _embed(run, gen, g["position_in_table"].tolist(), batch_size)
    predicted = names[classifier.probabilities(emb).argmax(axis=1)]
    contrast, gp = g["contrast"].to_numpy(), g["patient_id"].to_numpy()
    correct = (predicted == contrast).astype(float)
    result: dict[str, Any] = {
        "prompts": prompt_set.name, "classes": list(classifier.classes), "chance": 1 / len(classifier.classes),
        "accuracy": bootstrap_mean(correct, gp, n_bootstrap, seed),
        "per_contrast": {c: bootstrap_mean(correct[contrast == c], gp[contrast == c], n_bootstrap, seed) for c in asked},
        "confusion": {c: {p: int(((contrast == c) & (predicted == p)).sum()) for p in classifier.classes} for c in asked},
    }
    r = _items(real, real_split, list(classifier.classes), "REAL")
    real_pred = names[classifier.probabilities(_embed(run, real, r["position_in_table"].tolist(), batch_size)).argmax(axis=1)]
    real_ok = (real_pred == r["contrast"].to_numpy()).astype(float)
    result["real_reference"] = {
        "accuracy": bootstrap_mean(real_ok, r["patient_id"].to_numpy(), n_bootstrap, seed),
        "per_contrast": {c: bootstrap_mean(real_ok[r["contrast"].to_numpy() == c], r.loc[r["contrast"] == c, "patient_id"].to_numpy(),
                                           n_bootstrap, seed) for c in sorted(set(r["contrast"]))},
        "note": "the same classifier on REAL's images of these classes: how far the check itself can be trusted"}
    return result, predicted


def evaluate_synth(
    generated: str,
    real: str,
    out: str,
    encoder: str | None = None,
    features: Literal["pooled", "projected"] = "pooled",
    clip: str | None = None,
    contrast_clip: str | None = None,
    prompts: str = "mri_contrast_captions",
    contrast_classes: list[str] | None = None,
    real_contrasts: list[str] | None = None,
    generated_split: Split | None = None,
    real_split: Split | None = None,
    pair_column: str = "source_slice_id",
    text_column: str = "prompt",
    n_bootstrap: int = 1000,
    seed: int = 0,
    batch_size: int = 32,
    device: str = "auto",
    overwrite: bool = False,
) -> int:
    """Evaluate generated images against real ones: FID in a named radlens encoder's features, SSIM/PSNR where
    paired, CLIP image-image and image-text similarity, and the zero-shot contrast check.

    Writes OUT/metrics.json (every number with the model that measured it and a patient-bootstrap 95% CI;
    REAL's own values as the reference next to each), OUT/images.csv (per generated image: ids, asked and
    predicted contrast, paired REAL slice) and OUT/run.json, all at once. Each part runs when its model is
    given: --encoder (FID), --clip (similarities; also the contrast check unless --contrast_clip names another).

    Args:
        generated: prepared 2D dataset of generated images (e.g. the output of radlens synth); its series'
            ``contrast`` column is the contrast each image was asked for.
        real: prepared 2D dataset of real images, prepared like GENERATED (same slice shape and intensity).
        out: output folder; a rerun replaces the files radlens wrote there, nothing else.
        encoder: FID feature extractor: a CLIP/MoCo bundle or run folder, or an image-encoder registry name
            (freshly initialised with --seed); recorded with its SHA-256.
        features: CLIP encoders: pooled image-tower features or the projected embedding.
        clip: CLIP bundle for image-image and image-text similarity (and the contrast check by default).
        contrast_clip: metadata-CLIP bundle for the contrast check (default: --clip).
        prompts: the contrast check's class prompts (a packaged mode-classes set or a YAML file).
        contrast_classes: classes the contrast check chooses among (default: REAL's contrasts and the asked ones).
        real_contrasts: REAL series compared with (default: the contrasts GENERATED asked for).
        generated_split: use only this split of GENERATED (default: all).
        real_split: use only this split of REAL (default: all).
        pair_column: GENERATED slices column naming the REAL slice_id an image is paired with (SSIM/PSNR, paired CLIP).
        text_column: GENERATED slices column holding each image's prompt (falls back to ``text``).
        n_bootstrap: bootstrap resamples of patients for the 95% CIs.
        seed: bootstrap seed (and the weights of an encoder built from a registry name).
        batch_size: images per model pass.
        device: auto, cpu, cuda, cuda:1, ...
        overwrite: write into an existing folder radlens did not create; only radlens' files are replaced, nothing is deleted.
    """
    config = dict(locals())
    from radlens.common.atomic import check_output, staged_output, write_json_atomic
    from radlens.common.runinfo import run_info
    from radlens.io.prepared import PreparedDataset

    if n_bootstrap < 0 or batch_size < 1:
        raise ConfigError(f"n_bootstrap must be >= 0 and batch_size >= 1, got {n_bootstrap} and {batch_size}")
    if encoder is None and clip is None and contrast_clip is None:
        raise ConfigError("nothing to measure: give --encoder (FID), --clip (similarities, contrast check) and/or --contrast_clip")
    check_output(out, overwrite)
    gen_ds, real_ds = PreparedDataset(generated), PreparedDataset(real)
    if gen_ds.card.get("array_shape") != real_ds.card.get("array_shape"):
        raise InputError(gen_ds.path / "dataset.json", f"slices of shape {gen_ds.card.get('array_shape')}, but REAL's are "
                                                       f"{real_ds.card.get('array_shape')}")
    g = _items(gen_ds, generated_split, None, "GENERATED")
    asked = sorted(set(g["contrast"]) - {""})
    r = _items(real_ds, real_split, real_contrasts or asked, "REAL")
    metrics: dict[str, Any] = {"generated": str(generated), "real": str(real), "n_generated": len(g), "n_real": len(r),
                               "asked_contrasts": asked, "real_contrasts": sorted(set(r["contrast"]))}
    metrics["fid"] = _fid(encoder, features, gen_ds, g, real_ds, r, batch_size, device, seed) if encoder else None
    metrics["paired"], pairs = _paired(gen_ds, g, real_ds, pair_column, n_bootstrap, seed)
    table = g[["slice_id", "series_id", "patient_id", "split", "contrast"]].rename(columns={"contrast": "asked_contrast"})
    table["paired_slice_id"] = g[pair_column].where(pairs.notna(), None) if len(pairs) else None
    gen_emb = None
    if clip is not None:
        model, info = _clip_model(clip, gen_ds, real_ds)
        sims, gen_emb, _ = _clip(model, gen_ds, g, real_ds, r, pairs, text_column, batch_size, device, n_bootstrap, seed)
        metrics["clip"] = {**info, **sims}
    else:
        metrics["clip"] = None
    if contrast_clip is not None or clip is not None:
        same = contrast_clip is None or contrast_clip == clip
        model, info = _clip_model(contrast_clip or clip, gen_ds, real_ds)  # type: ignore[arg-type]
        check, predicted = _contrast_check(model, prompts, contrast_classes, gen_ds, g, gen_emb if same else None, real_ds,
                                           real_split, batch_size, device, n_bootstrap, seed)
        metrics["contrast_check"] = {**info, **check}
        table["predicted_contrast"] = predicted
    else:
        metrics["contrast_check"] = None
    with staged_output(out, overwrite, "evaluate synth") as tmp:
        write_json_atomic(tmp / "metrics.json", metrics)
        table.to_csv(tmp / "images.csv", index=False)
        write_json_atomic(tmp / "run.json", run_info("evaluate synth", config, seed))
    print(f"{summary_line(metrics)} -> {out}")
    return 0


def _value(entry: dict[str, Any] | None, key: str = "mean") -> str:
    if not entry or entry.get(key) is None:
        return "n/a"
    ci = entry.get("ci") or {}
    interval = f" [{ci['low']:.3f}, {ci['high']:.3f}]" if ci.get("low") is not None else ""
    return f"{entry[key]:.3f}{interval}"


def summary_line(metrics: dict[str, Any]) -> str:
    """One console line: FID (and the real-halves floor), paired SSIM/PSNR, CLIP similarities, contrast-check accuracy."""
    parts = [f"{metrics['n_generated']} generated vs {metrics['n_real']} real images"]
    if metrics.get("fid"):
        f = metrics["fid"]
        floor = f" (real halves {f['real_halves']['fid']:.3f})" if f.get("real_halves") else ""
        parts.append(f"FID {f['fid']:.3f}{floor} in {f['encoder']['kind']} features")
    if metrics["paired"].get("n_pairs"):
        parts.append(f"{metrics['paired']['n_pairs']} pairs: SSIM {_value(metrics['paired']['ssim'])}, PSNR {_value(metrics['paired']['psnr'])}")
    if metrics.get("clip"):
        parts.append(f"CLIP image-text {_value(metrics['clip']['image_text'])} (real {_value(metrics['clip']['real_image_text'])})")
    if metrics.get("contrast_check"):
        c = metrics["contrast_check"]
        ref = _value((c.get("real_reference") or {}).get("accuracy"))
        parts.append(f"contrast check {_value(c['accuracy'])} (chance {c['chance']:.3f}; on real images {ref})")
    return "; ".join(parts)

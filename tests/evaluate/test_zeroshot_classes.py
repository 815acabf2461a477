"""Zero-shot classes mode: cached class embeddings, softmax, the CLI end to end, bad inputs."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from support.prepared_clip import PROTOCOLS, caption, write_prepared

from radlens.cli import main
from radlens.errors import ConfigError, InputError
from radlens.evaluate.zeroshot import zeroshot
from radlens.evaluate.zeroshot_classes import ClassZeroShotClassifier
from radlens.models.prompts import ClassPrompts, load_class_prompts

CONTRASTS = ["T1w", "T2w", "FLAIR"]  # support.prepared_clip's protocols 0, 1, 2
PREPROCESSING = {"dims": 2, "modality": "MR", "array_shape": [64, 64], "dtype": "float32", "intensity": "synthetic [0, 1]"}


@functools.lru_cache(maxsize=1)
def tiny_model():
    """A tiny-vit2d CLIP (random weights) whose vocabulary covers captions and the packaged prompts."""
    from radlens.models.registry import build_model

    torch.manual_seed(0)
    texts = [caption(p) for p in PROTOCOLS] + [t for ts in load_class_prompts("mri_contrast_captions").prompts for t in ts]
    model = build_model("tiny-vit2d", texts=texts * 2).eval()
    model.preprocessing = PREPROCESSING
    return model


def _prompts() -> ClassPrompts:
    return ClassPrompts("t", ("T1w", "T2w", "FLAIR"), (
        ("A brain MRI, TE 0.012, TR 0.5", "t1_se"), ("A brain MRI, TE 0.1, TR 4",), ("flair", "TE 0.1, TR 9, TI 2.5")))


def test_probabilities_equal_a_direct_softmax():
    model = tiny_model()
    clf = ClassZeroShotClassifier(model, _prompts())
    images = torch.randn(4, 1, 64, 64)
    with torch.no_grad():
        img = model.encode_image(images)
        rows = []
        for texts in _prompts().prompts:
            tok = model.tokenize(list(texts))
            rows.append(torch.nn.functional.normalize(model.encode_text(tok["input_ids"], tok["attention_mask"]).mean(0), dim=0))
        expected = (model.logit_scale * img @ torch.stack(rows).T).softmax(dim=1).numpy()
    probs = clf.predict(images)
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(probs.sum(1), 1.0)


def test_class_embeddings_computed_once(monkeypatch):
    model = tiny_model()
    calls = []
    real = model.encode_text
    monkeypatch.setattr(model, "encode_text", lambda ids, mask: calls.append(len(ids)) or real(ids, mask))
    clf = ClassZeroShotClassifier(model, _prompts())
    assert clf.text_embeddings.shape == (3, model.embed_dim) and calls == [5]  # every prompt once, one batch
    for _ in range(3):
        clf.predict(torch.randn(2, 1, 64, 64))
    assert calls == [5]


def _with_contrast(folder: Path, **changes: str) -> Path:
    """support.prepared_clip's 2D dataset with a ``contrast`` column (``changes``: series_id -> label)."""
    write_prepared(folder, patients={"train": 1, "validation": 1, "test": 4}, n_protocols=3, slices_per_series=2)
    series = pd.read_parquet(folder / "series.parquet")
    series["contrast"] = [changes.get(s, CONTRASTS[k]) for s, k in zip(series["series_id"], series["label"])]
    series.to_parquet(folder / "series.parquet", index=False)
    return folder


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return _with_contrast(tmp_path_factory.mktemp("ds") / "prepared", **{"sub-003_p2": "dwi"})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from radlens.models.bundle import save_bundle

    return save_bundle(tiny_model(), tmp_path_factory.mktemp("bundle") / "tiny", PREPROCESSING)


def test_cli_end_to_end(prepared, bundle, tmp_path):
    out = tmp_path / "zs"
    argv = ["evaluate", "zeroshot", str(bundle), str(prepared), str(out), "--prompts", "mri_contrast_captions",
            "--label_column", "contrast", "--n_bootstrap", "30", "--seed", "5", "--device", "cpu"]
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [".radlens-output.json", "confusion.png", "metrics.json", "predictions.csv", "run.json"]
    pred = pd.read_csv(out / "predictions.csv")
    assert pred.columns.tolist() == ["series_id", "patient_id", *CONTRASTS, "predicted", "true"]
    assert len(pred) == 4 * 3 - 1  # 4 test patients x 3 series, the "dwi" one has no prompts
    np.testing.assert_allclose(pred[CONTRASTS].sum(1), 1.0, rtol=1e-6)
    assert (pred["predicted"] == pred[CONTRASTS].idxmax(axis=1)).all()
    assert pred.set_index("series_id").loc["sub-004_p1", "true"] == "T2w"
    m = json.loads((out / "metrics.json").read_text())
    assert m["mode"] == "classes" and m["label_column"] == "contrast" and m["unit"] == "series" and m["n_series"] == 11
    assert m["classes"] == CONTRASTS and m["classes_absent"] == ["PDw", "T2*w", "STIR"] and "PDw" in m["notes"][0]
    assert m["left_out"] == {c: "no series in split 'test'" for c in ("PDw", "T2*w", "STIR")}
    assert m["over"] == CONTRASTS and "only 4 patient(s)" in " ".join(m["notes"])
    assert m["excluded"] == {"dwi": 1}
    assert {"accuracy", "balanced_accuracy", "macro_auroc", "ci", "chance", "per_class", "confusion_matrix"} <= set(m)
    assert m["chance"]["balanced_accuracy"] == pytest.approx(1 / 3) and m["chance"]["accuracy"] == pytest.approx(4 / 11)
    assert np.array(m["confusion_matrix"]["counts"]).sum() == 11 and m["bootstrap"]["n_requested"] == 30
    assert m["per_class"]["FLAIR"]["n"] == 3 and set(m["per_class"]["T1w"]) == {"recall", "auroc", "ci", "n"}
    # fields prompts are rendered with the dataset's own caption template (support.prepared_clip's short one)
    assert m["prompt_texts"]["T1w"][1] == "A brain MRI, plane NONE, TE 0.012, TR 0.5"
    run = json.loads((out / "run.json").read_text())
    assert run["seed"] == 5 and run["config"]["label_column"] == "contrast"


def test_slices_are_averaged_per_series(prepared):
    from radlens.evaluate.zeroshot_classes import series_class_labels, series_class_probabilities
    from radlens.io.prepared import PreparedDataset

    ds = PreparedDataset(prepared)
    prompts = load_class_prompts("mri_contrast_captions").subset(CONTRASTS)
    clf = ClassZeroShotClassifier(tiny_model(), prompts)
    labels, excluded = series_class_labels(ds, "contrast", "test", prompts.classes)
    assert excluded == {"dwi": 1} and len(labels) == 11
    table = series_class_probabilities(ds, clf, labels.index, "test", batch_size=4, device="cpu").set_index("series_id")
    slices = torch.from_numpy(np.stack([ds.slice(f"sub-004_p0:{r}")[None] for r in range(2)]))
    np.testing.assert_allclose(table.loc["sub-004_p0", CONTRASTS].to_numpy(float), clf.predict(slices).mean(0), rtol=1e-5)


@pytest.fixture()
def no_model(monkeypatch):
    """Fail the test if a model gets loaded: bad inputs must be refused before any work."""
    import radlens.evaluate.embed as embed

    monkeypatch.setattr(embed, "resolve_model", lambda bundle: pytest.fail("model loaded before the inputs were checked"))


def test_bad_inputs_fail_before_any_work(prepared, bundle, tmp_path, no_model):
    out = tmp_path / "zs"
    run = functools.partial(zeroshot, str(bundle), str(prepared), str(out), prompts="mri_contrast_captions")
    with pytest.raises(InputError, match="no column 'contrst' for the class labels") as err:
        run(label_column="contrst")
    assert "series.parquet" in str(err.value) and "contrast" in str(err.value)  # lists the text columns
    with pytest.raises(ConfigError, match="give --label_column"):
        run()
    with pytest.raises(ConfigError, match="needs a 'mode: classes' prompt file"):
        zeroshot(str(bundle), str(prepared), str(out), prompts="mri_contrast", label_column="contrast")
    without = write_prepared(tmp_path / "plain", patients={"train": 1, "validation": 1, "test": 2})
    with pytest.raises(InputError, match="no column 'contrast'"):
        zeroshot(str(bundle), str(without), str(out), prompts="mri_contrast_captions", label_column="contrast")
    one = _with_contrast(tmp_path / "one", **{f"sub-{p:03d}_p{k}": "T1w" for p in range(1, 7) for k in range(3)})
    with pytest.raises(InputError, match="has 1 of the prompt classes"):
        zeroshot(str(bundle), str(one), str(out), prompts="mri_contrast_captions", label_column="contrast")
    assert not out.exists()
    assert main(["evaluate", "zeroshot", str(bundle), str(prepared), str(out), "--prompts", "mri_contrast_captions",
                 "--label_column", "nope"]) == 2

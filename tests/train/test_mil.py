"""``radlens train mil``: MIL heads learn from bags whose signal sits on a few "lesion" slices, folds are by
patient and stratified, each fold starts from fresh weights, outputs parse, bad input is refused by name."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest

from radlens.errors import ConfigError, InputError
from radlens.train.config import OptimConfig, TrainerConfig

D = 8
LABELS = ["lesion", "upper"]
SHIFT = 4.0


def write_bag(path: Path, feats: np.ndarray, encoder_hash: str = "enc-a") -> Path:
    """A feature file as ``radlens extract bags`` writes it (FORMATS.md): slice indices 5, 7, 9, ..."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("feats", data=np.asarray(feats, dtype=np.float32))
        f.create_dataset("slice_index", data=np.arange(len(feats)) * 2 + 5)
        f.attrs["encoder"] = "tiny-vit2d"
        f.attrs["encoder_hash"] = encoder_hash
    return path


def write_cohort(root: Path, n_cv: int = 36, n_test: int = 12, seed: int = 0) -> dict[str, Any]:
    """Patients with one bag (every 5th: two) of 6-14 noise slices whose feature 1 rises with the slice
    position. ``lesion`` positives (every 2nd patient) have 2 slices shifted along feature 0, in the upper
    part of the bag for ``upper`` positives (every 4th), else in the lower part: ``upper`` needs attention
    on the lesion slices (a bag's mean position says nothing)."""
    rng = np.random.default_rng(seed)
    rows, hot = [], {}
    for i in range(n_cv + n_test):
        pid, lesion, upper = f"p{i:02d}", int(i % 2 == 0), int(i % 4 == 0)
        split = "test" if i >= n_cv else ("validation" if i % 4 == 1 else "train")
        for b in range(2 if i % 5 == 0 else 1):
            n = int(rng.integers(6, 15))
            feats = rng.normal(size=(n, D))
            feats[:, 1] += np.linspace(-2, 2, n)
            part = np.arange(n // 3) if upper else np.arange(n - n // 3, n)
            rows_hot = rng.choice(part, 2, replace=False) if lesion else np.array([], dtype=int)
            feats[rows_hot, 0] += SHIFT
            path = f"feats/{pid}_{b}.h5"
            write_bag(root / path, feats)
            hot[path] = set(rows_hot.tolist())
            rows.append({"path": path, "patient_id": pid, "study_id": f"{pid}-s", "series_id": f"{pid}-{b}", "n": n,
                         "split": split, "lesion": lesion, "upper": upper})
    pd.DataFrame(rows).to_csv(root / "bags.csv", index=False)
    return {"root": root, "hot": hot, "table": pd.DataFrame(rows)}


def quick(max_steps: int = 40) -> dict[str, Any]:
    return {"optim": OptimConfig(lr=1e-2, weight_decay=1e-4, warmup_steps=2),
            "trainer": TrainerConfig(max_steps=max_steps, val_every_n_steps=min(10, max_steps), checkpoint_every_n_steps=max_steps,
                                     progress_bar=False, log_every_n_steps=5, accelerator="cpu", devices=1)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return write_cohort(tmp_path_factory.mktemp("bags"))


@pytest.fixture(scope="module")
def cv_run(cohort: dict[str, Any]) -> Path:
    from radlens.train.mil import train_mil

    return train_mil(str(cohort["root"]), out=str(cohort["root"].parent / "mil"), head="gated_abmil", folds=3,
                     n_bootstrap=30, batch_size=8, **quick())


def test_mil_learns_from_lesion_slices_on_held_out_patients(cv_run: Path, cohort: dict[str, Any]) -> None:
    metrics = json.loads((cv_run / "metrics.json").read_text())
    ensemble = metrics["test"]["ensemble"]
    assert ensemble["per_finding"]["lesion"]["auroc"] > 0.85 and ensemble["macro"]["auroc"] > 0.75
    assert ensemble["per_finding"]["lesion"]["threshold_source"] == "validation"
    assert ensemble["bootstrap"]["unit"] == "patient" and ensemble["bootstrap"]["n_patients"] == 12
    assert ensemble["macro"]["ci"]["auroc"]["n"] > 0
    assert len(metrics["test"]["per_fold"]) == len(metrics["validation"]["per_fold"]) == 3
    summary = metrics["validation"]["mean_sd"]["per_finding"]["lesion"]["auroc"]
    assert summary["n_folds"] == 3 and summary["mean"] > 0.7 and summary["sd"] is not None
    assert set(metrics["test"]["mean_sd"]["macro"]) >= {"auroc", "auprc", "f1", "specificity"}
    assert set(metrics["validation"]["per_fold"][0]["macro"]) == {"auroc", "auprc", "ci"}  # no in-sample thresholds
    # Attention finds the lesion slices: their share of the weight beats their share of the slices.
    attention = pd.read_csv(cv_run / "attention.csv")
    test = attention[attention["split"] == "test"]
    assert set(test["fold"]) == {0, 1, 2}
    mass, share = [], []
    for (path, _), group in test.groupby(["path", "fold"]):
        if cohort["hot"][path]:
            on = group["row"].isin(cohort["hot"][path])
            mass.append(group["weight"][on].sum())
            share.append(on.mean())
    assert np.mean(mass) > 2 * np.mean(share)


def test_outputs_exist_and_parse(cv_run: Path, cohort: dict[str, Any]) -> None:
    from radlens.models.bundle import load_model

    for name in ("config.yaml", "run.json", "folds.csv", "predictions.csv", "attention.csv", "attention.png"):
        assert (cv_run / name).is_file(), name
    assert not (cv_run / "failures.csv").exists()
    predictions = pd.read_csv(cv_run / "predictions.csv", dtype={"fold": str})
    assert set(predictions["fold"]) == {"0", "1", "2", "ensemble"}
    assert {"case_id", "patient_id", *LABELS, "score:lesion", "pred:upper", "split"} <= set(predictions.columns)
    assert predictions["score:lesion"].between(0, 1).all()
    ensemble = predictions[predictions["fold"] == "ensemble"]
    per_fold = predictions[(predictions["split"] == "test") & (predictions["fold"] != "ensemble")]
    np.testing.assert_allclose(ensemble["score:lesion"].to_numpy(),
                               per_fold.groupby("case_id", sort=False)["score:lesion"].mean().to_numpy(), rtol=1e-6)
    attention = pd.read_csv(cv_run / "attention.csv")
    sums = attention.groupby(["fold", "path"])["weight"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-5)
    assert set(attention["slice_index"]) <= set(range(5, 5 + 2 * 15, 2))
    for k in range(3):
        fold = cv_run / f"fold-{k}"
        assert (fold / "predictions.csv").is_file() and (fold / "checkpoints" / "last.ckpt").is_file()
        model = load_model(fold, kind="abmil")  # the best/ bundle, with this fold's validation thresholds
        assert model.config["gated"] is True and model.config["n_classes"] == 2 and model.config["in_dim"] == D
        assert set(model.extra["mil"]["thresholds"]) == set(LABELS) and model.extra["mil"]["fold"] == k
        assert model.extra["monitor"] == "val/loss"


def test_folds_are_by_patient_and_stratified(cv_run: Path, cohort: dict[str, Any]) -> None:
    folds = pd.read_csv(cv_run / "folds.csv", dtype={"patient_id": str})
    table = cohort["table"]
    assert folds["patient_id"].is_unique and set(folds["patient_id"]) == set(table["patient_id"])
    test_patients = set(table[table["split"] == "test"]["patient_id"])
    assert set(folds[folds["role"] == "test"]["patient_id"]) == test_patients
    assert (folds[folds["role"] == "test"]["fold"] == -1).all()
    cv = folds[folds["role"] == "cv"].merge(table.groupby("patient_id")[LABELS].max().reset_index(), on="patient_id")
    assert sorted(cv["fold"].unique()) == [0, 1, 2]
    for label in LABELS:  # every fold sees both classes, and positives are spread evenly
        positives = cv.groupby("fold")[label].sum()
        assert positives.max() - positives.min() <= 1 and (positives > 0).all()
        assert (cv.groupby("fold")[label].apply(lambda s: (s == 0).sum()) > 0).all()
    # A patient's bags (some have two) are validated by one fold only: the fold folds.csv gives it.
    predictions = pd.read_csv(cv_run / "predictions.csv", dtype={"fold": str, "patient_id": str})
    validation = predictions[predictions["split"] == "validation"]
    assert validation.groupby("patient_id")["fold"].nunique().max() == 1
    fold_of = dict(zip(folds["patient_id"], folds["fold"].astype(str)))
    assert (validation["patient_id"].map(fold_of) == validation["fold"]).all()
    assert set(validation["case_id"]) == set(table[table["split"] != "test"]["path"])  # every bag once


def test_every_fold_starts_from_fresh_weights(cv_run: Path) -> None:
    from radlens.models.components import weights_digest
    from radlens.train.mil_task import fresh_head

    runs = [json.loads((cv_run / f"fold-{k}" / "run.json").read_text()) for k in range(3)]
    digests = [r["init_weights_sha256"] for r in runs]
    assert len(set(digests)) == 3
    head = json.loads((cv_run / "run.json").read_text())["head_config"]
    # Each recorded initialisation is exactly a fresh head built from the fold's own seed.
    assert digests == [weights_digest(fresh_head(head, r["fold_seed"])) for r in runs]
    assert weights_digest(fresh_head(head, 0)) == weights_digest(fresh_head(head, 0))


def test_resume_reuses_finished_folds_and_a_finished_run_is_not_overwritten(cv_run: Path, cohort: dict[str, Any]) -> None:
    from radlens.train.mil import train_mil

    with pytest.raises(ConfigError, match="already holds a MIL run"):
        train_mil(str(cohort["root"]), out=str(cv_run), head="gated_abmil", folds=3, **quick())
    before = {p: p.stat().st_mtime_ns for p in cv_run.glob("fold-*/checkpoints/*.ckpt")}
    metrics = json.loads((cv_run / "metrics.json").read_text())
    train_mil(str(cohort["root"]), out=str(cv_run), head="gated_abmil", folds=3, n_bootstrap=30, batch_size=8,
              resume="latest", **quick())
    assert {p: p.stat().st_mtime_ns for p in cv_run.glob("fold-*/checkpoints/*.ckpt")} == before  # nothing retrained
    assert json.loads((cv_run / "metrics.json").read_text()) == metrics


def test_clinical_csv_labels_per_patient_with_empty_cells_and_unlabelled_bags(tmp_path: Path) -> None:
    from radlens.train.mil import train_mil

    data = write_cohort(tmp_path / "bags", n_cv=16, n_test=6, seed=1)
    per_patient = data["table"].groupby("patient_id")[LABELS].max().reset_index()
    clinical = per_patient.rename(columns={"patient_id": "image"}).iloc[:-2].astype(object)  # 2 patients unlabelled
    clinical.loc[3, "upper"] = ""  # not known for this patient
    clinical.to_csv(tmp_path / "clinical.csv", index=False)
    out = train_mil(str(data["root"] / "bags.csv"), labels=str(tmp_path / "clinical.csv"), out=str(tmp_path / "mil"),
                    head="pma", head_options={"hidden": 16, "num_heads": 2}, folds=2, n_bootstrap=10, batch_size=4,
                    **quick(max_steps=12))
    failures = pd.read_csv(out / "failures.csv")
    unlabelled = set(per_patient["patient_id"].iloc[-2:])
    assert len(failures) == (data["table"]["patient_id"].isin(unlabelled)).sum()
    assert failures["reason"].str.contains("has no row in").all()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["unit"] == "patient" and metrics["counts"]["skipped_bags"] == len(failures)
    assert "note" in metrics["test"]["ensemble"] or "note" in metrics["validation"]["per_fold"][0]
    predictions = pd.read_csv(out / "predictions.csv", dtype={"fold": str})
    assert (predictions["case_id"] == predictions["patient_id"]).all()  # one row per patient: its bags' mean
    assert not predictions["patient_id"].isin(unlabelled).any()
    assert predictions[predictions["fold"] == "0"]["case_id"].is_unique
    assert json.loads((out / "run.json").read_text())["head_config"]["kind"] == "pma_mil"


def test_console_line_names_labels_left_out_and_what_the_macro_is_over(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from radlens.train.mil import _print, train_mil

    data = write_cohort(tmp_path / "bags", n_cv=16, n_test=6, seed=1)
    table = data["table"].assign(upper=lambda t: np.where(t["split"] == "test", 0, t["upper"]))
    table.to_csv(data["root"] / "bags.csv", index=False)  # no test bag is positive for "upper"
    n_test = int((table["split"] == "test").sum())
    out = train_mil(str(data["root"]), out=str(tmp_path / "mil"), head="mean", folds=2, n_bootstrap=10, batch_size=4,
                    **quick(max_steps=10))
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.match(r"train mil: validation macro AUROC \d\.\d{3} \+- \d\.\d{3} \(mean \+- sd over 2 folds\) "
                    r"over 2 labels; test ensemble macro AUROC \d\.\d{3} \(95% CI \d\.\d{3}-\d\.\d{3}\) ", line), line
    assert (f"over 1 of 2 labels; left out: upper (no positive case among {n_test} bags); {n_test} bags from 6 "
            f"patient(s) -> {out}") in line
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]["ensemble"]["left_out"]) == {"upper"}
    assert metrics["test"]["ensemble"]["macro"]["over"] == ["lesion"]
    # A validation fold without a positive "upper" bag is named with its fold.
    fold = metrics["validation"]["per_fold"][1]["per_finding"]["upper"]
    fold["n_positive"] = 0
    _print(metrics, out)
    line = capsys.readouterr().out
    assert f"over 1-2 of 2 labels per fold; left out: upper in fold 1 (no positive case among {fold['n']} bags)" in line


# Bad input: each is refused by an InputError naming the file, before any fold trains.
def _bad_zero_slices(root: Path) -> tuple[dict[str, Any], str]:
    write_bag(root / "feats/p03_0.h5", np.zeros((0, D)))
    return {}, r"p03_0\.h5: empty bag"


def _bad_width(root: Path) -> tuple[dict[str, Any], str]:
    write_bag(root / "feats/p04_0.h5", np.zeros((5, D - 2)))
    return {}, r"p04_0\.h5: feature size D=6 differs"


def _bad_encoder(root: Path) -> tuple[dict[str, Any], str]:
    write_bag(root / "feats/p06_0.h5", np.zeros((5, D)), encoder_hash="enc-b")
    return {}, r"p06_0\.h5: encoder_hash 'enc-b' differs from 'enc-a'"


def _clinical(root: Path, edit: Any) -> Path:
    table = pd.read_csv(root / "bags.csv").groupby("patient_id")[LABELS].max().reset_index()
    table = edit(table.rename(columns={"patient_id": "image"}).astype(object))
    table.to_csv(root / "clinical.csv", index=False)
    return root / "clinical.csv"


def _bad_patient_without_bag(root: Path) -> tuple[dict[str, Any], str]:
    path = _clinical(root, lambda t: pd.concat([t, pd.DataFrame([{"image": "ghost", "lesion": 1, "upper": 0}])]))
    return {"labels": str(path)}, r"clinical\.csv: 1 patient\(s\) have labels but no bag.*'ghost'"


def _bad_duplicate_patient(root: Path) -> tuple[dict[str, Any], str]:
    path = _clinical(root, lambda t: pd.concat([t, t.iloc[[2]]]))
    return {"labels": str(path)}, r"clinical\.csv: 1 patient\(s\) have more than one row, e.g. 'p02'"


def _bad_label_value(root: Path) -> tuple[dict[str, Any], str]:
    def edit(t: pd.DataFrame) -> pd.DataFrame:
        t.loc[5, "upper"] = "yes"
        return t

    return {"labels": str(_clinical(root, edit))}, r"clinical\.csv: label 'upper' has value 'yes' for image 'p05'"


def _bad_bags_label_value(root: Path) -> tuple[dict[str, Any], str]:
    table = pd.read_csv(root / "bags.csv")
    table.loc[4, "lesion"] = 2
    table.to_csv(root / "bags.csv", index=False)
    return {}, r"bags\.csv: label 'lesion' has value '2'.*0, 1 or empty"


def _bad_too_few_positives(root: Path) -> tuple[dict[str, Any], str]:
    return {"folds": 5}, r"bags\.csv: label 'upper' has 3 positive and 9 negative patient\(s\).*folds=5"


def _bad_duplicate_bag(root: Path) -> tuple[dict[str, Any], str]:
    table = pd.read_csv(root / "bags.csv")
    pd.concat([table, table.iloc[[1]]]).to_csv(root / "bags.csv", index=False)
    return {}, r"bags\.csv: 1 duplicate bag row"


def _bad_test_patient_elsewhere(root: Path) -> tuple[dict[str, Any], str]:
    table = pd.read_csv(root / "bags.csv")
    table.loc[0, "split"] = "test"  # p00 has two bags: now one in test, one in train
    table.to_csv(root / "bags.csv", index=False)
    return {}, r"bags\.csv: 1 patient\(s\) have bags in the 'test' split and in others"


@pytest.mark.parametrize("bad", [_bad_zero_slices, _bad_width, _bad_encoder, _bad_patient_without_bag,
                                 _bad_duplicate_patient, _bad_label_value, _bad_bags_label_value,
                                 _bad_too_few_positives, _bad_duplicate_bag, _bad_test_patient_elsewhere],
                         ids=lambda f: f.__name__[5:])
def test_bad_input_is_refused_naming_the_file(bad: Any, tmp_path: Path) -> None:
    from radlens.train.mil import train_mil

    write_cohort(tmp_path / "bags", n_cv=12, n_test=0)
    kwargs, message = bad(tmp_path / "bags")
    with pytest.raises(InputError, match=message):
        train_mil(str(tmp_path / "bags"), out=str(tmp_path / "mil"), folds=kwargs.pop("folds", 3), batch_size=2,
                  **kwargs, **quick(max_steps=2))
    assert not (tmp_path / "mil" / "fold-0").exists()


def test_bad_options_are_config_errors(cohort: dict[str, Any], tmp_path: Path) -> None:
    from radlens.train.mil import train_mil

    root = str(cohort["root"])
    for kwargs, message in [({"folds": 1}, "folds must be >= 2"), ({"head": "tiny-vit2d"}, "not a MIL head"),
                            ({"head_options": {"in_dim": 4}}, "may not set in_dim"),
                            ({"head": "mean", "head_options": {"depth": 2}}, r"unknown key\(s\) depth"),
                            ({"batch_size": 64}, "batch_size 64 is larger than"),
                            ({"trainer": TrainerConfig(max_steps=5, val_every_n_steps=10)}, "must be <= trainer.max_steps"),
                            ({"label_columns": ["lesion", "stage"]}, None)]:
        with pytest.raises((ConfigError, InputError), match=message or r"no label column\(s\) \['stage'\]"):
            train_mil(root, out=str(tmp_path / "mil"), **{**quick(max_steps=2), **kwargs})


def test_figure_shows_top_slices_with_lesion_masks_from_the_prepared_dataset(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from support.prepared_clip import write_prepared

    import radlens.common.montage as montage
    from radlens.train.mil_figure import find_prepared, save_attention_figure

    prepared = write_prepared(tmp_path / "prep", shape=(16, 16), patients={"train": 2}, n_protocols=1)
    slices = pd.read_parquet(prepared / "slices.parquet")
    masks = np.zeros((4, 16, 16), dtype=np.uint8)
    masks[2, 5:9, 5:9] = 1  # a lesion on slice 2 of each series: a mask for the first, a box for the second
    (prepared / "masks").mkdir()
    first, second = sorted(slices["series_id"].unique())
    np.save(prepared / "masks" / f"{first}.npy", masks)
    slices["mask_path"] = np.where(slices["series_id"] == first, f"masks/{first}.npy", "")
    slices["boxes"] = np.where(slices["slice_id"] == f"{second}:2", json.dumps({"1": [4, 4, 10, 10]}), "{}")
    slices.to_parquet(prepared / "slices.parquet", index=False)

    rows, attention = [], []
    for sid, pid in slices.groupby("series_id")["patient_id"].first().items():
        file = write_bag(tmp_path / "bags" / f"{sid}.h5", np.zeros((4, D)))
        with h5py.File(file, "a") as f:
            f.attrs["prepared"] = str(prepared)
        rows.append({"path": f"{sid}.h5", "series_id": sid, "_positive": sid == second, "_labels": f"[{sid}]"})
        attention += [{"patient_id": pid, "path": f"{sid}.h5", "file": str(file), "row": r, "slice_index": r,
                       "weight": w} for r, w in enumerate([0.1, 0.2, 0.6, 0.1])]
    bags, attention = pd.DataFrame(rows), pd.DataFrame(attention)
    found = find_prepared(bags, {"prepared": str(prepared), "encoder_hash": "enc-a"}, tmp_path)
    assert found is not None and found.path == prepared
    shown: list[Any] = []
    real = montage.save_montage
    monkeypatch.setattr(montage, "save_montage", lambda images, titles, path, masks=None, **kw: shown.append(
        (titles, masks)) or real(images, titles, path, masks, **kw))
    out = save_attention_figure(attention, bags, tmp_path / "attention.png", found, top=2)
    assert out.is_file() and len(shown) == 1
    titles, drawn = shown[0]
    assert len(titles) == 4 and f"[{second}]\nslice 2" in titles[0] and "attention 0.600" in titles[0]  # positives first
    assert drawn[0].sum() == 36 and drawn[2].sum() == 16  # the box of the second series, the mask of the first
    assert find_prepared(bags, {}, tmp_path) is None  # nothing names it: attention vs slice index instead
    assert save_attention_figure(attention, bags, tmp_path / "plot.png", None).is_file()

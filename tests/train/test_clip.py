"""CLIP training end to end on a tiny synthetic prepared dataset (CPU, a handful of steps)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from support.prepared_clip import quick_trainer, write_prepared
from support.prepared_findings import tiny_model, write_findings_prepared

from radlens.cli import main
from radlens.errors import ConfigError, InputError


def _log(run: Path) -> pd.DataFrame:
    """The CSV logs of every (re)start of a run, in order."""
    files = sorted((run / "logs" / "csv").glob("version_*/metrics.csv"))
    return pd.concat([pd.read_csv(f) for f in files], ignore_index=True)


def _train_losses(run: Path) -> pd.Series:
    rows = _log(run).dropna(subset=["train/loss"])
    return rows.set_index("step")["train/loss"]


def test_training_lowers_loss_and_writes_the_run_folder(trained_run: Path) -> None:
    losses = _train_losses(trained_run)
    assert len(losses) == 8
    assert losses.iloc[-3:].mean() < losses.iloc[:3].mean()
    config = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert config["seed"] == 0 and config["loss"]["mode"] == "multi_positive"
    run = json.loads((trained_run / "run.json").read_text())
    assert run["seed"] == 0 and run["radlens_version"]
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    assert (trained_run / "checkpoints" / "step-0000004.ckpt").is_file()
    assert list((trained_run / "logs" / "tensorboard").glob("version_0/events.out.tfevents.*"))
    log = _log(trained_run)
    assert log["val/i2t_label_R@1"].dropna().between(0, 1).all()
    for name in ("best", "last"):
        bundle = json.loads((trained_run / name / "bundle.json").read_text())
        assert bundle["preprocessing"]["array_shape"] == [32, 32]
        assert bundle["preprocessing"]["dims"] == 2


def test_bundle_reloads_with_the_modules_embeddings(trained_run: Path, prepared_2d: Path) -> None:
    import torch

    from radlens.data.datasets import ClipDataset
    from radlens.models.bundle import load_bundle
    from radlens.train.clip_task import ClipTask

    ckpt = torch.load(trained_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    module = ClipTask(load_bundle(trained_run / "last"))
    module.load_state_dict(ckpt["state_dict"])
    reloaded = load_bundle(trained_run / "last")
    ds = ClipDataset(prepared_2d, "test")
    images = torch.stack([ds[i]["image"] for i in range(4)])
    tokens = reloaded.tokenize(ds.texts[:4])
    module.eval()
    with torch.inference_mode():
        torch.testing.assert_close(module.model.encode_image(images), reloaded.encode_image(images))
        torch.testing.assert_close(
            module.model.encode_text(**tokens), reloaded.encode_text(tokens["input_ids"], tokens["attention_mask"])
        )


def test_evaluate_retrieval_reports_metrics_with_chance(trained_run: Path, prepared_2d: Path, tmp_path: Path) -> None:
    from radlens.evaluate.retrieval import evaluate_retrieval

    metrics = evaluate_retrieval(str(trained_run), str(prepared_2d), str(tmp_path / "eval"), "test")
    assert metrics["n_items"] == 8  # 1 test patient x 2 protocols x 4 slices
    assert metrics["i2t_label_R@1"] >= 0.5
    assert metrics["chance_i2t_label_R@1"] == pytest.approx(0.5)
    assert 0 <= metrics["i2t_TE_bin_acc"] <= 1
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["i2t_R@1"] == metrics["i2t_R@1"]


def test_a_finished_run_is_extended_with_resume(trained_run: Path, prepared_2d: Path, tmp_path: Path) -> None:
    """A run that reached max_steps, resumed with more steps, trains on from its weights, optimiser and
    schedule state (Lightning starts a new epoch there). A killed run continuing exactly where it stopped
    is tests/train/test_trajectories.py, for every task."""
    from radlens.data.datasets import ClipDataConfig
    from radlens.train.clip import train_clip

    data = ClipDataConfig(batch_size=8)  # 24 train slices: 3 batches per epoch
    start = {"data": data, "init_from": str(trained_run / "last"), "seed": 3}
    prep = str(prepared_2d)
    full = train_clip(prep, str(tmp_path / "full"), trainer=quick_trainer(max_steps=4, val_every_n_steps=100), **start)
    part = tmp_path / "part"
    train_clip(prep, str(part), trainer=quick_trainer(max_steps=2, val_every_n_steps=100), **start)
    with pytest.raises(ConfigError, match="--resume latest"):
        train_clip(prep, str(part), trainer=quick_trainer(max_steps=4), **start)
    train_clip(prep, str(part), trainer=quick_trainer(max_steps=4, val_every_n_steps=100), resume="latest", **start)
    expected, got = _train_losses(full), _train_losses(part)
    assert list(got.index) == [0, 1, 2, 3]
    pd.testing.assert_series_equal(got.iloc[:2], expected.iloc[:2], rtol=1e-5, atol=1e-6)
    assert torch.load(part / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 4


def _cli(*args: str) -> int:
    return main(["train", "clip", *args])


def test_cli_rejects_unknown_keys_and_wrong_types(prepared_2d: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"prepared": str(prepared_2d), "out": str(tmp_path / "a"), "data": {"batch_sise": 4}}))
    with pytest.raises(SystemExit):
        _cli("--config", str(cfg))
    assert "'data' does not accept option 'batch_sise'" in capsys.readouterr().err  # the key is named
    with pytest.raises(SystemExit):
        _cli(str(prepared_2d), str(tmp_path / "b"), "--data.batch_size", "many")
    with pytest.raises(SystemExit):
        _cli(str(prepared_2d), str(tmp_path / "c"), "--trainer.strategy", "horovod")
    assert not any((tmp_path / d).exists() for d in "abc")


def test_cli_clear_errors_before_training(micro_model: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    not_prepared = tmp_path / "raw"
    not_prepared.mkdir()
    assert _cli(str(not_prepared), str(tmp_path / "run1")) == 2
    assert "not a prepared dataset" in capsys.readouterr().err
    other = write_prepared(tmp_path / "other", shape=(16, 16), patients={"train": 2, "validation": 1})
    args = [str(other), str(tmp_path / "run2"), "--model", micro_model, "--data.batch_size", "4"]
    assert _cli(*args) == 2
    assert "the model takes (1, 32, 32)" in capsys.readouterr().err
    assert not (tmp_path / "run1").exists() and not (tmp_path / "run2" / "checkpoints").exists()
    assert _cli(str(other), str(tmp_path / "run4"), "--loss.mode", "findings") == 2
    assert "needs finding labels" in capsys.readouterr().err and not (tmp_path / "run4").exists()
    if not torch.cuda.is_available():
        assert _cli(str(other), str(tmp_path / "run3"), "--trainer.strategy", "fsdp") == 2
        assert "fsdp shards the model over GPUs" in capsys.readouterr().err


def test_bf16_mixed_precision_trains(prepared_2d: Path, micro_model: str, tmp_path: Path) -> None:
    from radlens.data.datasets import ClipDataConfig
    from radlens.train.clip import train_clip
    from radlens.train.config import OptimConfig

    run = train_clip(str(prepared_2d), str(tmp_path / "run"), ClipDataConfig(batch_size=8), model=micro_model,
                     optim=OptimConfig(lr=1e-3, warmup_steps=1),
                     trainer=quick_trainer(max_steps=8, val_every_n_steps=4, precision="bf16-mixed"))
    losses = _train_losses(run)
    assert losses.notna().all() and losses.iloc[-1] < losses.iloc[0]
    assert (run / "best" / "bundle.json").is_file()


def test_text_longer_than_the_context_is_an_error_before_training(micro_model: str, tmp_path: Path) -> None:
    from radlens.data.datasets import ClipDataConfig
    from radlens.train.clip import train_clip

    ds = write_prepared(tmp_path / "long", shape=(32, 32), patients={"train": 2, "validation": 1})
    slices = pd.read_parquet(ds / "slices.parquet")
    slices.loc[slices["split"] == "validation", "text"] = " ".join(f"word{i}" for i in range(100))
    slices.to_parquet(ds / "slices.parquet", index=False)
    with pytest.raises(InputError, match="more than the context length"):
        train_clip(str(ds), str(tmp_path / "run"), ClipDataConfig(batch_size=4), model=micro_model,
                   trainer=quick_trainer())
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_run_config_reruns_the_command(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """config.yaml holds exactly the command's options: `--config RUN/config.yaml` resolves back to them."""
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "clip", "--config", str(trained_run / "config.yaml"), "--print_config"])
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    saved = yaml.safe_load((trained_run / "config.yaml").read_text())
    assert printed["loss"] == saved["loss"] and printed["seed"] == saved["seed"]
    assert printed["prepared"] == saved["prepared"] and printed["out"] == saved["out"]


def test_findings_loss_trains_a_3d_report_clip(tmp_path: Path) -> None:
    from radlens.data.datasets import ClipDataConfig
    from radlens.train.clip import train_clip
    from radlens.train.config import LossConfig, OptimConfig

    ds = write_findings_prepared(tmp_path / "prep", patients={"train": 16, "validation": 4})
    run = train_clip(str(ds), str(tmp_path / "run"), ClipDataConfig(text_column="report_findings", batch_size=8),
                     model=str(tiny_model(tmp_path / "tiny.json")), optim=OptimConfig(lr=1e-3, warmup_steps=1),
                     trainer=quick_trainer(max_steps=12, val_every_n_steps=6), loss=LossConfig(mode="findings", alpha=0.5))
    losses = _train_losses(run)
    assert losses.iloc[-1] < losses.iloc[0]
    assert yaml.safe_load((run / "config.yaml").read_text())["loss"]["mode"] == "findings"


def test_checkpoints_leave_out_the_frozen_layers_of_a_pretrained_tower(prepared_2d: Path, tmp_path: Path) -> None:
    """MiniLM with its top layer trained: checkpoints keep that layer and the image side, not the frozen
    embeddings and five lower layers (their SHA-256 instead); a run killed after step 2 resumes from that
    checkpoint to the same losses."""
    from support.trajectories import interrupted_at, train_losses

    from radlens.data.datasets import ClipDataConfig
    from radlens.train.clip import train_clip
    from train.conftest import MICRO  # type: ignore[import-not-found]

    model = tmp_path / "minilm1.json"
    model.write_text(json.dumps({**MICRO, "text": {"kind": "minilm", "trainable_layers": 1, "context_length": 64}}))
    args = {"data": ClipDataConfig(batch_size=8), "model": str(model),
            "trainer": quick_trainer(max_steps=4, val_every_n_steps=100, checkpoint_every_n_steps=2, log_every_n_steps=1)}
    full = train_clip(str(prepared_2d), str(tmp_path / "full"), **args)
    ckpt = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    frozen = {"text.model.embeddings", *(f"text.model.encoder.layer.{i}" for i in range(5))}
    assert set(ckpt["frozen_sha256"]) == frozen
    assert not [k for k in ckpt["state_dict"] if k.startswith(tuple(f"model.{name}." for name in frozen))]
    assert any(k.startswith("model.text.model.encoder.layer.5.") for k in ckpt["state_dict"])
    assert (full / "checkpoints" / "last.ckpt").stat().st_size < (full / "last" / "model" / "model.safetensors").stat().st_size / 3
    part = tmp_path / "part"
    with interrupted_at(2):
        train_clip(str(prepared_2d), str(part), **args)
    train_clip(str(prepared_2d), str(part), **args, resume="latest")
    assert train_losses(part)[-2:] == pytest.approx(train_losses(full)[-2:], rel=1e-5)  # steps 3 and 4, after the resume

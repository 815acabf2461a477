"""The shared training engine: interruption saves last.ckpt and resume continues, the time budget counts per
invocation, last.ckpt on a wall-clock cadence, the summary lines, and a quiet console."""

from __future__ import annotations

import signal
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from support.prepared_clip import quick_trainer

from radlens.cli import main
from radlens.train import run as engine
from radlens.train.callbacks import InvocationTimer


def _ckpt_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def _add_callback(monkeypatch: pytest.MonkeyPatch, callback: pl.Callback) -> None:
    """Every Trainer the engine builds in this test also gets ``callback``."""
    real = engine.build_trainer

    def build(*args: Any, **kwargs: Any) -> pl.Trainer:
        trainer = real(*args, **kwargs)
        trainer.callbacks.append(callback)
        return trainer

    monkeypatch.setattr(engine, "build_trainer", build)


class _Interrupt(pl.Callback):
    """Ctrl-C after optimiser step ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step == self.at:
            raise KeyboardInterrupt


def _train(prepared: Path, model: str, out: Path, resume: str | None = None, **trainer: Any) -> Path:
    from radlens.data.datasets import ClipDataConfig
    from radlens.train.clip import train_clip

    return train_clip(str(prepared), str(out), ClipDataConfig(batch_size=8), model=model, resume=resume,
                      trainer=quick_trainer(**trainer))


def test_ctrl_c_saves_last_and_resume_continues(prepared_2d: Path, micro_model: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    _add_callback(monkeypatch, _Interrupt(at=5))
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit) as stopped:  # Lightning's graceful shutdown exits with 1
            _train(prepared_2d, micro_model, run, max_steps=8, checkpoint_every_n_steps=4, val_every_n_steps=4)
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C after the first
    assert stopped.value.code == 1
    assert _ckpt_step(run / "checkpoints" / "last.ckpt") == 5  # not 4, the last step checkpoint
    assert "interrupted at step 5" in capsys.readouterr().out
    monkeypatch.undo()
    _train(prepared_2d, micro_model, run, resume="latest", max_steps=8, checkpoint_every_n_steps=4, val_every_n_steps=4)
    assert _ckpt_step(run / "checkpoints" / "last.ckpt") == 8
    out = capsys.readouterr().out
    assert "train: 3 step(s)" in out and "now at step 8: trainer.max_steps 8 reached" in out
    assert f"best bundle: {run / 'best'} (val/i2t_R@1 = " in out


def test_resuming_a_finished_run_says_there_is_nothing_to_train(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "clip", "--config", str(trained_run / "config.yaml"), "--resume", "latest"]) == 0
    out = capsys.readouterr().out
    assert "train: 0 step(s)" in out and "nothing to train: the checkpoint is already at step 8 of trainer.max_steps 8" in out


class _Slow(pl.Callback):
    def on_train_batch_end(self, *args: Any) -> None:
        time.sleep(0.25)


def test_max_time_is_the_budget_of_each_invocation(prepared_2d: Path, micro_model: str, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    timer = InvocationTimer(duration="00:00:00:01")
    timer.load_state_dict({"time_elapsed": {"train": 3600.0}})  # what Lightning's Timer would count against it
    assert timer.time_elapsed() == 0 and not timer.ran_out
    run = tmp_path / "run"
    _add_callback(monkeypatch, _Slow())
    budget = {"max_steps": 1000, "max_time": "00:00:00:01", "val_every_n_steps": 1000, "checkpoint_every_n_steps": 1000}
    _train(prepared_2d, micro_model, run, **budget)
    first = _ckpt_step(run / "checkpoints" / "last.ckpt")
    assert 2 <= first < 1000
    _train(prepared_2d, micro_model, run, resume="latest", **budget)
    # Lightning's own Timer would restore the second already spent and stop after one step.
    assert _ckpt_step(run / "checkpoints" / "last.ckpt") - first >= 2
    assert "trainer.max_time 00:00:00:01 used up; --resume latest continues with a fresh budget" in capsys.readouterr().out


class _LastProbe(pl.Callback):
    """Records the step stored in last.ckpt after every training step."""

    def __init__(self, path: Path) -> None:
        self.path, self.seen = path, []

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.seen.append((trainer.global_step, _ckpt_step(self.path) if self.path.is_file() else None))


def test_last_checkpoint_on_a_wall_clock_cadence(prepared_2d: Path, micro_model: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    probe = _LastProbe(run / "checkpoints" / "last.ckpt")
    _add_callback(monkeypatch, probe)
    _train(prepared_2d, micro_model, run, max_steps=3, checkpoint_every_n_steps=100, val_every_n_steps=100,
           checkpoint_minutes=1e-9)
    assert probe.seen == [(1, 1), (2, 2), (3, 3)]  # without the cadence: no last.ckpt before the end


def test_training_console_is_quiet(prepared_2d: Path, micro_model: str, tmp_path: Path,
                                   capfd: pytest.CaptureFixture[str]) -> None:
    args = ["train", "clip", str(prepared_2d), str(tmp_path / "run"), "--data.batch_size", "8", "--model", micro_model,
            "--trainer.max_steps", "4", "--trainer.val_every_n_steps", "2"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(args) == 0
    out, err = capfd.readouterr()
    text = out + err
    for noise in ("Tip:", "litlogger", "GPU available", "Epoch", "/-2", "eval mode", "deprecated", "v_num"):
        assert noise not in text, noise
    assert "train: 4 step(s)" in out and "best bundle:" in out
    assert "train: 100%" in text.replace("\r", "\n")  # the bar counts steps (4/4), not epochs
    lightning_warnings = [w for w in caught if "lightning" in str(w.filename) or issubclass(w.category, DeprecationWarning)]
    assert not lightning_warnings, [str(w.message) for w in lightning_warnings]


def test_trainer_help_names_the_time_format_and_each_tasks_monitor(capsys: pytest.CaptureFixture[str]) -> None:
    from radlens.train.clip_task import ClipTask
    from radlens.train.moco_task import MocoTask
    from radlens.train.multilabel import FindingScoresTask

    with pytest.raises(SystemExit):
        main(["train", "clip", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "DD:HH:MM:SS" in text and "exp(-d^2 / 2 sigma^2)" in text  # --trainer.max_time, --loss.sigma
    assert ClipTask.metrics[0] in text and "val/{i2t,t2i}_{R@1,R@5,R@10,mean_rank,median_rank}" in text
    for task in (MocoTask, FindingScoresTask):
        assert all(name in text for name in task.metrics), task

"""Two-process DDP training on the CPU (gloo), launched the way users launch it: the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch


def test_ddp_on_two_cpu_processes_trains_and_writes_one_run(prepared_2d: Path, micro_model: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "radlens.cli", "train", "clip", str(prepared_2d), str(tmp_path / "run"), "--data.batch_size", "4",
           "--model", micro_model, "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
           "--trainer.max_steps", "6", "--trainer.val_every_n_steps", "3", "--trainer.checkpoint_every_n_steps", "3",
           "--trainer.progress_bar", "false", "--trainer.log_every_n_steps", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 6
    log = pd.concat(pd.read_csv(f) for f in (run / "logs" / "csv").glob("version_*/metrics.csv"))
    assert log["train/loss"].notna().sum() == 6  # rank 0 logs every step once
    assert log["val/t2i_R@1"].notna().any()
    assert (run / "best" / "model" / "model.safetensors").is_file() and (run / "last" / "bundle.json").is_file()

"""Samples/s and peak memory of CLIP training steps (forward + backward + AdamW) per registry config.

Each config runs in its own subprocess so that its peak memory is its own. On CPU the tiny configs
run fully, ``mrclip-vit-b16`` at batch 2 for a few steps, and the big 3D configs are skipped (too
slow) unless named with ``--configs``. A hub text encoder that is not on this machine is replaced by
a BERT-base-shaped tower from scratch (same compute per token, smaller vocabulary). Texts are
MR-CLIP-style metadata captions (~85 tokens).

    python benchmarks/clip_step.py                                   # CPU, fp32
    python benchmarks/clip_step.py --device cuda --precision bf16    # GPU (target: mrclip-vit-b16 >= 1000/s on H100)

Prints a markdown table and appends it to benchmarks/RESULTS.md under "## clip_step".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).parent / "RESULTS.md"
CPU_SKIP = {"m3d-vit3d", "ctclip-vit3d"}
CAPTION = (
    "A brain MRI, plane axial, Scanner (Manufacturer, Model, Field Strength): (SIEMENS, Skyra, 3.0), "
    "Acquisition (Description, Sequence, Variant): (t2_tse_tra_p2, SE, SK_SP_OSP), Imaging Parameters "
    "(Echo Time, Repetition Time, Inversion Time, Flip Angle): (0.094, 4.0, NONE, 150.0)"
)
BERT_BASE = {"kind": "scratch", "hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072}


def default_batch(name: str, device: str, dims: int) -> int:
    """Batch sizes that fit: small on CPU, large enough to fill an H100 on CUDA."""
    if device == "cpu":
        return 16 if name.startswith("tiny") else 2
    if name.startswith("tiny"):
        return 512
    return 256 if dims == 2 else 4


def run_one(name: str, device: str, precision: str, batch: int | None, steps: int, warmup: int) -> dict:
    """Time ``steps`` training steps of one config after ``warmup`` steps; returns one result row."""
    import resource

    import torch

    from radlens.losses.contrastive import ContrastiveLoss
    from radlens.models.registry import _text_model_config, build_model, get_config

    config = get_config(name)
    note = ""
    if config["text"]["kind"] == "pretrained" and _text_model_config(config["text"]) is None:
        config["text"] = {**BERT_BASE, "context_length": config["text"].get("context_length", 512)}
        note = "text: BERT-base-shaped scratch tower (hub weights not here)"
    dims = len(config["image"]["input_shape"])
    batch = batch or default_batch(name, device, dims)
    torch.manual_seed(0)
    model = build_model(config, texts=[CAPTION] * 8).to(device).train()
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    loss_fn = ContrastiveLoss("clip")
    images = torch.randn(batch, *model.input_shape, device=device)
    tokens = {k: v.to(device) for k, v in model.tokenize([CAPTION] * batch).items()}
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")

    def step() -> None:
        with autocast:
            loss = loss_fn(*model(images, tokens["input_ids"], tokens["attention_mask"]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    if device == "cuda":
        peak = f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB (GPU)"
    else:
        peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (RSS)"
    return {
        "config": name,
        "params": f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M",
        "input": "x".join(map(str, model.input_shape)),
        "batch": batch,
        "steps": steps,
        "samples_per_s": f"{batch * steps / seconds:.3g}",
        "step_ms": f"{1000 * seconds / steps:.0f}",
        "peak_memory": peak,
        "note": note,
    }


def table(rows: list[dict]) -> str:
    """Markdown table of result rows (a skipped config has only ``config`` and ``note``)."""
    cols = ["config", "params", "input", "batch", "steps", "samples_per_s", "step_ms", "peak_memory", "note"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def append_results(text: str) -> None:
    """Append a section to RESULTS.md (created if missing; other benchmarks append there too)."""
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n")
    # One O_APPEND write: a concurrent append by another benchmark cannot be lost, unlike a rewrite.
    with RESULTS.open("a") as f:
        f.write(text)


def main() -> None:
    from radlens.models.registry import config_files

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", help="registry names (default: all; big 3D skipped on CPU)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--batch", type=int, help="batch size for every config (default: per config)")
    parser.add_argument("--steps", type=int, help="timed steps (default: 3 on CPU, 20 on CUDA)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--no-append", action="store_true", help="print only, do not append to RESULTS.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = args.steps or (3 if args.device == "cpu" else 20)
    if args.worker:
        print(json.dumps(run_one(args.worker, args.device, args.precision, args.batch, steps, args.warmup)))
        return
    names = args.configs or sorted(config_files())
    rows = []
    for name in names:
        if args.device == "cpu" and not args.configs and name in CPU_SKIP:
            rows.append({"config": name, "note": "skipped on CPU (too slow); name it with --configs to run"})
            continue
        cmd = [sys.executable, __file__, "--worker", name, "--device", args.device, "--precision", args.precision,
               "--steps", str(steps), "--warmup", str(args.warmup)] + (["--batch", str(args.batch)] if args.batch else [])
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if done.returncode != 0:
            rows.append({"config": name, "note": f"failed: {done.stderr.strip().splitlines()[-1][:120]}"})
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(table(rows[-1:]).splitlines()[-1], flush=True)
    command = "python " + " ".join([Path(__file__).relative_to(Path.cwd()).as_posix()
                                    if Path(__file__).is_relative_to(Path.cwd()) else __file__] + sys.argv[1:])
    device = _device_name(args.device)
    section = (
        f"\n## clip_step\n\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {device}, {args.precision}, "
        f"forward+backward+AdamW\n\n`{command}`\n\n{table(rows)}\n"
    )
    print(section)
    if not args.no_append:
        append_results(section)


def _device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


if __name__ == "__main__":
    main()

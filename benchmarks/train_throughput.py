"""Training throughput of the world model on CPU: state (transitions/s) and 64x64 pixels
(frames/s), with the fraction of step time spent waiting for data.

Each configuration trains on a small dataset collected here (PointMaze U-maze, colored-noise
actions) with the shipped model configs; throughput is measured after a warm-up, from the
trainer's own clock (`metrics.csv`: seconds, data_wait).

    python benchmarks/train_throughput.py              # ~4 min on 2 cores
    python benchmarks/train_throughput.py --steps 40   # a smoke run
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from wmrobot.cli_common import compose
from wmrobot.config import validate
from wmrobot.datasets import collect
from wmrobot.datasets.policies import PolicySpec
from wmrobot.model import ModelConfig
from wmrobot.steps import model_config as _model_config
from wmrobot.train import TrainConfig, train


def configs(name: str, steps: int) -> tuple[ModelConfig, TrainConfig]:
    """The shipped ``model=name`` config, as `wmrobot train` types and checks it."""
    typed = validate("train", compose("train", [f"model={name}", "dataset=x"]))
    cfg = replace(typed.model.train, steps=steps, log_every=max(steps // 4, 1), tensorboard=False)
    cfg.critic = replace(cfg.critic, finetune=0)  # the joint step is what is timed
    return _model_config(typed.model), cfg


def measure(data: str, out: Path, model: ModelConfig, cfg: TrainConfig) -> dict[str, float]:
    train(data, out, model, cfg, progress=False)
    with open(out / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["loss"]]  # joint steps only
    first, last = rows[1], rows[-1]  # from the first log after warm-up to the end
    steps = int(last["step"]) - int(first["step"])
    seconds = float(last["seconds"]) - float(first["seconds"])
    wait = sum(float(r["data_wait"]) for r in rows[2:]) / max(len(rows) - 2, 1)
    return {"steps/s": steps / seconds, "data_wait": wait}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        state, pixels = str(Path(tmp) / "state.zarr"), str(Path(tmp) / "pixels.zarr")
        spec = {"layout": "umaze"}
        collect(state, "wmrobot/PointMaze-v0", spec, policy=PolicySpec(beta=1.0), episodes=50,
                seed=0, progress=False)  # fmt: skip
        collect(pixels, "wmrobot/PointMaze-v0", spec, policy=PolicySpec(beta=1.0), episodes=30,
                seed=0, pixels=64, progress=False)  # fmt: skip
        print(f"{args.threads} threads, {args.steps} steps per run\n")
        print("| model | batch x horizon | steps/s | throughput | data wait |")
        print("|---|---|---|---|---|")
        for name, data, critic in [
            ("state_mlp", state, False),
            ("state_mlp", state, True),
            ("pixels_cnn", pixels, False),
        ]:
            model, cfg = configs(name, args.steps)
            model = replace(model, critic=critic)
            r = measure(data, Path(tmp) / f"{name}-{critic}", model, cfg)
            b, k = cfg.batch_size, cfg.horizon
            if model.encoder == "mlp":
                rate = f"{r['steps/s'] * b * k:,.0f} transitions/s"
            else:  # online frames (B x (K+1)), target frames (B x K), goal frames (B)
                frames = b * (k + 1) + b * k + b
                rate = f"{r['steps/s'] * frames:,.0f} frames/s ({r['steps/s'] * b * k:,.0f} tr/s)"
            label = f"{name}{' + critic' if critic else ''}"
            print(f"| {label} | {b} x {k} | {r['steps/s']:.1f} | {rate} | "
                  f"{100 * r['data_wait']:.1f}% |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

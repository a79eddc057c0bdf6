"""Ablation of the anti-collapse terms: the same JEPA run with none, VICReg and SIGReg.

The cost head is switched off (its supervised distances alone keep latents informative), so
only the JEPA objective and the anti-collapse term shape the encoder. Runs with the targets
taken from the online encoder with their gradient (PLDM's set-up, where nothing but the
anti-collapse term stands against the constant solution) and with the EMA target encoder
and stop-gradient (I-JEPA's). Prints, from each run's metrics.csv, the smallest
per-dimension std and the effective rank of the latents at the first and last logged step.

    python benchmarks/collapse_ablation.py            # ~10 min on 2 cores
    python benchmarks/collapse_ablation.py --steps 300 --episodes 30   # a smoke run
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from wmrobot.datasets import collect
from wmrobot.datasets.policies import PolicySpec
from wmrobot.model import ModelConfig
from wmrobot.train import LossWeights, TrainConfig, train

RUNS = [  # (label, anticollapse, stop_gradient)
    ("none, online targets", "none", False),
    ("VICReg, online targets", "vicreg", False),
    ("SIGReg, online targets", "sigreg", False),
    ("none, EMA + stop-grad", "none", True),
    ("VICReg, EMA + stop-grad", "vicreg", True),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = ModelConfig(
        latent_dim=16, hidden=64, depth=2, goal_dim=8, ema=0.99, latent_weight=0.0,
        cost_weight=1.0,
    )  # fmt: skip
    base = TrainConfig(
        steps=args.steps, batch_size=256, horizon=5, lr=1e-3, weight_decay=1e-4, warmup=100,
        grad_clip=10.0, loss=LossWeights(1.0, 1.0, 0.04, cost=0.0), log_every=100, seed=0,
        tensorboard=False,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        data = str(Path(tmp) / "umaze.zarr")
        collect(
            data, "wmrobot/PointMaze-v0", {"layout": "umaze"}, policy=PolicySpec(beta=1.0),
            episodes=args.episodes, seed=0, progress=False,
        )  # fmt: skip
        print(f"{args.steps} steps per run, PointMaze U-maze, {args.episodes} episodes, D=16\n")
        print(
            "| run | min std first -> last | effective rank first -> last "
            "| prediction loss last | collapsed (flag) | s |"
        )
        print("|---|---|---|---|---|---|")
        for label, anticollapse, stop in RUNS:
            cfg = replace(base, anticollapse=anticollapse, stop_gradient=stop)
            out = Path(tmp) / label.replace(" ", "_").replace(",", "")
            start = time.perf_counter()
            train(data, out, model, cfg, progress=False)
            seconds = time.perf_counter() - start
            with open(out / "metrics.csv") as f:
                rows = list(csv.DictReader(f))
            a, b = rows[0], rows[-1]
            print(
                f"| {label} | {float(a['z_std_min']):.3f} -> {float(b['z_std_min']):.4f} "
                f"| {float(a['effective_rank']):.1f} -> {float(b['effective_rank']):.1f} "
                f"| {float(b['prediction']):.2e} | {int(b['collapsed'])} | {seconds:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()

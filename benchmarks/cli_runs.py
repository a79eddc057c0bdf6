"""The benchmarks that drive the ``wmrobot`` CLI as a user would: one command at a time, each
stage resumable (a finished stage's output is never made again)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

WMROBOT = [sys.executable, "-m", "wmrobot.cli"]


def run(args: list[str], log: Path, threads: int) -> float:
    """Run a wmrobot command, its output to ``log``; the wall time in seconds."""
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
           "OMP_NUM_THREADS": str(threads)}  # fmt: skip
    start = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run([*WMROBOT, *args], stdout=f, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): wmrobot {' '.join(args)}; see {log}")
    return time.perf_counter() - start


def train_and_plan(
    env: str, data: Path, name: Path, seed: int, train: list[str], threads: int
) -> tuple[dict, dict]:
    """``wmrobot train`` on ``data`` into ``NAME`` (with ``train`` overrides), then ``wmrobot
    plan`` with MPPI, planner seeds 0, 1, 2 on the task's set into ``NAME-plan``, logs beside
    them; each skipped when done. The checkpoint's meta.json and the plan's first result."""
    ckpt, plan = name, name.with_name(name.name + "-plan")
    if not (ckpt / "model.pt").exists():
        shutil.rmtree(ckpt, ignore_errors=True)
        args = ["train", f"dataset={data}", f"seed={seed}", f"threads={threads}", f"out={ckpt}"]
        run([*args, *train], name.with_name(name.name + "-train.log"), threads)
    if not (plan / "results.json").exists():
        run(["plan", f"checkpoint={ckpt}", f"env={env}", "seeds=[0,1,2]", f"threads={threads}",
             "video=false", "baseline=false", f"out={plan}"],
            name.with_name(name.name + "-plan.log"), threads)  # fmt: skip
    meta = json.loads((ckpt / "meta.json").read_text())
    return meta, json.loads((plan / "results.json").read_text())["results"][0]

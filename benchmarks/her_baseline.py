"""The demo's model-free row on its own: SB3 SAC + HER (or plain SAC) trained online for as many
env steps as the demo's dataset holds, then run on the demo's evaluation set.

The evaluation set is the demo's: ``wmrobot/PointMaze-v0`` with configs/env/pointmaze.yaml's
kwargs, its 30 start/goal pairs drawn with seed 1234 and a 100-step budget. The default budget
of 9,729 env steps is the size of the demo's colored-noise dataset (100 episodes). It prints the
success rate per seed, mean ± std, steps to the goal and the wall time of each seed's training,
and writes the row to ``--out``/results.json. Run:

    python benchmarks/her_baseline.py [--rl sac_her] [--steps 9729] [--seeds 0 1] [--workers 2]

Each seed trains in its own process on one torch thread.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import yaml

from wmrobot.bench import rl_result
from wmrobot.envs import eval_pairs, make_env
from wmrobot.rl import RLConfig, run_seeds

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rl", default="sac_her", help="configs/rl/<name>.yaml")
    parser.add_argument("--steps", type=int, default=9729)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--workers", type=int, default=None, help="default: one per seed/core")
    parser.add_argument("--out", default=None, help="default: a temporary directory")
    args = parser.parse_args()

    cfg = RLConfig(**yaml.safe_load((CONFIGS / "rl" / f"{args.rl}.yaml").read_text()))
    env_cfg = yaml.safe_load((CONFIGS / "env" / "pointmaze.yaml").read_text())
    env_id, kwargs, ev = env_cfg["id"], env_cfg["kwargs"], env_cfg["eval"]
    probe = make_env(env_id, kwargs)
    pairs = eval_pairs(probe, ev["pairs"], ev["seed"], ev["max_distance"])
    probe.close()
    out = Path(args.out or tempfile.mkdtemp(prefix="her_baseline_"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"{cfg.label}: {asdict(cfg)}")
    print(
        f"{env_id} {kwargs}: {len(pairs)} pairs (seed {ev['seed']}), budget {ev['budget']}; "
        f"{args.steps:,} env steps per seed, seeds {args.seeds}; load {os.getloadavg()[0]:.2f}"
    )
    start = time.perf_counter()
    runs = run_seeds(
        env_id, kwargs, cfg, args.steps, args.seeds, pairs, ev["budget"], out, args.workers, False
    )
    result = rl_result(cfg, args.steps, runs)
    wall = time.perf_counter() - start
    for seed, success in zip(args.seeds, result.success, strict=True):
        print(f"  seed {seed}: {100 * success:.1f}% success")
    print(
        f"{result.method}: {100 * result.success_mean:.1f}% ± {100 * result.success_std:.1f} "
        f"over {len(result.success)} seeds, {result.steps_to_success:.1f} steps to the goal, "
        f"{result.latency_ms:.2f} ms per decision; {wall:.0f} s wall in all "
        f"(load {os.getloadavg()[0]:.2f}); agents in {out}"
    )
    (out / "results.json").write_text(
        json.dumps({"config": asdict(cfg), "wall_s": wall, "result": asdict(result)}, indent=2)
    )


if __name__ == "__main__":
    main()

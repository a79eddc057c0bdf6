"""Decision latency of the agents side by side: Mode-2 (planner), hybrid (actor-seeded planner)
and Mode-1 (actor), for one env, on the default model size.

Latency does not depend on the weights, so the model is the default state model
(configs/model/state_mlp.yaml, with its critic) with the default actor head
(configs/distill.yaml), freshly initialised; the env is the U-maze. Every agent is timed in
turn within each round (interleaved), so a slow spell of a shared machine shows as spread
rather than skewing one ratio; the table gives medians over rounds.

    python benchmarks/agent_latency.py              # ~1 min on 2 cores (+ a first Numba compile)
    python benchmarks/agent_latency.py --rounds 2 --calls 10
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import fields, replace

import torch

from wmrobot.agent import ActorAgent, PlanningAgent
from wmrobot.cli import compose
from wmrobot.config import validate
from wmrobot.distill import attach_actor
from wmrobot.envs import make_env
from wmrobot.eval.rollout import decision_latency_ms
from wmrobot.model import ModelConfig, WorldModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=30, help="decisions timed per agent/round")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    train = validate("train", compose("train", ["dataset=unused"]))
    distill = validate("distill", compose("distill", ["checkpoint=unused"]))
    cfg = ModelConfig(**{f.name: getattr(train.model, f.name) for f in fields(ModelConfig)})
    cfg = replace(cfg, task="goal")  # task=auto: PointMaze's dataset would make it a goal model
    env = make_env("wmrobot/PointMaze-v0", {"layout": "umaze"})
    low, high = torch.as_tensor(env.action_space.low), torch.as_tensor(env.action_space.high)
    model = WorldModel(4, 2, cfg, action_low=low, action_high=high).eval()
    attach_actor(model, distill.actor.hidden, distill.actor.depth)
    goal_obs = env.unwrapped.goal_observation
    obs, _ = env.reset(seed=0)

    planner = replace(distill.planner, backend="numba")
    half = replace(planner, samples=planner.samples // 2)
    agents = {
        f"Mode-2 MPPI {planner.samples} x {planner.iterations}": PlanningAgent(
            model, planner, goal_obs
        ),
        f"Mode-2 MPPI {half.samples} x {half.iterations}": PlanningAgent(model, half, goal_obs),
        f"hybrid MPPI {half.samples} x {half.iterations}": PlanningAgent(
            model, half, goal_obs, hybrid=True
        ),
        "Mode-1 actor (compiled)": ActorAgent(model, goal_obs),
        "Mode-1 actor (torch)": ActorAgent(model, goal_obs, fast=False),
    }
    times: dict[str, list[float]] = {name: [] for name in agents}
    for _ in range(args.rounds):
        for name, agent in agents.items():
            calls = args.calls * (10 if name.startswith("Mode-1") else 1)
            times[name].append(decision_latency_ms(agent, obs, calls=calls))
    reference = statistics.median(times[next(iter(agents))])
    print(f"{args.rounds} rounds, {args.threads} thread(s), numba backend, U-maze, one env\n")
    print("| agent | decision latency (median ms) | range over rounds | speed-up over Mode-2 |")
    print("|---|---:|---:|---:|")
    for name, values in times.items():
        med = statistics.median(values)
        spread = f"{min(values):.3f}-{max(values):.3f}"
        print(f"| {name} | {med:.3f} | {spread} | {reference / med:.1f}x |")
    actor = statistics.median(times["Mode-1 actor (compiled)"])
    print(f"\nMode-1 is {reference / actor:.0f}x faster than Mode-2 (goal: >= 50x).")
    env.close()


if __name__ == "__main__":
    main()

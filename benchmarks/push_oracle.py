"""The physics limit of planning Push with a goal-distance cost: the planners on the simulator.

Any learned model is at best as good as the simulator it imitates. Here the planner's
``Dynamics`` *is* MuJoCo (``mujoco.rollout`` from the exact physics state), and the cost is the
task's own pose distance (block position error + 0.1 x the heading chord), so a failure here is
the objective's or the planner's, not the model's. This is a diagnostic, not a method: a real
planner never touches the simulator (DESIGN.md).

With ``--critic CHECKPOINT`` the planner also adds ``--value-weight`` x that checkpoint's critic
(its cost-to-go, on the encoded simulator states) at the horizon: the simulator's dynamics with a
learnt cost-to-go, which tells whether a critic is good enough before any model error enters.

Usage: python benchmarks/push_oracle.py [--pairs 20] [--horizon 20] [--samples 128] ...
Prints success, final distance and seconds per episode on the frozen set's first pairs, beside
the scripted expert and random actions on the same pairs.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import mujoco
import numpy as np
import torch
from mujoco import rollout

from wmrobot.envs.evalsets import load_evalset, success_rate
from wmrobot.envs.push import ANGLE_WEIGHT
from wmrobot.planners import make_planner
from wmrobot.planners.mpc import RecedingHorizon

STATE = mujoco.mjtState.mjSTATE_FULLPHYSICS


class SimDynamics:
    """The Dynamics protocol on the simulator: a latent is the full physics state; the goal
    latent carries the desired (x, y, cos, sin) in its first four entries."""

    def __init__(self, env, approach: float = 0.0, critic=None) -> None:
        base = env.unwrapped
        self.approach, self.critic = approach, critic
        self.has_value = critic is not None
        self.goal_z: torch.Tensor | None = None  # the critic's goal latent, set per episode
        self.model, self.skip = base.model, base.frame_skip
        self.data = [mujoco.MjData(self.model)]
        self.latent_dim = mujoco.mj_stateSize(self.model, STATE)
        self.action_low = torch.as_tensor(env.action_space.low, dtype=torch.float32)
        self.action_high = torch.as_tensor(env.action_space.high, dtype=torch.float32)
        self.qpos = 1  # the state vector: time, then qpos (pusher x, y; block x, y, theta), ...

    def state(self, env) -> torch.Tensor:
        out = np.empty(self.latent_dim)
        mujoco.mj_getState(self.model, env.unwrapped.data, out, STATE)
        return torch.as_tensor(out, dtype=torch.float64)[None]

    def rollout(self, z0: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        ctrl = np.repeat(actions.double().numpy(), self.skip, axis=1)
        states, _ = rollout.rollout(self.model, self.data, z0.double().numpy(), ctrl)
        return torch.as_tensor(states[:, self.skip - 1 :: self.skip])

    def cost(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor:
        q = z[..., self.qpos + 2 : self.qpos + 5]
        d_pos = (q[..., :2] - goal_z[..., :2]).norm(dim=-1)
        heading = torch.stack([q[..., 2].cos(), q[..., 2].sin()], dim=-1)
        chord = (heading - goal_z[..., 2:4]).norm(dim=-1)
        cost = d_pos + ANGLE_WEIGHT * chord
        if self.approach > 0:  # shaping: the pusher's distance to the block's centre
            cost = cost + self.approach * (z[..., self.qpos : self.qpos + 2] - q[..., :2]).norm(
                dim=-1
            )
        return cost.float()

    def observation(self, z: torch.Tensor) -> torch.Tensor:
        """Physics states (..., S) -> the env's observation vectors (..., 11)."""
        q, v = z[..., self.qpos : self.qpos + 5], z[..., self.qpos + 5 : self.qpos + 10]
        return torch.cat(
            [q[..., :2], v[..., :2], q[..., 2:4], q[..., 4:5].cos(), q[..., 4:5].sin(), v[..., 2:]],
            dim=-1,
        ).float()

    def value(self, z: torch.Tensor, goal_z: torch.Tensor) -> torch.Tensor:
        """The critic's cost-to-go of physics states ``z`` (..., S) to the episode's goal."""
        with torch.no_grad():
            latent = self.critic.encode(self.observation(z))
            return self.critic.value(latent, self.goal_z.expand_as(latent))


def run(args: argparse.Namespace) -> None:
    evalset = load_evalset("push")
    evalset = dataclasses.replace(evalset, pairs=evalset.pairs[: args.pairs])
    env = evalset.make_env()
    critic = None
    if args.critic:
        from wmrobot.model import WorldModel

        critic = WorldModel.load(args.critic)
    dyn = SimDynamics(env, args.approach, critic)
    cfg = {
        "name": args.planner, "backend": "torch", "horizon": args.horizon,
        "samples": args.samples, "iterations": args.iterations, "elites": args.elites,
        "temperature": args.temperature, "init_std": 1.0, "min_std": 0.05, "max_std": 2.0,
        "beta": args.beta, "terminal_weight": args.terminal_weight,
        "value_weight": args.value_weight, "smooth_weight": 0.0, "replan_every": args.replan_every,
    }  # fmt: skip
    planner = make_planner(dyn, cfg, seed=args.seed)
    wins, finals, clock = 0, [], time.perf_counter()
    for pair in evalset.pairs:
        obs, info = env.reset(seed=args.seed, options=pair)
        goal = torch.zeros(1, dyn.latent_dim, dtype=torch.float64)
        goal[0, :4] = torch.as_tensor(obs["desired_goal"], dtype=torch.float64)
        if critic is not None:
            goal_obs = env.unwrapped.goal_observation(obs["desired_goal"][None])
            with torch.no_grad():
                dyn.goal_z = critic.encode(torch.as_tensor(goal_obs, dtype=torch.float32))
        agent = RecedingHorizon(planner, args.replan_every)
        agent.reset()
        for _ in range(evalset.budget):
            action = agent.act(dyn.state(env), goal)[0].numpy().astype(np.float32)
            obs, _, terminated, truncated, info = env.step(action)
            if info["is_success"] or terminated or truncated:
                break
        wins += bool(info["is_success"])
        finals.append(info["distance"])
    per_episode = (time.perf_counter() - clock) / len(evalset.pairs)
    expert, _ = success_rate(evalset, "expert")
    random_actions, _ = success_rate(evalset, "random")
    print(
        f"push oracle {args.planner} H={args.horizon} N={args.samples}x{args.iterations} "
        f"replan={args.replan_every} terminal={args.terminal_weight} "
        f"approach={args.approach} critic={args.critic} x{args.value_weight}: success "
        f"{wins}/{len(evalset.pairs)}, final distance {np.mean(finals):.3f} "
        f"(median {np.median(finals):.3f}), {per_episode:.1f} s/episode | expert "
        f"{expert:.0%}, random {random_actions:.0%} on the same {len(evalset.pairs)} pairs, "
        f"budget {evalset.budget}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--planner", default="mppi", choices=["mppi", "cem", "icem"])
    p.add_argument("--horizon", type=int, default=20)
    p.add_argument("--samples", type=int, default=128)
    p.add_argument("--iterations", type=int, default=4)
    p.add_argument("--elites", type=int, default=16)
    p.add_argument("--temperature", type=float, default=0.01)
    p.add_argument("--beta", type=float, default=0.0)
    p.add_argument("--terminal-weight", type=float, default=5.0)
    p.add_argument("--replan-every", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--approach", type=float, default=0.0, help="x pusher-block distance in the cost"
    )
    p.add_argument("--critic", default=None, help="a checkpoint whose critic adds cost-to-go")
    p.add_argument("--value-weight", type=float, default=7.0)
    torch.set_num_threads(1)
    run(p.parse_args())


if __name__ == "__main__":
    main()

"""Training data from an EpisodeStore: the model it needs, window batches for the JEPA loss,
hindsight transitions for the critic."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from wmrobot.datasets import EpisodeStore, WindowSampler
from wmrobot.errors import DatasetError
from wmrobot.model.world_model import ModelConfig, WorldModel
from wmrobot.train.critic import CriticConfig, HindsightGoals


def observation_keys(store: EpisodeStore) -> tuple[str, str]:
    """The (observation, achieved goal) keys a goal-conditioned dataset must hold."""
    keys = set(store.keys)
    if {"obs/observation", "obs/achieved_goal"} <= keys:
        return "obs/observation", "obs/achieved_goal"
    raise DatasetError(
        f"{store.path!r} has keys {sorted(keys)}; training needs a goal-conditioned dataset "
        f"with obs/observation and obs/achieved_goal (e.g. from wmrobot/PointMaze-v0)"
    )


REWARD_SCALE_FLOOR = 1e-3  # the unit of a dataset whose rewards are all zero


REWARD_KEYS = ("reward", "terminated")


def check_reward_dataset(store: EpisodeStore) -> None:
    """Refuse, in one line, a dataset without the rewards a reward task learns from."""
    missing = [k for k in REWARD_KEYS if k not in store.keys]
    if missing:
        raise DatasetError(f"{store.path!r} has no {missing[0]!r} column; collect it again")


def is_goal_dataset(store: EpisodeStore) -> bool:
    """Whether ``store`` is of a goal-conditioned task (it records achieved goals)."""
    return {"obs/observation", "obs/achieved_goal"} <= set(store.keys)


def state_key(store: EpisodeStore) -> str:
    """The dataset key of the state vector: a goal task's or Dict env's ``obs/observation``,
    or a Box observation's ``obs``."""
    for key in ("obs/observation", "obs", "obs/state"):
        if key in store.keys:
            return key
    raise DatasetError(
        f"{store.path!r} has keys {sorted(store.keys)}; training needs a state observation "
        f"(obs, or obs/observation of a Dict observation)"
    )


def resolve_task(store: EpisodeStore, cfg: ModelConfig) -> ModelConfig:
    """``cfg`` with ``task="auto"`` made "goal" or "reward" by the dataset, and, for a reward
    task, ``continuation`` made true when any episode terminated, a null ``reward_scale``
    made the root mean square of its rewards and a null ``gamma`` :func:`discount`'s."""
    task = cfg.task
    if task == "auto":
        task = "goal" if is_goal_dataset(store) else "reward"
    if task == "goal":
        observation_keys(store)  # the one-line refusal of a dataset without goals
        return dataclasses.replace(cfg, task="goal")
    check_reward_dataset(store)
    cont = cfg.continuation
    if cont is None:
        cont = bool(np.asarray(store.array("terminated")[: store.n_rows]).any())
    scale = cfg.reward_scale
    if scale is None:  # normalised regression: in units of the data's reward RMS
        stats = store.attrs["stats"]["reward"]
        mean, std = np.asarray(stats["mean"], float), np.asarray(stats["std"], float)
        rms = float(np.sqrt(np.mean(mean**2 + std**2)))
        scale = max(rms, REWARD_SCALE_FLOOR)
    gamma = discount(store) if cfg.gamma is None else cfg.gamma
    return dataclasses.replace(
        cfg, task="reward", continuation=cont, reward_scale=scale, gamma=gamma
    )


def discount(store: EpisodeStore) -> float:
    """TD-MPC2's discount for the episode length T of the env that made ``store``: (T/5 - 1)
    / (T/5), clipped to [0.95, 0.995] (Reacher's 50 steps: 0.95; 1000 steps: 0.995); 0.99
    for an env without a time limit."""
    from wmrobot.envs import episode_length

    spec = store.attrs["env"]
    steps = episode_length(spec["id"], spec.get("kwargs"))
    if not steps:
        return 0.99
    return float(np.clip((steps / 5 - 1) / (steps / 5), 0.95, 0.995))


def build_model(store: EpisodeStore, cfg: ModelConfig) -> WorldModel:
    """A fresh model for ``store``'s spaces, normalised by its observation statistics
    (``cfg.task`` "auto" resolved by :func:`resolve_task`)."""
    cfg = resolve_task(store, cfg)
    obs_key = state_key(store)
    stats = store.attrs["stats"][obs_key]
    mean = torch.tensor(stats["mean"], dtype=torch.float32)
    std = torch.tensor(stats["std"], dtype=torch.float32)
    spaces = store.attrs["spaces"]
    if "action_low" not in spaces:
        raise DatasetError(f"{store.path!r} does not record its action bounds; collect it again")
    image_shape = tuple(store.array("pixels").shape[1:]) if "pixels" in store.keys else None
    return WorldModel(
        obs_dim=len(mean),
        action_dim=len(spaces["action_low"]),
        cfg=cfg,
        obs_mean=mean,
        obs_std=std,
        action_low=torch.tensor(spaces["action_low"], dtype=torch.float32),
        action_high=torch.tensor(spaces["action_high"], dtype=torch.float32),
        image_shape=image_shape,
        state_key=obs_key,
    )


def check_compatible(model: WorldModel, store: EpisodeStore) -> None:
    """Refuse, in one line, a dataset whose spaces are not the ones ``model`` was built for."""
    obs_key = model.state_key
    if obs_key not in store.keys:
        raise DatasetError(
            f"{store.path!r} has no {obs_key!r}, the observation the model was trained on; "
            f"use a dataset of the model's task"
        )
    obs_dim = store.array(obs_key).shape[1]
    action_dim = store.array("action").shape[1]
    image = tuple(store.array("pixels").shape[1:]) if "pixels" in store.keys else None
    wants = {"observation size": model.obs_dim, "action size": model.action_dim}
    has = {"observation size": obs_dim, "action size": action_dim}
    if "pixels" in model.input_keys:
        wants["image shape"], has["image shape"] = model.image_shape, image
    for what, value in wants.items():
        if has[what] != value:
            raise DatasetError(
                f"{store.path!r} has {what} {has[what]}, but the model was trained on {value} "
                f"({store.attrs.get('env', {}).get('id', '?')}); use a dataset of the model's task"
            )


def task_functions(store: EpisodeStore) -> tuple[Callable, Callable | None]:
    """The task's vectorised ``is_success(achieved, desired)`` (the critic's notion of having
    reached a goal) and ``goal_observation(desired)`` (the state a planner encodes as its
    goal; None if the task has none), from the env that made ``store``."""
    from wmrobot.envs import make_env

    spec = store.attrs["env"]
    env = make_env(spec["id"], spec.get("kwargs", {}))
    test = getattr(env.unwrapped, "is_success", None)
    goal_obs = getattr(env.unwrapped, "goal_observation", None)
    env.close()
    if test is None:
        raise DatasetError(
            f"{spec['id']} has no is_success(achieved, desired) test, which the critic needs; "
            f"train with model.critic=false"
        )
    return test, goal_obs


def to_device(batch: Any, device: torch.device) -> Any:
    """A nested dict of tensors, moved to ``device``."""
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch.to(device, non_blocking=True)


class Batches:
    """Training batches in the model's inputs, drawn with the caller's generator.

    ``sample`` gives ``{"windows": ..., "critic": ...}`` (the critic's part only when
    ``critic`` is given, and beside windows only when ``joint``): windows of ``horizon``
    steps with encoder inputs along each (frame stacks built from the rows before it),
    actions, achieved goals and hindsight goals; and (state, next state, goal) transitions
    for the critic's TD loss. ``goal_views`` (implied by ``critic``): :meth:`goal_inputs` shows
    rows as a planner shows goals (the task's ``goal_observation``).
    """

    def __init__(
        self,
        store: EpisodeStore,
        model: WorldModel,
        horizon: int,
        batch_size: int,
        critic: CriticConfig | None = None,
        device: torch.device | str = "cpu",
        joint: bool = True,
        goal_views: bool = False,
    ) -> None:
        # A reward task's rows have no achieved goal: only row_inputs serves them (the dream).
        self.ag_key = observation_keys(store)[1] if model.task != "reward" else None
        self.joint = joint
        self.input_keys, self.stack = dict(model.input_keys), model.frames
        self.model, self.batch_size, self.device = model, batch_size, torch.device(device)
        keys = [*self.input_keys.values(), "action", *([self.ag_key] if self.ag_key else [])]
        self.sampler = WindowSampler(store, keys, steps=horizon + self.stack - 1)
        ends = store.episode_ends
        lengths = np.diff(np.concatenate([[0], ends]))
        self.episode_start = torch.as_tensor(np.repeat(ends - lengths, lengths))
        self.critic_cfg = critic
        self.is_success = self.goal_observation = None
        if critic is not None:
            self.goals = HindsightGoals(ends, critic)
        if critic is not None or goal_views:
            self.is_success, self.goal_observation = task_functions(store)

    def sample(self, gen: torch.Generator, windows: bool = True) -> dict[str, Any]:
        """One training batch on the device: windows (unless ``windows=False``: the critic's
        transitions alone, encoded each time; fine-tuning uses :class:`LatentTransitions`) and,
        with a critic, its transitions."""
        batch = {"windows": self.windows(gen)} if windows else {}
        if self.critic_cfg is not None and (self.joint or not windows):
            batch["critic"] = self.transitions(gen)
        return to_device(batch, self.device)

    def row_inputs(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encoder inputs at single rows (B,): frame stacks repeat an episode's first frame."""
        out = {}
        for name, key in self.input_keys.items():
            if name == "pixels" and self.stack > 1:
                back = torch.arange(1 - self.stack, 1)  # oldest first
                stacked = (rows[:, None] + back).maximum(self.episode_start[rows][:, None])
                out[name] = self.sampler.rows(key, stacked)
            else:
                out[name] = self.sampler.rows(key, rows)
        return out

    def windows(self, gen: torch.Generator) -> dict[str, Any]:
        """``batch_size`` windows: inputs (B, K+1, ...), actions (B, K, A), achieved goals
        (B, K+1, G), hindsight goal inputs (B, ...) and their achieved goals (B, G)."""
        s, sampler, n = self.stack, self.sampler, self.batch_size
        batch = sampler.sample(n, gen)
        inputs = self.model.window_inputs(batch)  # (B, K+1, ...), frame stacks built
        goal_rows = torch.randint(sampler.n_rows, (n,), generator=gen)
        goal_inputs = {}
        for name, key in self.input_keys.items():
            g = sampler.rows(key, goal_rows)
            if name == "pixels" and s > 1:  # a goal image is shown as a still stack
                g = g[:, None].expand(-1, s, *g.shape[1:])
            goal_inputs[name] = g
        return {
            "inputs": inputs,
            "actions": batch["action"][:, s - 1 :],
            "achieved": batch[self.ag_key][:, s - 1 :],
            "goal_inputs": goal_inputs,
            "goal_achieved": sampler.rows(self.ag_key, goal_rows),
        }

    def goal_inputs(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encoder inputs of rows (B,) shown as goals, as a planner shows its goal: the task's
        goal state for its achieved goal (``goal_observation``) and the row's frame as a still
        stack."""
        out = {}
        for name, key in self.input_keys.items():
            value = self.sampler.rows(key, rows)
            if name == "pixels" and self.stack > 1:
                value = value[:, None].expand(-1, self.stack, *value.shape[1:])
            elif name == "state" and self.goal_observation is not None:
                desired = self.goal_observation(self.sampler.rows(self.ag_key, rows).numpy())
                value = torch.as_tensor(desired, dtype=value.dtype)
            out[name] = value
        return out

    def transitions(self, gen: torch.Generator) -> dict[str, Any]:
        """The critic's batch: encoder inputs of states, next states and hindsight goals (goal
        states made as a planner makes them, with the task's goal_observation), whether the
        next state reaches the goal (B,) and the episode's steps to it (B,)."""
        gb = self.goals.sample(self.critic_cfg.batch_size, gen)
        half = len(gb.rows)
        inputs = self.row_inputs(torch.cat([gb.rows, gb.next_rows]))
        parts = {name: value.split(half) for name, value in inputs.items()}
        achieved = self.sampler.rows(self.ag_key, torch.cat([gb.next_rows, gb.goal_rows])).numpy()
        reached = self.is_success(achieved[:half], achieved[half:])
        return {
            "now": {name: p[0] for name, p in parts.items()},
            "next": {name: p[1] for name, p in parts.items()},
            "goal": self.goal_inputs(gb.goal_rows),
            "reached": torch.as_tensor(np.asarray(reached, dtype=bool)),
            "steps": gb.steps,
        }


class LatentTransitions:
    """The critic's batches on a frozen encoder, as :meth:`Batches.transitions` draws them
    (the same goals from the same generator), with every row's target latent and goal latent
    encoded once up front: a fine-tuning step is then a gather, not three encoder passes, which
    makes the critic affordable for pixel models. Batches carry ``z``, ``z_next``, ``goal_z``
    (B, D) in place of encoder inputs."""

    CHUNK = 2048  # rows encoded per pass

    def __init__(self, batches: Batches, model: WorldModel) -> None:
        if batches.critic_cfg is None:
            raise ValueError("LatentTransitions needs Batches made with a critic config")
        self.batches, self.device = batches, batches.device
        n, z, goal_z = batches.sampler.n_rows, [], []
        with torch.no_grad():
            for start in range(0, n, self.CHUNK):
                rows = torch.arange(start, min(n, start + self.CHUNK))
                for out, inputs in (
                    (z, batches.row_inputs(rows)),
                    (goal_z, batches.goal_inputs(rows)),
                ):
                    out.append(model.encode_target(to_device(inputs, self.device)).float())
        self.z, self.goal_z = torch.cat(z), torch.cat(goal_z)
        self.achieved = batches.sampler.rows(batches.ag_key, torch.arange(n)).numpy()

    def sample(self, gen: torch.Generator) -> dict[str, Any]:
        """One critic batch ``{"critic": ...}`` on the device."""
        b = self.batches
        gb = b.goals.sample(b.critic_cfg.batch_size, gen)
        reached = b.is_success(
            self.achieved[gb.next_rows.numpy()], self.achieved[gb.goal_rows.numpy()]
        )
        on = lambda rows: rows.to(self.device)  # noqa: E731
        return {
            "critic": {
                "z": self.z[on(gb.rows)],
                "z_next": self.z[on(gb.next_rows)],
                "goal_z": self.goal_z[on(gb.goal_rows)],
                "reached": torch.as_tensor(np.asarray(reached, dtype=bool), device=self.device),
                "steps": gb.steps.to(self.device),
            }
        }


def non_finite_key(windows: dict[str, Any], input_keys: dict[str, str]) -> str | None:
    """The dataset key of the first non-finite value in a window batch, if any."""
    named = {
        **{input_keys[k]: v for k, v in windows["inputs"].items()},
        "action": windows["actions"],
    }
    for key, value in named.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            return key
    return None

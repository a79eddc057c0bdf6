"""Agents with stable-baselines3's verbs (``predict``, ``save``, ``load``): Mode-1 (the actor),
Mode-2 (planning in latent space), the hybrid (the planner seeded by the actor), random."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wmrobot.errors import CheckpointError, ConfigError
from wmrobot.files import write_atomically
from wmrobot.model.world_model import WorldModel
from wmrobot.planners import PlannerConfig, RecedingHorizon, as_config, make_planner
from wmrobot.train.checkpoint import load_checkpoint

Obs = dict[str, np.ndarray] | np.ndarray
# A Dict observation's key whose rank tells one observation from a batch, and that rank.
_SINGLE_RANK = {"desired_goal": 1, "observation": 1, "pixels": 3}


def _batched(obs: Obs) -> tuple[Obs, bool]:
    """A batch of observations (B, ...) from one or many: a Box observation (an array) or a
    Dict one (goal tasks, gym Dict envs, pixels)."""
    if not isinstance(obs, dict):
        obs = np.asarray(obs)
        return (obs[None], True) if obs.ndim == 1 else (obs, False)
    key = next(k for k in _SINGLE_RANK if k in obs)
    single = np.asarray(obs[key]).ndim == _SINGLE_RANK[key]
    return ({k: np.asarray(v)[None] for k, v in obs.items()} if single else obs), single


MODES = ("1", "2", "hybrid")
AGENT_FILE = "agent.json"  # an agent's settings, beside its model's checkpoint files
SETTINGS = {"ActorAgent": ("agent", "fast"), "PlanningAgent": ("agent", "mode", "planner", "seed")}


def save_agent(model: WorldModel, path: str | Path, settings: dict[str, Any]) -> Path:
    """Write the model's checkpoint and the agent's ``settings`` (JSON) into directory ``path``."""
    path = model.save(path)  # with the metadata of the checkpoint it was loaded from
    text = json.dumps(settings, indent=2).encode()
    write_atomically(path / AGENT_FILE, lambda f: f.write(text))
    return path


def load_agent(path: str | Path, kind: str) -> tuple[WorldModel, dict[str, Any]]:
    """The model and the settings of the agent ``kind`` saved in ``path``; never executes code
    from the files (JSON, and weights read with ``weights_only``)."""
    model, _ = load_checkpoint(path)
    file = Path(path) / AGENT_FILE
    try:
        settings = json.loads(file.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{str(path)!r} holds a model but no {AGENT_FILE}: load it with load_checkpoint, "
            f"or save an agent there with agent.save(path)"
        ) from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{str(file)!r} is malformed: {e}") from None
    saved = settings.get("agent") if isinstance(settings, dict) else None
    if saved in SETTINGS and saved != kind:
        raise CheckpointError(
            f"{str(file)!r} holds agent={saved!r}, not {kind}: load it with {saved}.load"
        )
    if saved != kind or not set(SETTINGS[kind]) <= set(settings):
        raise CheckpointError(f"{str(file)!r} is malformed: {kind} needs {SETTINGS[kind]}")
    return model, settings


class Observer:
    """The encoder inputs of a batch of env observations, and of their goals.

    State: ``observation``, and ``goal_observation(desired_goal)`` for the goal. Pixels:
    ``pixels`` and the env's ``goal_pixels`` (an env made with ``obs_mode="state+pixels"``);
    with ``frame_stack`` S > 1 the last S frames of each episode, the first repeated until
    there are S (as the training windows at an episode's start), the goal frame S times.
    ``reset()`` at new episodes, ``keep(indices)`` when some of a batch's episodes end.
    """

    def __init__(
        self, model: WorldModel, goal_observation: Callable[[np.ndarray], np.ndarray] | None
    ) -> None:
        self.model, self.goal_observation = model, goal_observation
        self.names, self.frames = tuple(model.input_keys), model.frames
        self.stack: torch.Tensor | None = None

    def reset(self) -> None:
        self.stack = None

    def keep(self, indices: np.ndarray | torch.Tensor) -> None:
        if self.stack is not None:
            self.stack = self.stack[torch.as_tensor(indices, dtype=torch.long)]

    def __call__(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents of the observations and of their goals: (B, D), (B, D); a reward task has
        no goal (zeros)."""
        reward_task = self.model.task == "reward"
        inputs: dict[str, torch.Tensor] = {}
        goal: dict[str, torch.Tensor] = {}
        if "state" in self.names:
            inputs["state"] = torch.as_tensor(
                state_of(obs, self.model.state_key), dtype=torch.float32
            )
            if not reward_task:
                if self.goal_observation is None:
                    raise ConfigError("this task has no goal_observation(desired_goal) for a goal")
                goal_state = self.goal_observation(obs["desired_goal"])
                goal["state"] = torch.as_tensor(goal_state, dtype=torch.float32)
        if "pixels" in self.names:
            if "pixels" not in obs or ("goal_pixels" not in obs and not reward_task):
                raise ConfigError(
                    "this model reads pixels: make the env with obs_mode='state+pixels' "
                    "(wmrobot plan does so for pixel checkpoints)"
                )
            frame = torch.as_tensor(np.ascontiguousarray(obs["pixels"]))
            if self.frames > 1:
                if self.stack is None or len(self.stack) != len(frame):
                    self.stack = frame[:, None].repeat(1, self.frames, 1, 1, 1)
                else:
                    self.stack = torch.cat([self.stack[:, 1:], frame[:, None]], dim=1)
                frame = self.stack
            inputs["pixels"] = frame
            if not reward_task:
                goal_frame = torch.as_tensor(np.asarray(obs["goal_pixels"]))
                if self.frames > 1:
                    goal_frame = goal_frame[:, None].repeat(1, self.frames, 1, 1, 1)
                goal["pixels"] = goal_frame
        z = self.model.encode(inputs)
        return z, (torch.zeros_like(z) if reward_task else self.model.encode(goal))


def state_of(obs: Obs, key: str) -> np.ndarray:
    """The state vector the dataset stores as ``key`` (``obs`` or ``obs/<name>``), read from
    an env observation: a Box one, a Dict one's ``<name>``, or the ``state`` of a gym env
    made with ``obs_mode="state+pixels"``."""
    if not isinstance(obs, dict):
        return np.asarray(obs)
    name = key.split("/", 1)[1] if "/" in key else "state"
    return np.asarray(obs[name])


def observation_kwargs(model: WorldModel, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``env_kwargs`` for an env whose observations carry what ``model`` reads: a pixel model
    gets ``obs_mode="state+pixels"`` at its image size (frames and goal frames)."""
    if "pixels" not in model.input_keys or model.image_shape is None:
        return dict(env_kwargs)
    height, width = model.image_shape[:2]
    # A gym env's pixel dataset records the render_mode it was collected with; the observation
    # mode renders frames itself.
    kwargs = {k: v for k, v in env_kwargs.items() if k != "render_mode"}
    return {**kwargs, "obs_mode": "state+pixels", "width": width, "height": height}


def require_actor(model: WorldModel, mode: str, checkpoint: str = "DIR") -> None:
    """Refuse, in one line, an agent ``mode`` that needs the actor head ``model`` lacks (a
    reward-task model's policy prior is its actor)."""
    if model.actor is None and model.policy is None:
        raise ConfigError(
            f"agent.mode={mode} needs a model with an actor head; make one with "
            f"`wmrobot distill checkpoint={checkpoint}` and plan with the checkpoint it writes"
        )


class FastActor:
    """Mode-1 of a state MLP world model, compiled: normalise, encode the observation and the
    goal state, run the actor, rescale to the action bounds, all in one call
    (:func:`~wmrobot.agent_numba.run_actor`; the hybrid's imagined rollout likewise), where
    torch spends most of a one-env decision dispatching some 40 small operators. It runs the
    model's export (:meth:`WorldModel.export`).
    ``FastActor.build(model)`` is None for models it cannot run (use torch then)."""

    def __init__(self, model: WorldModel) -> None:
        # numba loads only when a compiled actor is built (it takes a second to import)
        from wmrobot.agent_numba import run_actor, run_actor_rollout
        from wmrobot.planners.numba.kernels import pack_mlp

        self.run_actor, self.run_rollout = run_actor, run_actor_rollout
        exported = model.export()
        d, a = exported.latent_dim, exported.action_dim
        self.mean, self.std = exported.obs_mean, exported.obs_std
        self.encoder = pack_mlp(exported.encoder, len(exported.obs_mean), "encoder")
        self.actor = pack_mlp(exported.actor, 2 * d, "actor")
        low, high = exported.action_low, exported.action_high
        self.mid, self.half = (high + low) / 2, (high - low) / 2
        self.predictor = None
        if exported.predictor_kind == "mlp":  # z' = z + net([z, a])
            self.predictor = pack_mlp(exported.predictor, d + a, "predictor")

    @classmethod
    def build(cls, model: WorldModel) -> FastActor | None:
        if model.actor is None or tuple(model.input_keys) != ("state",):
            return None
        try:
            return cls(model)
        except ConfigError:  # not Linear/LayerNorm/ReLU Sequentials
            return None

    def proposal(self, z: np.ndarray, goal_z: np.ndarray, horizon: int) -> np.ndarray | None:
        """The actor's actions along its own imagined rollout (B, H, A), from latents (B, D);
        None if the predictor is not a residual MLP (use the torch rollout then)."""
        if self.predictor is None:
            return None
        bounds = (self.mid, self.half)
        return self.run_rollout(self.actor, self.predictor, bounds, z, goal_z, horizon)

    def __call__(self, obs: np.ndarray, goal_obs: np.ndarray) -> np.ndarray:
        """obs (B, O), goal states (B, O) -> actions (B, A) inside the bounds."""
        bounds = (self.mean, self.std, self.mid, self.half)
        return self.run_actor(self.encoder, self.actor, bounds, obs, goal_obs)


@torch.no_grad()
def actor_plan(
    model: WorldModel,
    z: torch.Tensor,
    goal_z: torch.Tensor,
    horizon: int,
    fast: FastActor | None = None,
):
    """The actor's proposal: its actions along its own imagined rollout, (B, H, A); compiled
    (``fast``, a :class:`FastActor` of ``model``) where the model allows it."""
    if fast is not None:
        actions = fast.proposal(z.numpy(), goal_z.numpy(), horizon)
        if actions is not None:
            return torch.from_numpy(actions)
    state = model.predictor.init_state(z)
    actions = []
    for _ in range(horizon):
        a = model.act(z, goal_z)
        z, state = model.predictor.step(z, a, state)
        actions.append(a)
    return torch.stack(actions, dim=1)


class ActorAgent:
    """Mode-1: encode the observation and the goal, one pass of the actor head, act.

    State MLP models run compiled (:class:`FastActor`, the same actions up to float32
    rounding, faster for one env: ``benchmarks/agent_latency.py``); others, or ``fast=False``,
    in torch.
    """

    def __init__(
        self,
        model: WorldModel,
        goal_observation: Callable[[np.ndarray], np.ndarray],
        fast: bool = True,
    ) -> None:
        require_actor(model, "1")
        self.model = model.eval()
        self.goal_observation = goal_observation
        self.observer = Observer(model, goal_observation)
        self.fast = FastActor.build(model) if fast else None
        self.settings = {"agent": "ActorAgent", "mode": "1", "fast": fast}

    def save(self, path: str | Path) -> Path:
        """Write the model's checkpoint and this agent's settings into directory ``path``."""
        return save_agent(self.model, path, self.settings)

    @classmethod
    def load(
        cls, path: str | Path, goal_observation: Callable[[np.ndarray], np.ndarray]
    ) -> ActorAgent:
        """The agent saved in ``path``; ``goal_observation`` as for the constructor (code, so
        never read from the file)."""
        model, settings = load_agent(path, "ActorAgent")
        return cls(model, goal_observation, fast=bool(settings["fast"]))

    def reset(self) -> None:
        self.observer.reset()

    def keep(self, indices: np.ndarray) -> None:
        self.observer.keep(indices)

    @torch.no_grad()
    def predict(
        self, obs: Obs, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, None]:
        obs, single = _batched(obs)
        if self.fast is not None:
            goal = self.goal_observation(obs["desired_goal"])
            action = self.fast(obs["observation"], goal)
        else:
            action = self.model.act(*self.observer(obs)).numpy()
        return (action[0] if single else action), None


class PlanningAgent:
    """Mode-2: encode the observation and the goal, plan in latent space, act.

    ``planner`` names the planner (CEM, iCEM, MPPI or gradient) and its budget; the agent
    replans every ``planner.replan_every`` steps, warm-started. ``goal_observation`` maps
    ``desired_goal`` (B, G) to the observation the agent would have at the goal (B, O), e.g.
    ``env.unwrapped.goal_observation``; the planner sees only latents. ``hybrid``: each plan
    starts from the actor's proposal (:func:`actor_plan`) instead of the shifted last plan
    (the model needs an actor head).
    """

    def __init__(
        self,
        model: WorldModel,
        planner: PlannerConfig,
        goal_observation: Callable[[np.ndarray], np.ndarray],
        seed: int = 0,
        hybrid: bool = False,
    ) -> None:
        self.model = model.eval()
        self.goal_observation = goal_observation
        planner = as_config(planner)
        self.settings = {
            "agent": "PlanningAgent",
            "mode": "hybrid" if hybrid else "2",
            "planner": dataclasses.asdict(planner),
            "seed": seed,
        }
        prior = None
        if hybrid:
            require_actor(model, "hybrid")
            horizon, fast = planner.horizon, FastActor.build(model)
            prior = lambda z, goal_z: actor_plan(model, z, goal_z, horizon, fast)  # noqa: E731
        self.controller = RecedingHorizon(
            make_planner(model, planner, seed), planner.replan_every, prior
        )
        self.observer = Observer(model, goal_observation)

    def save(self, path: str | Path) -> Path:
        """Write the model's checkpoint and this agent's settings (planner, mode, seed) into
        directory ``path``."""
        return save_agent(self.model, path, self.settings)

    @classmethod
    def load(
        cls, path: str | Path, goal_observation: Callable[[np.ndarray], np.ndarray]
    ) -> PlanningAgent:
        """The agent saved in ``path``, planning afresh from its seed; ``goal_observation`` as
        for the constructor (code, so never read from the file)."""
        model, settings = load_agent(path, "PlanningAgent")
        hybrid = settings["mode"] == "hybrid"
        return cls(model, settings["planner"], goal_observation, settings["seed"], hybrid)

    def reset(self) -> None:
        self.controller.reset()
        self.observer.reset()

    def keep(self, indices: np.ndarray) -> None:
        """Continue with these rows of the batch only (the other episodes ended)."""
        self.controller.keep(torch.as_tensor(indices, dtype=torch.long))
        self.observer.keep(indices)

    @torch.no_grad()
    def predict(
        self, obs: Obs, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, None]:
        obs, single = _batched(obs)
        action = self.controller.act(*self.observer(obs)).numpy()
        return (action[0] if single else action), None


class RandomAgent:
    """Uniform random actions, seeded: the floor every method must clear."""

    def __init__(self, low: np.ndarray, high: np.ndarray, seed: int = 0) -> None:
        self.low, self.high = np.asarray(low), np.asarray(high)
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def predict(
        self, obs: Obs, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, None]:
        obs, single = _batched(obs)
        n = len(next(iter(obs.values())) if isinstance(obs, dict) else obs)
        action = self.rng.uniform(self.low, self.high, size=(n, len(self.low))).astype(np.float32)
        return (action[0] if single else action), None

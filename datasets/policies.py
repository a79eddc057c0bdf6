"""Collection policies: random (uniform or colored noise), scripted expert, a saved
stable-baselines3 model, and epsilon-mixtures of those with random actions."""

from __future__ import annotations

import hashlib
import json
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import colorednoise
import gymnasium as gym
import numpy as np

from wmrobot.errors import EnvError, refused_pickle

NAMES = ("random", "expert", "sb3")


class Policy(Protocol):
    """What the collector needs of a policy: a per-episode reset and an action per step."""

    def reset(self, rng: np.random.Generator) -> None: ...

    def act(self, obs: Any) -> np.ndarray: ...


@dataclass(frozen=True)
class PolicySpec:
    """Which policy collects, with its parameters (all recorded in the dataset).

    ``name``: ``random`` (``beta`` = 0 uniform, > 0 colored noise with PSD ~ 1/f^beta),
    ``expert`` (the task's scripted expert, Gaussian action ``noise``) or ``sb3`` (the
    stable-baselines3 model saved at ``path``, ``deterministic`` or sampled actions). With
    ``epsilon`` > 0 each step takes a random action (of exponent ``beta``) with that probability;
    for ``random`` a no-op (it acts randomly at every step), accepted and not recorded.
    """

    name: str = "random"
    beta: float = 0.0
    epsilon: float = 0.0
    noise: float = 0.0
    path: str | None = None
    deterministic: bool = True

    def check(self) -> None:
        if self.name not in NAMES:
            raise EnvError(f"unknown policy {self.name!r}; choose one of {list(NAMES)}")
        if self.beta < 0:
            raise EnvError(f"policy.beta={self.beta} must be >= 0 (0 = white, 1 = pink, 2 = red)")
        if not 0 <= self.epsilon <= 1:
            raise EnvError(f"policy.epsilon={self.epsilon} must be in [0, 1]")
        if self.noise < 0:
            raise EnvError(f"policy.noise={self.noise} must be >= 0")
        if self.name == "sb3" and not self.path:
            raise EnvError(
                "policy=sb3 needs policy.path=FILE.zip (a saved stable-baselines3 model)"
            )
        if self.name == "sb3" and not Path(self.path).is_file():
            raise EnvError(f"policy.path={self.path!r} is not a file; give a saved SB3 model .zip")

    @property
    def open_loop(self) -> bool:
        """Whether the actions ignore the observations (so they can be drawn in advance)."""
        return self.name == "random"

    def record(self) -> dict[str, Any]:
        """``policy`` and ``policy_params`` as stored in the dataset's collector attributes."""
        params: dict[str, Any] = {}
        if self.name == "random" or self.epsilon > 0:
            params["beta"] = self.beta
        if self.name != "random":
            params["epsilon"] = self.epsilon
        if self.name == "expert":
            params["noise"] = self.noise
        if self.name == "sb3":
            data = Path(self.path).read_bytes()
            params.update(
                path=str(self.path),
                sha256=hashlib.sha256(data).hexdigest()[:16],
                deterministic=self.deterministic,
            )
        return {"policy": self.name, "policy_params": params}


class RandomPolicy:
    """Random actions: uniform (``beta=0``) or colored Gaussian noise with PSD ~ 1/f^beta
    (``beta>0``, as iCEM), scaled to the action bounds and clipped. Colored noise keeps pushing
    one way for a while, so the data reaches the speeds a planner will drive at.

    Actions are drawn ``horizon`` at a time at reset (uniform ones in the order per-step draws
    would take them), which keeps a random generator call out of every step.
    """

    def __init__(self, action_space: gym.spaces.Box, beta: float = 0.0, horizon: int = 1000):
        if beta < 0:
            raise EnvError(f"policy beta={beta} must be >= 0 (0 = white, 1 = pink, 2 = red)")
        self.low, self.high = action_space.low, action_space.high
        self.dtype = action_space.dtype
        self.beta, self.horizon = beta, horizon
        self._rng = np.random.default_rng()
        self._block = np.empty((0, len(self.low)), dtype=self.dtype)
        self._t = 0

    def reset(self, rng: np.random.Generator) -> None:
        self._rng, self._t = rng, 0
        self._block = self._draw()

    def _draw(self) -> np.ndarray:
        if self.beta == 0:
            actions = self._rng.uniform(self.low, self.high, size=(self.horizon, len(self.low)))
        else:
            shape = (len(self.low), self.horizon)
            noise = colorednoise.powerlaw_psd_gaussian(self.beta, shape, random_state=self._rng).T
            centre, half = (self.high + self.low) / 2, (self.high - self.low) / 2
            actions = np.clip(centre + half * noise, self.low, self.high)
        return actions.astype(self.dtype)

    def act(self, obs: Any = None) -> np.ndarray:
        if self._t == len(self._block):
            # Uniform noise goes on drawing; colored noise repeats its block, whose spectrum
            # only holds over one horizon.
            self._block = self._draw() if self.beta == 0 else self._block
            self._t = 0 if self.beta == 0 else self._t
        action = self._block[self._t % self.horizon]
        self._t += 1
        return action

    def actions(self, steps: int) -> np.ndarray:
        """The next ``steps`` actions at once (the open-loop fast path)."""
        return np.stack([self.act() for _ in range(steps)])


class EpsilonMixture:
    """Each step: a random action with probability ``epsilon``, else the base policy's."""

    def __init__(self, base: Policy, explore: RandomPolicy, epsilon: float) -> None:
        self.base, self.explore, self.epsilon = base, explore, epsilon
        self._rng = np.random.default_rng()

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self.base.reset(rng)
        self.explore.reset(rng)

    def act(self, obs: Any) -> np.ndarray:
        action = self.base.act(obs)
        random_action = self.explore.act(obs)  # advanced every step, so colored noise stays so
        return random_action if self._rng.random() < self.epsilon else action


class SB3Policy:
    """A saved stable-baselines3 model, loaded without unpickling anything from the file."""

    def __init__(self, path: str, env: gym.Env, deterministic: bool = True) -> None:
        self.model = load_sb3(path, env)
        self.deterministic = deterministic

    def reset(self, rng: np.random.Generator) -> None:
        # SB3 samples stochastic actions with torch's global generator.
        import torch

        torch.manual_seed(int(rng.integers(2**31)))

    def act(self, obs: Any) -> np.ndarray:
        action, _ = self.model.predict(obs, deterministic=self.deterministic)
        return np.asarray(action, dtype=np.float32)


def make_policy(spec: PolicySpec, env: gym.Env) -> Policy:
    """The policy ``spec`` asks for, acting in ``env``."""
    spec.check()
    horizon = env.spec.max_episode_steps if env.spec and env.spec.max_episode_steps else 1000
    random = RandomPolicy(env.action_space, beta=spec.beta, horizon=horizon)
    if spec.name == "random":
        return random
    if spec.name == "expert":
        from wmrobot.envs.experts import make_expert

        base: Policy = make_expert(env, noise=spec.noise)
    else:
        base = SB3Policy(spec.path, env, deterministic=spec.deterministic)
    return EpsilonMixture(base, random, spec.epsilon) if spec.epsilon > 0 else base


# ------------------------------------------------------------------------- stable-baselines3
_SCHEDULES = ("learning_rate", "clip_range", "clip_range_vf", "exploration_schedule")
_ACTIVATIONS = ("ReLU", "Tanh", "ELU", "LeakyReLU", "SiLU", "GELU", "Mish", "Sigmoid")


def load_sb3(path: str, env: gym.Env) -> Any:
    """Load an SB3 model saved by ``model.save`` for acting in ``env``.

    SB3 stores spaces, schedules and the policy class with cloudpickle, and unpickling runs
    code from the file. Here every pickled entry is replaced before SB3 reads it: the spaces
    by ``env``'s (after checking them against the file's readable description), the policy
    class by the algorithm's own, schedules by constants (acting needs none), and the policy
    keyword arguments rebuilt from their readable form. The weights load with
    ``weights_only=True`` (SB3 >= 2.4).
    """
    from stable_baselines3.common.buffers import DictReplayBuffer, ReplayBuffer
    from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit

    try:
        with zipfile.ZipFile(path) as z:
            data = json.loads(z.read("data"))
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise EnvError(
            f"policy.path={path!r} is not a saved stable-baselines3 model: {e}"
        ) from None
    algo = _algorithm(data, path)
    _check_space(data, "observation_space", env.observation_space, path)
    _check_space(data, "action_space", env.action_space, path)
    replace: dict[str, Any] = {
        "observation_space": env.observation_space,
        "action_space": env.action_space,
    }
    for key, item in data.items():
        if key in replace or not (isinstance(item, dict) and ":serialized:" in item):
            continue
        if key == "policy_class":
            dict_obs = isinstance(env.observation_space, gym.spaces.Dict)
            replace[key] = algo.policy_aliases["MultiInputPolicy" if dict_obs else "MlpPolicy"]
        elif key == "policy_kwargs":
            replace[key] = _policy_kwargs(item, path)
        elif key == "replay_buffer_class":  # HER's buffer needs the env's reward function
            dict_obs = isinstance(env.observation_space, gym.spaces.Dict)
            replace[key] = DictReplayBuffer if dict_obs else ReplayBuffer
        elif key == "train_freq":
            replace[key] = TrainFreq(1, TrainFrequencyUnit.STEP)
        elif "schedule" in key or key in _SCHEDULES:  # used only for training
            replace[key] = _constant
        else:  # action noise and the like: used only for training
            replace[key] = None
    try:  # SB3 reads the weights with torch.load(weights_only=True)
        return algo.load(path, custom_objects=replace, device="cpu", print_system_info=False)
    except (RuntimeError, ValueError, KeyError, pickle.UnpicklingError) as e:
        first = str(e).splitlines()[0]
        raise EnvError(
            refused_pickle(path, e) or f"cannot load the SB3 model {path!r}: {first}"
        ) from None


def _constant(_: float) -> float:
    return 0.0


def _algorithm(data: dict[str, Any], path: str) -> Any:
    import stable_baselines3 as sb3

    module = data.get("policy_class", {}).get("__module__", "")
    # "stable_baselines3.sac.policies" -> SAC; PPO and A2C share the actor-critic policies of
    # "stable_baselines3.common.policies" (only PPO has a clip range). DDPG loads as TD3,
    # whose acting it shares.
    parts = module.split(".")
    name = parts[1].upper() if len(parts) == 3 and parts[0] == "stable_baselines3" else ""
    if name == "COMMON":
        name = "PPO" if "clip_range" in data else "A2C"
    if not hasattr(sb3, name):
        raise EnvError(
            f"{path!r} holds a policy of {module or 'an unknown module'!r}; wmrobot loads "
            f"stable-baselines3's own algorithms ({', '.join(sb3.__all__[:6])})"
        )
    return getattr(sb3, name)


def _check_space(data: dict[str, Any], key: str, space: gym.Space, path: str) -> None:
    """Compare the file's readable description of a space with ``space`` (no unpickling)."""
    saved = data.get(key, {})
    if saved.get("spaces"):
        shown, same = "a Dict space", saved["spaces"] == str(getattr(space, "spaces", None))
    else:
        shape, dtype = tuple(saved.get("_shape") or ()), saved.get("dtype")
        shown, same = f"Box {shape} {dtype}", (shape, dtype) == (space.shape, str(space.dtype))
    if not same:
        here = (
            f"Dict({', '.join(space.spaces)})"
            if isinstance(space, gym.spaces.Dict)
            else f"Box {space.shape} {space.dtype}"
        )
        raise EnvError(
            f"policy file {path!r} was trained for another env: its {key.replace('_', ' ')} is "
            f"{shown}, this env's is {here}; give a policy trained on this env"
        )


def _policy_kwargs(item: dict[str, Any], path: str) -> dict[str, Any]:
    """Rebuild policy kwargs from their readable form, allowing only known activations."""
    import torch

    kwargs: dict[str, Any] = {}
    for name, value in item.items():
        if name.startswith(":"):
            continue
        if name == "activation_fn":
            cls = str(value).rsplit(".", 1)[-1].rstrip("'>")
            if cls not in _ACTIVATIONS:
                raise EnvError(f"{path!r}: activation {value} is not one wmrobot loads safely")
            kwargs[name] = getattr(torch.nn, cls)
        elif isinstance(value, (int, float, bool, list, dict)) or value is None:
            kwargs[name] = value
        else:
            raise EnvError(
                f"{path!r}: policy_kwargs[{name!r}] = {value} cannot be loaded without running "
                f"code from the file; save the model with plain policy_kwargs"
            )
    return kwargs

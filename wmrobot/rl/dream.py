"""Training inside the model: a stable-baselines3 ``VecEnv`` whose environments are imagined
by a world model, and the agent that acts with its policy in the real env.

Any SB3 algorithm trains in :class:`DreamVecEnv` unchanged: the observation is the latent
``z`` (reward tasks) or ``[z, goal_z]`` (goal tasks), a step is one batched pass of the
predictor, the reward comes from the model's heads. Start states (and goals) are the dataset's
own rows, encoded once (:func:`dataset_latents`). :class:`DreamAgent` then acts in the real env
through the encoder: observation -> z (-> [z, goal_z]) -> the SB3 policy's action.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn

from wmrobot.errors import ConfigError, check_range
from wmrobot.model.layers import COST_EPS
from wmrobot.model.world_model import WorldModel

GOAL_REWARDS = ("cost", "critic", "reached")


def check_goal_reward(goal_reward: str, tolerance: float | None) -> None:
    """Refuse, in one line, an unknown ``dream.goal_reward``, ``reached`` without a tolerance,
    or a tolerance that is not positive."""
    if goal_reward not in GOAL_REWARDS:
        raise ConfigError(f"dream.goal_reward={goal_reward!r}: choose from {GOAL_REWARDS}")
    if goal_reward == "reached" and tolerance is None:
        raise ConfigError(
            "dream.goal_reward=reached needs dream.tolerance > 0 (now None): the cost-head "
            "distance below which the goal counts as reached"
        )
    if tolerance is not None and tolerance <= 0:
        raise ConfigError(
            f"dream.tolerance={tolerance}: the cost-head distance that counts as reaching the "
            f"goal must be > 0, or null (episodes end at the horizon only)"
        )


def check_penalty(model: WorldModel, penalty: float) -> None:
    """Refuse, in one line, a negative ``dream.penalty`` or one on a model without an
    ensemble."""
    check_range("dream.penalty", penalty, 0)
    if penalty > 0 and not len(model.members):
        raise ConfigError(
            f"dream.penalty={penalty} weighs the disagreement of an ensemble, and this "
            f"checkpoint has one predictor; train it with model.ensemble=3, or set "
            f"dream.penalty=0"
        )


def dataset_latents(
    model: WorldModel, store: Any, chunk: int = 2048
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Every row of ``store`` with an action after it (not an episode's last), encoded by the
    model's online encoder as the agent encodes the real env's observations: start latents
    (M, D); for a goal task also each row shown as a goal, as a planner shows one (the task's
    ``goal_observation`` of the row's achieved goal, a frame as a still stack): (M, D), else
    None."""
    from wmrobot.train.data import Batches

    goal_task = model.task != "reward"
    batches = Batches(store, model, horizon=1, batch_size=1, goal_views=goal_task)
    ends = np.asarray(store.episode_ends)
    rows = np.setdiff1d(np.arange(int(ends[-1])), ends - 1)
    starts, goals = [], []
    with torch.no_grad():
        for lo in range(0, len(rows), chunk):
            part = torch.as_tensor(rows[lo : lo + chunk])
            starts.append(model.encode(batches.row_inputs(part)).float())
            if goal_task:
                goals.append(model.encode(batches.goal_inputs(part)).float())
    return torch.cat(starts), (torch.cat(goals) if goal_task else None)


class DreamVecEnv(VecEnv):
    """``num_envs`` imagined episodes of ``model``, stepped together: a stable-baselines3
    ``VecEnv``.

    - Observation (float32 Box): ``z`` (D,) on a reward task; ``[z, goal_z]`` (2D,) on a goal
      task.
    - Step: ``z' = predictor(z, a)`` for all envs in one batched pass (actions clipped to the
      model's bounds; a GRU predictor carries its hidden state per env).
    - Reward: a reward task's reward head ``r(z, a)``; a goal task's ``-task_cost(z', goal_z)``
      (``goal_reward="cost"``, the cost head's distance to the goal, in the task's units),
      ``-(1 - gamma) V(z', goal_z)`` (``"critic"``: the critic's cost-to-go, which knows the
      walls a straight-line distance does not) or ``-1`` per step until the cost-head distance
      is below ``tolerance`` (``"reached"``). With ``penalty`` > 0, minus ``penalty`` times the
      ensemble's disagreement on the step (:meth:`WorldModel.disagreement`, MOPO): where the
      model does not know, the dream pays less (a checkpoint with ``model.ensemble`` > 1).
    - ``compile``: the model's part of a step through ``torch.compile`` (MLP predictors; a
      C++ compiler and ~1 minute once; 2-3x the imagined steps/s at thousands of envs).
    - Termination: the continuation head ``c(z') < 0.5`` (reward tasks whose data terminate);
      on a goal task, reaching the goal: the cost-head distance below ``tolerance`` (required
      by ``"reached"``, optional with the others; the dream then stops paying at the goal, as
      the real env ends there). Truncation at ``horizon`` steps.
    - Reset: a start latent drawn uniformly from ``starts`` (M, D) and, on a goal task, a goal
      latent from ``goals`` (M, D), independently (hindsight goals from the dataset).

    An ended env is reset at once, as SB3 expects: ``infos[i]["terminal_observation"]`` holds
    its last observation and ``infos[i]["TimeLimit.truncated"]`` whether the horizon cut it.
    Draws come from one ``torch.Generator`` seeded by ``seed`` (or :meth:`seed`).
    """

    def __init__(
        self,
        model: WorldModel,
        starts: torch.Tensor,
        goals: torch.Tensor | None = None,
        num_envs: int = 16,
        horizon: int = 100,
        seed: int = 0,
        goal_reward: str = "cost",
        tolerance: float | None = None,
        penalty: float = 0.0,
        compile: bool = False,
    ) -> None:
        check_range("dream.envs", num_envs, 1)
        check_penalty(model, penalty)
        check_range("dream.horizon", horizon, 1)
        if model.cfg.predictor == "transformer":
            raise ConfigError(
                "model.predictor=transformer predicts from a growing window of latents, which "
                "the dream's per-env resets cannot keep; dream a model with predictor mlp or gru"
            )
        self.goal_task = model.task != "reward"
        if self.goal_task and goals is None:
            raise ConfigError("a goal task's dream needs goal latents (dataset_latents gives them)")
        check_goal_reward(goal_reward, tolerance)
        if goal_reward == "critic" and not model.has_value:
            raise ConfigError(
                "dream.goal_reward=critic needs a checkpoint with a critic (train with "
                "model.critic=true), or use dream.goal_reward=cost"
            )
        self.model = model.eval()
        self.starts = starts.detach().float()
        self.goals = None if goals is None else goals.detach().float()
        self.horizon, self.goal_reward, self.tolerance = horizon, goal_reward, tolerance
        self.penalty = penalty
        self.disagreement = [0.0, 0]  # its sum over imagined steps, and their count
        self._transition = self._step
        self.compiled = False
        d = model.latent_dim
        width = 2 * d if self.goal_task else d
        obs_space = gym.spaces.Box(-np.inf, np.inf, (width,), np.float32)
        low = model.action_low.detach().cpu().numpy().astype(np.float32)
        high = model.action_high.detach().cpu().numpy().astype(np.float32)
        super().__init__(num_envs, obs_space, gym.spaces.Box(low, high, dtype=np.float32))
        self.low, self.high = torch.as_tensor(low), torch.as_tensor(high)
        self.terminates = not self.goal_task and model.continuation is not None
        self.gen = torch.Generator().manual_seed(seed)
        self.z = torch.zeros(num_envs, d)
        self.goal_z = torch.zeros(num_envs, d)
        # The goals' cost-head embeddings, made once per episode rather than once per step.
        self.goal_g = torch.zeros(num_envs, model.cfg.goal_dim) if self.goal_task else None
        self.hidden = None
        self.steps = np.zeros(num_envs, dtype=np.int64)
        self.actions: torch.Tensor | None = None
        if compile and model.cfg.predictor == "mlp":  # a GRU's recurrent path stays eager
            self._compile()

    def _compile(self) -> None:
        """``torch.compile`` the model's part of a step, tried once here: without a working
        compiler the dream stays eager, with a warning."""
        import warnings

        compiled = torch.compile(self._step, dynamic=False)
        a = torch.zeros(self.num_envs, self.action_space.shape[0])
        try:
            with torch.no_grad():
                compiled(self.z, a, self.goal_z, self.goal_g, None)
        except Exception as e:  # noqa: BLE001 (inductor raises many kinds)
            warnings.warn(f"dream.compile: torch.compile failed ({type(e).__name__}); eager "
                          f"steps instead", stacklevel=3)  # fmt: skip
            return
        self._transition, self.compiled = compiled, True

    # ------------------------------------------------------------------------------ VecEnv
    def reset(self) -> VecEnvObs:
        if self._seeds[0] is not None:  # VecEnv.seed(seed) stores them for the next reset
            self.gen.manual_seed(int(self._seeds[0]))
        self._reset_seeds()
        self._draw(torch.arange(self.num_envs))
        return self._observation()

    def step_async(self, actions: np.ndarray) -> None:
        a = torch.as_tensor(np.asarray(actions), dtype=torch.float32).reshape(self.num_envs, -1)
        self.actions = torch.maximum(torch.minimum(a, self.high), self.low)

    @torch.no_grad()
    def step_wait(self) -> VecEnvStepReturn:
        a = self.actions
        if self.model.cfg.predictor == "gru":  # a recurrent state per env, stepped eagerly
            if self.hidden is None:
                self.hidden = self.model.predictor.init_state(self.z)
            z_next, self.hidden = self.model.predictor.step(self.z, a, self.hidden)
        else:
            z_next = None
        z_next, reward, cost, spread = self._transition(self.z, a, self.goal_z, self.goal_g,
                                                        z_next)  # fmt: skip
        terminated = torch.zeros(self.num_envs, dtype=torch.bool)
        if self.goal_task:
            if self.tolerance is not None:
                terminated = cost < self.tolerance
            if self.goal_reward == "reached":
                reward = torch.where(terminated, 0.0, -1.0)
        elif self.terminates:
            terminated = cost < 0.5  # here the continuation probability
        if self.penalty > 0:
            reward = reward - self.penalty * spread
            self.disagreement[0] += float(spread.sum())
            self.disagreement[1] += self.num_envs
        self.z = z_next
        self.steps += 1
        terminated = terminated.numpy()
        truncated = (self.steps >= self.horizon) & ~terminated
        dones = terminated | truncated
        obs = self._observation()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        ended = np.flatnonzero(dones)
        for i in ended:
            infos[i]["terminal_observation"] = obs[i].copy()
            infos[i]["TimeLimit.truncated"] = bool(truncated[i])
        if len(ended):
            self._draw(torch.as_tensor(ended))
            obs = self._observation()
        return obs, reward.float().numpy(), dones, infos

    def _step(
        self,
        z: torch.Tensor,
        a: torch.Tensor,
        goal_z: torch.Tensor,
        goal_g: torch.Tensor | None,
        z_next: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The model's part of a step, a pure function of tensors (what ``compile`` compiles):
        (z', reward before the penalty, the cost-head distance to the goal or the
        continuation probability, the ensemble's disagreement or zeros)."""
        model = self.model
        if z_next is None:
            z_next = model.predict(z, a)
        if self.goal_task:
            diff = model.cost_head(z_next) - goal_g
            second = torch.sqrt(diff.pow(2).sum(-1) + COST_EPS)  # = model.task_cost(z', goal_z)
            if self.goal_reward == "critic":  # the cost-to-go, in units of 1 / (1 - gamma)
                reward = -model.value(z_next, goal_z) * (1 - model.gamma)
            else:
                reward = -second
        else:
            reward, second = model.reward(z, a), model.cont(z_next)
        spread = (
            model.disagreement(z, a, first=z_next) if self.penalty > 0 else torch.zeros_like(reward)
        )
        return z_next, reward, second, spread

    def close(self) -> None:
        return None

    def get_attr(self, attr_name: str, indices: Any = None) -> list[Any]:
        value = getattr(self, attr_name) if attr_name != "render_mode" else None
        return [value] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices: Any = None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *args: Any, indices: Any = None, **kwargs: Any):
        return [getattr(self, method_name)(*args, **kwargs) for _ in self._indices(indices)]

    def env_is_wrapped(self, wrapper_class: type, indices: Any = None) -> list[bool]:
        return [False] * len(self._indices(indices))

    # ----------------------------------------------------------------------------- helpers
    def _indices(self, indices: Any) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)

    def _draw(self, envs: torch.Tensor) -> None:
        """New episodes in ``envs``: a start (and goal) from the dataset, step count 0."""
        picks = torch.randint(len(self.starts), (len(envs),), generator=self.gen)
        self.z[envs] = self.starts[picks]
        if self.goal_task:
            goal_picks = torch.randint(len(self.goals), (len(envs),), generator=self.gen)
            self.goal_z[envs] = self.goals[goal_picks]
            with torch.no_grad():
                self.goal_g[envs] = self.model.cost_head(self.goal_z[envs])
        if self.hidden is not None:  # a GRU's state restarts with its episode
            self.hidden[envs] = self.model.predictor.init_state(self.z[envs])
        self.steps[envs.numpy()] = 0

    def _observation(self) -> np.ndarray:
        obs = torch.cat([self.z, self.goal_z], dim=-1) if self.goal_task else self.z
        return obs.numpy().astype(np.float32, copy=True)


class DreamAgent:
    """An SB3 policy trained in a :class:`DreamVecEnv`, acting in the real env: each
    observation (and its goal) encoded by ``model`` as the dream's were, then the policy's
    deterministic action. ``goal_observation`` as for the planning agents (None on reward
    tasks)."""

    def __init__(
        self,
        model: WorldModel,
        policy: Any,
        goal_observation: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        from wmrobot.agent import Observer

        self.model, self.policy = model.eval(), policy
        self.goal_task = model.task != "reward"
        self.observer = Observer(model, goal_observation)
        self.settings = {"agent": "DreamAgent"}

    def reset(self) -> None:
        self.observer.reset()

    def keep(self, indices: np.ndarray) -> None:
        self.observer.keep(indices)

    @torch.no_grad()
    def predict(
        self, obs: Any, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ) -> tuple[np.ndarray, None]:
        from wmrobot.agent import _batched

        obs, single = _batched(obs)
        z, goal_z = self.observer(obs)
        latent = torch.cat([z, goal_z], dim=-1) if self.goal_task else z
        action, _ = self.policy.predict(latent.numpy(), deterministic=deterministic)
        return (action[0] if single else action), None


# --------------------------------------------------------------------------- training there
ALGOS = ("sac", "td3", "ppo")
ALGO_LABELS = {"sac": "SAC", "td3": "TD3", "ppo": "PPO"}


@dataclass
class DreamConfig:
    """``wmrobot dream``'s imagined envs and its SB3 agent (configs/dream.yaml, ``dream.*``).

    ``envs`` imagined envs of at most ``horizon`` steps; ``goal_reward``/``tolerance`` as for
    :class:`DreamVecEnv`, and ``penalty`` on the ensemble's
    disagreement; ``gradient_steps`` off-policy updates per vector step (SAC, TD3;
    PPO updates per rollout); ``net`` the policy's (and critics') hidden widths."""

    algo: str = "sac"
    steps: int = 100_000
    envs: int = 16
    horizon: int = 100
    goal_reward: str = "cost"
    tolerance: Optional[float] = None  # noqa: UP045 (OmegaConf reads typing.Optional)
    penalty: float = 0.0
    compile: bool = False
    gradient_steps: int = 4
    learning_rate: float = 3e-4
    gamma: float = 0.99
    net: list[int] = field(default_factory=lambda: [256, 256])

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ConfigError(f"dream.algo={self.algo!r} is unknown; choose from {ALGOS}")
        check_range("dream.steps", self.steps, 1)
        check_range("dream.envs", self.envs, 1)
        check_range("dream.horizon", self.horizon, 1)
        check_range("dream.gradient_steps", self.gradient_steps, 1)
        check_range("dream.penalty", self.penalty, 0)
        check_range("dream.learning_rate", self.learning_rate, 0, closed=False)
        check_range("dream.gamma", self.gamma, 0, 1)
        check_goal_reward(self.goal_reward, self.tolerance)
        if not self.net or min(self.net) < 1:
            raise ConfigError(f"dream.net={list(self.net)}: hidden widths >= 1, e.g. [256, 256]")

    @property
    def label(self) -> str:
        return f"Dream {ALGO_LABELS[self.algo]} (SB3)"


def make_dream_agent(env: VecEnv, cfg: DreamConfig, seed: int) -> Any:
    """A fresh SB3 ``cfg.algo`` agent on ``env`` (SB3's defaults but for the fields of
    :class:`DreamConfig`)."""
    from stable_baselines3 import PPO, SAC, TD3

    common = {"seed": seed, "verbose": 0, "learning_rate": cfg.learning_rate, "gamma": cfg.gamma,
              "policy_kwargs": {"net_arch": list(cfg.net)}}  # fmt: skip
    if cfg.algo == "ppo":
        return PPO("MlpPolicy", env, n_steps=max(2048 // env.num_envs, 8), **common)
    algo = SAC if cfg.algo == "sac" else TD3
    return algo("MlpPolicy", env, gradient_steps=cfg.gradient_steps, train_freq=1, **common)


def train_in_dream(
    model: WorldModel,
    starts: torch.Tensor,
    goals: torch.Tensor | None,
    cfg: DreamConfig,
    seed: int,
    progress: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Train an SB3 ``cfg.algo`` agent for ``cfg.steps`` imagined steps; the agent and a record
    (seconds, imagined steps per second, the mean return of the last 100 dream episodes)."""
    from stable_baselines3.common.vec_env import VecMonitor

    dream = DreamVecEnv(model, starts, goals, cfg.envs, cfg.horizon, seed, cfg.goal_reward,
                        cfg.tolerance, cfg.penalty, cfg.compile)  # fmt: skip
    env = VecMonitor(dream)
    agent = make_dream_agent(env, cfg, seed)
    start = time.perf_counter()
    agent.learn(cfg.steps, progress_bar=progress)
    seconds = time.perf_counter() - start
    returns = [e["r"] for e in agent.ep_info_buffer or []]
    record = {
        "seed": seed,
        "seconds": round(seconds, 1),
        "imagined_steps": cfg.steps,
        "dream_return": round(float(np.mean(returns)), 3) if returns else None,
    }
    total, count = dream.disagreement
    if count:  # the mean disagreement per imagined step, in latent units
        record["disagreement"] = round(total / count, 4)
    return agent, record


@torch.no_grad()
def imagine(
    model: WorldModel,
    policy: Any,
    env_id: str,
    env_kwargs: dict[str, Any],
    pairs: list[dict[str, Any]],
    steps: list[int],
    seeds: list[int] | None = None,
) -> list[float]:
    """The same policy's episodes in the dream, from the real episodes' first observations:
    each pair's env is reset as :func:`~wmrobot.eval.rollout.evaluate` resets it, encoded, and
    rolled ``steps[i]`` imagined steps (the real episode's length) with the policy's
    deterministic actions. Per pair: the cost head's final distance to the goal (goal tasks,
    beside the env's final distance) or the sum of predicted rewards (reward tasks, beside the
    return)."""
    from wmrobot.agent import Observer
    from wmrobot.envs import make_env
    from wmrobot.eval.rollout import _stack

    env = make_env(env_id, env_kwargs)
    goal_task = model.task != "reward"
    observer = Observer(model, getattr(env.unwrapped, "goal_observation", None))
    seeds = list(range(len(pairs))) if seeds is None else list(seeds)
    first = [env.reset(seed=s, options=p)[0] for s, p in zip(seeds, pairs, strict=True)]
    env.close()
    z, goal_z = observer(_stack(first))
    hidden = model.predictor.init_state(z)
    left = torch.as_tensor(steps)
    total = torch.zeros(len(pairs))
    alive = torch.ones(len(pairs))
    for t in range(int(left.max())):
        obs = torch.cat([z, goal_z], -1) if goal_task else z
        a, _ = policy.predict(obs.numpy(), deterministic=True)
        a = torch.as_tensor(a, dtype=torch.float32)
        z_next, hidden = model.predictor.step(z, a, hidden)
        on = (t < left).float()
        if not goal_task:
            total += on * alive * model.reward(z, a)
            alive = alive * model.cont(z_next).round()  # the model's own end of the episode
        z = torch.where(on[:, None] > 0, z_next, z)  # a finished episode keeps its last state
    if goal_task:
        return model.task_cost(z, goal_z).tolist()
    return total.tolist()

"""Branched model rollouts for an online SAC agent (MBPO, Janner et al. 2019), in latent space.

``wmrobot learn learn.actor=sac`` acts in the real env with a stable-baselines3 SAC agent whose
observation is the world model's latent of the env's observation. Every
``dream.refresh_every`` env steps, :class:`Branched` re-encodes the real transitions of the
dataset with the current encoder (the real buffer is the Zarr dataset itself, so it never goes
stale as the encoder learns) and branches ``dream.rollouts`` rollouts of
``dream.branch_horizon`` imagined steps from real states with the agent's own policy, added to
a model buffer that keeps the last ``dream.retain`` refreshes. Each SAC update draws a
``dream.real_ratio`` share of its batch from the real transitions and the rest from the model
buffer. Reward tasks only: the imagined reward is the model's reward head, the end of an
imagined episode its continuation head.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from wmrobot.errors import ConfigError, check_range
from wmrobot.model.world_model import WorldModel

POOL_KEYS = ("obs", "actions", "next_obs", "dones", "rewards")


@dataclass
class BranchConfig:
    """``learn.actor=sac``'s agent and its branched rollouts (``dream.*`` in configs/learn.yaml).

    ``real_ratio`` of each SAC batch from real transitions (MBPO: 0.05); ``branch_horizon``
    imagined steps per rollout (MBPO: 1 on most tasks); ``rollouts`` branched from as many
    real states at each refresh, every ``refresh_every`` env steps; the model buffer keeps
    the last ``retain`` refreshes; ``updates`` SAC gradient steps per env step (MBPO: 20;
    fewer on a CPU) of ``batch_size``; ``learning_rate`` and ``net`` as for SB3's SAC."""

    real_ratio: float = 0.05
    branch_horizon: int = 1
    rollouts: int = 400
    refresh_every: int = 250
    retain: int = 20
    updates: int = 10
    batch_size: int = 256
    learning_rate: float = 3e-4
    net: list[int] = field(default_factory=lambda: [256, 256])

    def __post_init__(self) -> None:
        check_range("dream.real_ratio", self.real_ratio, 0, 1)
        for key in ("branch_horizon", "rollouts", "refresh_every", "retain", "batch_size"):
            check_range(f"dream.{key}", getattr(self, key), 1)
        check_range("dream.updates", self.updates, 0)
        check_range("dream.learning_rate", self.learning_rate, 0, closed=False)
        if not self.net or min(self.net) < 1:
            raise ConfigError(f"dream.net={list(self.net)}: hidden widths >= 1, e.g. [256, 256]")


def real_transitions(model: WorldModel, store: Any, chunk: int = 4096) -> dict[str, torch.Tensor]:
    """Every transition of ``store`` (a row with an action after it), encoded by the current
    encoder: obs (N, D), actions (N, A) in [-1, 1] (SB3's scaled actions), next_obs (N, D),
    dones (N, 1) (terminated, not truncated), rewards (N, 1)."""
    from wmrobot.train.data import Batches

    batches = Batches(store, model, horizon=1, batch_size=1)
    ends = np.asarray(store.episode_ends)
    rows = np.setdiff1d(np.arange(int(ends[-1])), ends - 1)
    data = store.load(["action", "reward", "terminated"])
    mid, half = model.action_scale()
    z, z_next = [], []
    with torch.no_grad():
        for lo in range(0, len(rows), chunk):
            part = rows[lo : lo + chunk]
            z.append(model.encode(batches.row_inputs(torch.as_tensor(part))).float())
            z_next.append(model.encode(batches.row_inputs(torch.as_tensor(part + 1))).float())
    actions = (torch.as_tensor(data["action"][rows]).float() - mid) / half
    return {
        "obs": torch.cat(z),
        "actions": actions.clamp(-1, 1),
        "next_obs": torch.cat(z_next),
        "dones": torch.as_tensor(data["terminated"][rows]).float()[:, None],
        "rewards": torch.as_tensor(data["reward"][rows]).float()[:, None],
    }


class Branched:
    """An SB3 SAC agent on latents, trained on real and branched imagined transitions.

    ``act(z)`` samples the agent's action (exploration is SAC's own); ``refresh(store)``
    re-encodes the real data and branches new rollouts; ``update(n)`` takes ``n`` SAC steps.
    ``policy`` is the SB3 agent (its ``predict`` acts on latents, as :class:`DreamAgent`
    expects). The state (weights, optimisers, model buffer) round-trips through
    :meth:`state_dict`, so a resumed ``learn`` run continues the same agent.
    """

    def __init__(self, model: WorldModel, cfg: BranchConfig, seed: int) -> None:
        from stable_baselines3 import SAC
        from stable_baselines3.common.logger import configure

        from wmrobot.rl.dream import DreamVecEnv

        if model.task != "reward":
            raise ConfigError(
                "learn.actor=sac (branched rollouts, MBPO) learns from rewards: it needs a "
                "reward task; on a goal task use learn.actor=planner or `wmrobot dream`"
            )
        self.model, self.cfg = model, cfg
        spaces = DreamVecEnv(model, torch.zeros(1, model.latent_dim), None, num_envs=1)
        self.policy = SAC("MlpPolicy", spaces, learning_rate=cfg.learning_rate,
                          batch_size=cfg.batch_size, gamma=model.gamma, buffer_size=1,
                          learning_starts=0, seed=seed, verbose=0,
                          policy_kwargs={"net_arch": list(cfg.net)})  # fmt: skip
        self.policy.set_logger(configure(None, []))
        self.policy.replay_buffer = self  # SAC.train samples its batches from here
        self.gen = torch.Generator().manual_seed(seed)
        self.real: dict[str, torch.Tensor] | None = None
        self.pool: dict[str, torch.Tensor] = {k: torch.zeros(0) for k in POOL_KEYS}
        self.sizes: list[int] = []  # the model buffer's refreshes, oldest first

    def act(self, z: torch.Tensor) -> np.ndarray:
        action, _ = self.policy.predict(z.numpy(), deterministic=False)
        return action

    @torch.no_grad()
    def refresh(self, store: Any) -> None:
        """Re-encode the real transitions; branch ``rollouts`` new imagined rollouts from them
        with the current policy; drop the refreshes beyond ``retain``."""
        model, cfg = self.model, self.cfg
        self.real = real_transitions(model, store)
        picks = torch.randint(len(self.real["obs"]), (cfg.rollouts,), generator=self.gen)
        z = self.real["obs"][picks]
        alive = torch.ones(len(z), dtype=torch.bool)
        mid, half = model.action_scale()
        new: dict[str, list[torch.Tensor]] = {k: [] for k in POOL_KEYS}
        for _ in range(cfg.branch_horizon):
            z = z[alive]
            if not len(z):
                break
            a = torch.as_tensor(self.act(z), dtype=torch.float32)
            z_next = model.predict(z, a)
            done = model.cont(z_next) < 0.5
            scaled = ((a - mid) / half).clamp(-1, 1)
            step = (z, scaled, z_next, done.float()[:, None], model.reward(z, a)[:, None])
            for key, value in zip(POOL_KEYS, step, strict=True):
                new[key].append(value.float())
            z, alive = z_next, ~done
        added = {k: torch.cat(v) for k, v in new.items()}
        self.sizes.append(len(added["obs"]))
        drop = sum(self.sizes[: -cfg.retain]) if len(self.sizes) > cfg.retain else 0
        self.sizes = self.sizes[-cfg.retain :]
        for key in POOL_KEYS:
            kept = self.pool[key][drop:] if len(self.pool[key]) else self.pool[key]
            self.pool[key] = torch.cat([kept.view(-1, *added[key].shape[1:]), added[key]])

    def sample(self, batch_size: int, env: Any = None) -> ReplayBufferSamples:
        """A batch for SAC.train: ``real_ratio`` of it real transitions, the rest imagined
        (all real while the model buffer is empty)."""
        n_pool = len(self.pool["obs"])
        n_real = batch_size if not n_pool else round(batch_size * self.cfg.real_ratio)
        parts = []
        for source, n in ((self.real, n_real), (self.pool, batch_size - n_real)):
            if n:
                idx = torch.randint(len(source["obs"]), (n,), generator=self.gen)
                parts.append([source[k][idx] for k in POOL_KEYS])
        obs, actions, next_obs, dones, rewards = (torch.cat(x) for x in zip(*parts, strict=True))
        return ReplayBufferSamples(obs, actions, next_obs, dones, rewards, None)

    def update(self, n: int) -> None:
        if n and self.real is not None:
            self.policy.train(gradient_steps=n, batch_size=self.cfg.batch_size)

    # ------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        sac = self.policy
        state = {
            "policy": sac.policy.state_dict(),
            "actor_opt": sac.actor.optimizer.state_dict(),
            "critic_opt": sac.critic.optimizer.state_dict(),
            "n_updates": sac._n_updates,
            "generator": self.gen.get_state(),
            "pool": dict(self.pool),
            "real": None if self.real is None else dict(self.real),
            "sizes": list(self.sizes),
        }
        if sac.ent_coef_optimizer is not None:
            state["log_ent_coef"] = sac.log_ent_coef.detach().clone()
            state["ent_opt"] = sac.ent_coef_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        sac = self.policy
        sac.policy.load_state_dict(state["policy"])
        sac.actor.optimizer.load_state_dict(state["actor_opt"])
        sac.critic.optimizer.load_state_dict(state["critic_opt"])
        sac._n_updates = int(state["n_updates"])
        self.gen.set_state(state["generator"])
        self.pool, self.sizes = dict(state["pool"]), list(state["sizes"])
        self.real = None if state["real"] is None else dict(state["real"])
        if "log_ent_coef" in state:
            with torch.no_grad():
                sac.log_ent_coef.copy_(state["log_ent_coef"])
            sac.ent_coef_optimizer.load_state_dict(state["ent_opt"])

"""Train a WorldModel on an EpisodeStore: the config, the objective and the loop."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from wmrobot.datasets import EpisodeStore
from wmrobot.errors import ConfigError, DatasetError, check_range
from wmrobot.model.checkpoint import check_model_dir
from wmrobot.model.world_model import ModelConfig, WorldModel
from wmrobot.train.checkpoint import save_checkpoint
from wmrobot.train.critic import CriticConfig, td_loss
from wmrobot.train.critic import update_target as critic_update
from wmrobot.train.data import Batches, LatentTransitions, build_model, non_finite_key
from wmrobot.train.distributed import data_parallel, init_distributed, ranks_agree, train_device
from wmrobot.train.losses import ANTICOLLAPSE, LossWeights, jepa_loss
from wmrobot.train.metrics import CollapseWatch, DataWait, MetricsLog
from wmrobot.train.resume import TRAIN_STATE, load_train_state, run_identity, save_train_state
from wmrobot.train.reward import (
    RewardBatches,
    RewardLossConfig,
    ValueScale,
    policy_loss,
    reward_loss,
)


@dataclass
class TrainConfig:
    steps: int
    batch_size: int
    horizon: int
    lr: float
    weight_decay: float
    warmup: int
    grad_clip: float
    loss: LossWeights
    log_every: int
    seed: int
    checkpoint_every: int = 500  # steps between resumable training states (train_state.pt)
    anticollapse: str = "vicreg"  # vicreg | sigreg | none
    stop_gradient: bool = True  # targets from the EMA encoder, no gradient; false: PLDM-style
    tensorboard: bool = True  # also log to out/tb (TensorBoard event files)
    device: str = "auto"  # auto (cuda when there is one) | cpu | cuda
    amp: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    compile: bool = False  # torch.compile the encoder and predictor (pays off on GPU)
    critic: CriticConfig = field(default_factory=CriticConfig)  # when model.critic is on
    reward: RewardLossConfig = field(default_factory=RewardLossConfig)  # reward tasks

    def __post_init__(self) -> None:
        for key in ("steps", "horizon", "log_every", "checkpoint_every"):
            check_range(f"model.train.{key}", getattr(self, key), 1)
        check_range("model.train.batch_size", self.batch_size, 2)  # the variance term needs 2
        for key in ("weight_decay", "warmup"):
            check_range(f"model.train.{key}", getattr(self, key), 0)
        for key in ("lr", "grad_clip"):
            check_range(f"model.train.{key}", getattr(self, key), 0, closed=False)
        for key, weight in vars(self.loss).items():
            check_range(f"model.train.loss.{key}", weight, 0)
        if self.anticollapse not in ANTICOLLAPSE:
            raise ConfigError(
                f"model.train.anticollapse={self.anticollapse!r} is unknown; "
                f"choose from {ANTICOLLAPSE}"
            )


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


class Objective(nn.Module):
    """The training loss as one forward pass, ``batch`` (:meth:`Batches.sample`) -> (loss,
    parts to log, online latents (B, K+1, D) or None): the JEPA loss on the windows plus the
    critic's TD loss on the transitions; with ``jepa=False`` the critic's loss alone, on the
    frozen encoder. One forward per backward is what DDP needs to average the gradients."""

    def __init__(self, model: WorldModel, cfg: TrainConfig, jepa: bool = True) -> None:
        super().__init__()
        self.cfg, self.jepa = cfg, jepa
        # Only the trained parts are registered, so DDP averages exactly their gradients:
        # target networks follow by EMA/Polyak steps, the actor is trained by `wmrobot distill`.
        trained = [model.encoder, model.predictor, model.members, model.cost_head]
        trained = trained if jepa else []
        critic = [model.critic] if model.critic is not None else []
        self.trained = nn.ModuleList(trained + critic)
        object.__setattr__(self, "model", model)  # used, not registered (see above)

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float], Any]:
        """(loss, its parts as floats, the online latents or None) of one batch."""
        cfg, model, loss, parts, z = self.cfg, self.model, 0.0, {}, None
        if self.jepa:
            w = batch["windows"]
            device = w["actions"].device
            amp = cfg.amp and device.type == "cuda"
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss, parts, z = jepa_loss(
                    model, w["inputs"], w["actions"], w["achieved"], w["goal_inputs"],
                    w["goal_achieved"], cfg.loss, cfg.anticollapse, cfg.stop_gradient,
                )  # fmt: skip
        if "critic" in batch:
            closs, cparts = td_loss(model, batch["critic"], cfg.critic)
            loss = loss + cfg.loss.critic * closs if self.jepa else closs
            parts.update(cparts)
        return loss, parts, z


def optimizers(model: WorldModel, cfg: TrainConfig) -> list[torch.optim.Optimizer]:
    """AdamW on the encoder, predictor and cost head (and the ensemble's members, a group of
    their own); Adam on the critic (its own lr). On a
    reward task: AdamW on the encoder, predictor, reward, continuation and Q heads; Adam on
    the policy prior (its own lr)."""
    if model.task == "reward":
        parts = [model.encoder, model.predictor, model.reward_head, model.q]
        parts += [model.continuation] if model.continuation is not None else []
        return [
            torch.optim.AdamW(_groups(parts, model), lr=cfg.lr, weight_decay=cfg.weight_decay),
            torch.optim.Adam(model.policy.parameters(), lr=cfg.reward.policy_lr),
        ]  # fmt: skip
    parts = [model.encoder, model.predictor, model.cost_head]
    out = [torch.optim.AdamW(_groups(parts, model), lr=cfg.lr, weight_decay=cfg.weight_decay)]
    if model.critic is not None:
        out.append(torch.optim.Adam(model.critic.parameters(), lr=cfg.critic.lr))
    return out


def _groups(parts: list[torch.nn.Module], model: WorldModel) -> list[dict[str, Any]]:
    """The parameters of ``parts``, then the ensemble's members as a group of their own (its
    gradient clipped apart, so that the members never change the others' step)."""
    groups = [{"params": [p for m in parts for p in m.parameters()]}]
    if len(model.members):
        groups.append({"params": list(model.members.parameters())})
    return groups


def descend(loss: torch.Tensor, opts: list[torch.optim.Optimizer], clip: float) -> None:
    """One gradient step of each optimiser, the gradient norm of each of its parameter groups
    clipped to ``clip``."""
    for o in opts:
        o.zero_grad(set_to_none=True)
    loss.backward()  # under DDP, gradients arrive averaged over the ranks
    for o in opts:
        for group in o.param_groups:
            torch.nn.utils.clip_grad_norm_(group["params"], clip)
    for o in opts:
        o.step()


def follow_targets(model: WorldModel, momentum: float | None, cfg: TrainConfig) -> None:
    """Move the target encoder (EMA with ``momentum``; None leaves it) and the critic's or Q
    heads' target networks (Polyak steps ``critic.target_tau``, ``reward.tau``) towards their
    online networks."""
    if momentum is not None:
        model.update_target(momentum)
    if model.critic is not None:
        critic_update(model.critic, model.critic_target, cfg.critic.target_tau)
    if model.q is not None:
        critic_update(model.q, model.q_target, cfg.reward.tau)


class RewardUpdate:
    """One training step of a reward-task model on a :class:`RewardBatches` batch: the world
    model's loss (:func:`reward_loss`) and one step of its optimiser, then the policy prior's
    loss on the detached imagined latents and one step of its own. ``check(loss, batch)`` runs
    before any weight moves (the non-finite guard). Returns (parts, latents)."""

    def __init__(self, model: WorldModel, cfg: TrainConfig, opts: list, gen: torch.Generator):
        self.model, self.cfg, self.opts, self.gen = model, cfg, opts, gen
        self.scale = ValueScale()

    def __call__(self, batch: dict[str, Any], check: Any) -> tuple[dict[str, float], Any]:
        cfg, model = self.cfg, self.model
        loss, parts, zs = reward_loss(
            model, batch["inputs"], batch["actions"], batch["rewards"], batch["terminated"],
            cfg.reward, cfg.loss, cfg.anticollapse, self.gen,
        )  # fmt: skip
        check(parts["loss"], batch)
        descend(loss, self.opts[:1], cfg.grad_clip)
        ploss, pparts = policy_loss(model, zs, cfg.reward, self.scale, self.gen)
        descend(ploss, self.opts[1:], cfg.grad_clip)
        return {**parts, **pparts}, zs

    def state_dict(self) -> dict[str, Any]:
        return self.scale.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scale.load_state_dict(state)


def batch_generator(seed: int, rank: int, first: int = 0) -> torch.Generator:
    """The batch draws of ``rank``: each rank draws its own batches (rank 0 those of a
    one-process run); a resumed rank > 0 draws afresh from ``first``."""
    offset = 1_000_003 * rank + (first if rank else 0)
    return torch.Generator().manual_seed(seed + offset)


def rounded(parts: dict[str, float]) -> dict[str, float]:
    """Loss parts as logged: 6 decimals."""
    return {k: round(v, 6) for k, v in parts.items()}


def non_finite_error(
    loss: float, step: int, windows: dict, batches: Batches, dataset: str, lr: float, saved: Path
) -> DatasetError:
    """The one-line error for a loss that is not finite: it names the dataset key that holds
    NaN/Inf in this batch (or else the likely cause) and the last good state, if one is kept."""
    kept = f"; the last good state is kept in {saved}" if saved.exists() else ""
    bad = non_finite_key(windows, batches.input_keys)
    cause = (
        f"{dataset!r} holds NaN/Inf in {bad!r}; clean or re-collect it"
        if bad
        else f"check {dataset!r} for extreme values or lower lr={lr}"
    )
    return DatasetError(f"loss became {loss} at step {step}: {cause}{kept}")


def fit(
    dataset: str,
    out: str | Path,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    progress: bool = True,
    resume: bool = False,
) -> WorldModel:
    """Train a model on ``dataset`` and return it; rank 0 writes ``metrics.csv``, TensorBoard
    events (``tb/``) and the resumable ``train_state.pt`` into ``out``.

    Every ``cfg.checkpoint_every`` steps, and at the end, the whole training state (model,
    EMA target, optimisers, schedule, random generators, step) is written atomically to
    ``out/train_state.pt``. ``resume=True`` continues from it: a run killed at any moment and
    resumed logs the same metrics, step for step, as one that never stopped (same seed, CPU).

    Started by ``torchrun --nproc_per_node N``, the N processes train one model with
    DistributedDataParallel (gloo on CPU, NCCL on GPU, one GPU per process): each rank draws
    its own ``batch_size`` windows (its own seed), so a step sees N x ``batch_size`` windows
    and the gradients are averaged over them; ``lr`` is not rescaled. Rank 0 draws the batches
    a one-process run draws. Batch statistics (VICReg, SIGReg, the collapse report) are each
    rank's own; every other term equals the one-process loss on the N batches combined.
    """
    device = train_device(cfg.device)
    rank, _ = init_distributed(device)
    out, main = Path(out), rank == 0
    check_model_dir(out)  # before its logs go in: the checkpoint is written there at the end
    store = EpisodeStore.open(dataset)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = build_model(store, model_cfg).to(device)
    if cfg.compile:
        model.encoder.compile()
        model.predictor.compile()
    critic = cfg.critic if model.critic is not None else None
    opts = optimizers(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opts[0], lambda s: lr_factor(s, cfg.warmup, cfg.steps)
    )
    gen, first, identity = batch_generator(cfg.seed, rank), 0, run_identity(store, model_cfg, cfg)
    if model.task == "reward":
        batches = RewardBatches(store, model, cfg.horizon, cfg.batch_size, device)
        update = RewardUpdate(model, cfg, opts, gen)
    else:
        joint = critic is None or critic.joint
        batches = Batches(store, model, cfg.horizon, cfg.batch_size, critic, device, joint)
        update = GoalUpdate(data_parallel(Objective(model, cfg), device), opts, cfg.grad_clip)
    if resume and (out / TRAIN_STATE).exists():
        first = load_train_state(out / TRAIN_STATE, identity, model, opts, sched, gen, update)
        first += 1
        gen = batch_generator(cfg.seed, rank, first) if rank else gen
        update.gen = gen
    if main:
        out.mkdir(parents=True, exist_ok=True)
    log = MetricsLog(out, first, cfg.tensorboard) if main else None
    watch, wait = CollapseWatch(log.largest("z_std") if log else None), DataWait()
    try:
        bar = tqdm(range(first, cfg.steps), "train", cfg.steps, leave=False, unit="step",
                   initial=first, disable=None if progress and main else True)  # fmt: skip
        for step in bar:
            tick = time.perf_counter()
            batch = batches.sample(gen)
            drawn = time.perf_counter()

            def check(loss: float, windows: dict, step: int = step) -> None:
                if not math.isfinite(loss):
                    raise non_finite_error(loss, step, windows, batches, dataset, cfg.lr,
                                           out / TRAIN_STATE)  # fmt: skip

            parts, z = update(batch, check)
            sched.step()
            follow_targets(model, model.momentum(step, cfg.steps), cfg)
            wait.add(drawn - tick, time.perf_counter() - tick)
            if log and (step % cfg.log_every == 0 or step == cfg.steps - 1):
                row = {"step": step, **rounded(parts), **watch(z, step)}
                log.write({**row, "lr": sched.get_last_lr()[0], "data_wait": wait.take()})
                bar.set_postfix(loss=f"{parts['loss']:.4f}", rank=row["effective_rank"])
            if main and (step + 1) % cfg.checkpoint_every == 0 and step < cfg.steps - 1:
                save_train_state(out / TRAIN_STATE, identity, step, model, opts, sched, gen,
                                 update)  # fmt: skip
        bar.close()
        if critic is not None and critic.finetune > 0 and first < cfg.steps:
            finetune_critic(model, batches, opts[-1], cfg, gen, log)
        if main:
            save_train_state(out / TRAIN_STATE, identity, cfg.steps - 1, model, opts, sched, gen,
                             update)  # fmt: skip
    finally:
        if log:
            log.close()
    return model


class GoalUpdate:
    """One training step of a goal-task model: the :class:`Objective` (under DDP when
    distributed), ``check(loss, windows)`` before any weight moves, one step of every
    optimiser. Returns (parts, latents)."""

    def __init__(self, objective: nn.Module, opts: list, clip: float) -> None:
        self.objective, self.opts, self.clip, self.gen = objective, opts, clip, None

    def __call__(self, batch: dict[str, Any], check: Any) -> tuple[dict[str, float], Any]:
        loss, parts, z = self.objective(batch)
        check(parts["loss"], batch["windows"])
        descend(loss, self.opts, self.clip)
        return parts, z

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


def finetune_critic(
    model: WorldModel,
    batches: Batches,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    gen: torch.Generator,
    log: MetricsLog | None,
) -> None:
    """``cfg.critic.finetune`` critic-only TD updates on the final encoder, which no longer
    moves the latents under the critic (so every row is encoded once:
    :class:`LatentTransitions`); logged as steps ``cfg.steps`` onwards."""
    objective = data_parallel(Objective(model, cfg, jepa=False), batches.device)
    latents = LatentTransitions(batches, model)
    for i in range(cfg.critic.finetune):
        loss, parts, _ = objective(latents.sample(gen))
        descend(loss, [opt], cfg.grad_clip)
        follow_targets(model, None, cfg)
        if log and (i % cfg.log_every == 0 or i == cfg.critic.finetune - 1):
            log.write({"step": cfg.steps + i, **rounded(parts)})


def train(
    dataset: str,
    out: str | Path,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    config_record: dict[str, Any] | None = None,
    progress: bool = True,
    resume: bool = False,
) -> Path:
    """Train on ``dataset`` (:func:`fit`, whose docstring says how several processes share
    the work) and write the checkpoint directory ``out``: ``model.pt``, ``meta.json``
    (dataset, config, provenance), ``metrics.csv`` and ``train_state.pt``."""
    start = time.perf_counter()
    model = fit(dataset, out, model_cfg, cfg, progress, resume)
    rank, world = init_distributed()
    in_sync = ranks_agree(model)  # every rank takes part
    if rank > 0:
        return Path(out)
    store = EpisodeStore.open(dataset)
    meta = {
        "dataset": {
            "path": str(dataset),
            "fingerprint": store.fingerprint(),
            "episodes": store.n_episodes,
            "transitions": store.n_transitions,
        },
        "env": store.attrs["env"],
        "obs_key": model.state_key,
        "task": model.task,
        "input_keys": dict(model.input_keys),
        "steps": cfg.steps,
        "seed": cfg.seed,
        "world_size": world,
        "ranks_in_sync": in_sync,
        "seconds": round(time.perf_counter() - start, 2),
        "config": config_record or {},
    }
    return save_checkpoint(model.cpu(), out, meta)

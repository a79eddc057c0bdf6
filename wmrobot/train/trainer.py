"""Train a WorldModel on an EpisodeStore: the loop, its schedule, logging and the checkpoint."""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from wmrobot.datasets import EpisodeStore, WindowSampler
from wmrobot.errors import CheckpointError, ConfigError, DatasetError, check_range
from wmrobot.files import write_atomically
from wmrobot.model.collapse import SHRINK_FRACTION, collapse_report
from wmrobot.model.world_model import ModelConfig, WorldModel
from wmrobot.provenance import git_revision, versions
from wmrobot.train.checkpoint import save_checkpoint
from wmrobot.train.critic import CriticConfig, HindsightGoals, critic_loss
from wmrobot.train.critic import update_target as critic_update
from wmrobot.train.losses import LossWeights, jepa_loss


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
        check_range("model.train.critic.finetune", self.critic.finetune, 0)
        check_range("model.train.critic.batch_size", self.critic.batch_size, 1)
        check_range("model.train.critic.lr", self.critic.lr, 0, closed=False)


# Settings that change how a run is watched or where it runs, not the numbers it computes.
NOT_IDENTITY = ("log_every", "checkpoint_every", "tensorboard", "device", "amp", "compile")


def observation_keys(store: EpisodeStore) -> tuple[str, str]:
    """The (observation, achieved goal) keys a goal-conditioned dataset must hold."""
    keys = set(store.keys)
    if {"obs/observation", "obs/achieved_goal"} <= keys:
        return "obs/observation", "obs/achieved_goal"
    raise DatasetError(
        f"{store.path!r} has keys {sorted(keys)}; training needs a goal-conditioned dataset "
        f"with obs/observation and obs/achieved_goal (e.g. from wmrobot/PointMaze-v0)"
    )


def build_model(store: EpisodeStore, cfg: ModelConfig) -> WorldModel:
    obs_key, _ = observation_keys(store)
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
    )


def check_compatible(model: WorldModel, store: EpisodeStore) -> None:
    """Refuse, in one line, a dataset whose spaces are not the ones ``model`` was built for."""
    obs_key, _ = observation_keys(store)
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


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


class Batches:
    """Training batches of windows in the model's inputs: encoder inputs along each window
    (frame stacks built from the rows before it), actions, achieved goals, hindsight goals."""

    def __init__(self, store: EpisodeStore, model: WorldModel, horizon: int) -> None:
        _, self.ag_key = observation_keys(store)
        self.model, self.input_keys, self.stack = model, dict(model.input_keys), model.frames
        self.horizon = horizon
        keys = [*self.input_keys.values(), "action", self.ag_key]
        self.sampler = WindowSampler(store, keys, steps=horizon + self.stack - 1)
        ends = store.episode_ends
        lengths = np.diff(np.concatenate([[0], ends]))
        self.episode_start = torch.as_tensor(np.repeat(ends - lengths, lengths))

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

    def sample(self, batch_size: int, gen: torch.Generator) -> dict[str, Any]:
        s, sampler = self.stack, self.sampler
        batch = sampler.sample(batch_size, gen)
        inputs = self.model.window_inputs(batch)  # (B, K+1, ...), frame stacks built
        goal_rows = torch.randint(sampler.n_rows, (batch_size,), generator=gen)
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


def task_functions(store: EpisodeStore):
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


def _as_goal_state(goal_observation, achieved: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Goal states as a planner builds them: ``goal_observation`` of the achieved goals."""
    if goal_observation is None:
        return like
    return torch.as_tensor(goal_observation(achieved.numpy()), dtype=like.dtype)


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch.to(device, non_blocking=True)


def _non_finite(batch: dict[str, Any], keys: dict[str, str]) -> str | None:
    """The dataset key of the first non-finite value in a batch, if any."""
    named = {**{keys[k]: v for k, v in batch["inputs"].items()}, "action": batch["actions"]}
    for key, value in named.items():
        if value.is_floating_point() and not torch.isfinite(value).all():
            return key
    return None


def _critic_loss(model, batches, goals, task, cfg, gen, device):
    """One TD batch for the critic on hindsight goals, on the target encoder's latents; goal
    states are made as the planner makes them (the task's goal_observation)."""
    is_success, goal_observation = task
    gb = goals.sample(cfg.critic.batch_size, gen)
    rows = torch.cat([gb.rows, gb.next_rows, gb.goal_rows])
    inputs = batches.row_inputs(rows)
    achieved = batches.sampler.rows(batches.ag_key, torch.cat([gb.next_rows, gb.goal_rows]))
    half = len(gb.rows)
    if "state" in inputs:
        state = inputs["state"]
        goal_state = _as_goal_state(goal_observation, achieved[half:], state[2 * half :])
        inputs["state"] = torch.cat([state[: 2 * half], goal_state])
    inputs = _to(inputs, device)
    reached = torch.as_tensor(
        np.asarray(is_success(achieved[:half].numpy(), achieved[half:].numpy()), dtype=bool)
    ).to(device)
    with torch.no_grad():
        z, z_next, goal_z = model.encode_target(inputs).float().split(half)
    return critic_loss(
        model.critic, model.critic_target, z, z_next, goal_z, reached, gb.steps.to(device),
        cfg.critic,
    )  # fmt: skip


def _distributed() -> tuple[int, int]:
    """(rank, world size); joins the process group when started by ``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def _average_gradients(params: list[torch.nn.Parameter], world: int) -> None:
    """All-reduce the gradients in one flat buffer (what DDP does, without its hooks)."""
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def _ranks_agree(model: torch.nn.Module) -> bool:
    """Whether every rank ended with the same weights (a check on the gradient averaging)."""
    import torch.distributed as dist

    total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    values = [torch.zeros_like(total) for _ in range(dist.get_world_size())]
    dist.all_gather(values, total)
    return all(torch.equal(v, values[0]) for v in values)


def train(
    dataset: str,
    out: str | Path,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    config_record: dict[str, Any] | None = None,
    progress: bool = True,
    resume: bool = False,
) -> Path:
    """Train on ``dataset``; write the checkpoint and ``metrics.csv`` into ``out``.

    Every ``cfg.checkpoint_every`` steps the whole training state (model, EMA target,
    optimiser, schedule, random generators, step) is written atomically to
    ``out/train_state.pt``. ``resume=True`` continues from it: a run killed at any moment and
    resumed logs the same metrics, step for step, as one that never stopped (same seed, CPU).

    Started by ``torchrun --nproc_per_node N``, each process trains on its own batches of
    ``batch_size`` windows and the gradients are averaged (gloo on CPU, NCCL on GPU); rank 0
    writes the logs and checkpoints.
    """
    from wmrobot.train.losses import ANTICOLLAPSE

    if cfg.anticollapse not in ANTICOLLAPSE:
        raise ConfigError(
            f"model.train.anticollapse={cfg.anticollapse!r} is unknown; choose from {ANTICOLLAPSE}"
        )
    rank, world = _distributed()
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    store = EpisodeStore.open(dataset)
    model = build_model(store, model_cfg)
    batches = Batches(store, model, cfg.horizon)
    model.to(device)
    if cfg.compile:
        model.encoder.compile()
        model.predictor.compile()
    amp = cfg.amp and device.type == "cuda"
    params = [p for n, p in model.named_parameters() if p.requires_grad and "critic" not in n]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.warmup, cfg.steps))
    optimizers = [opt]
    if model.critic is not None:  # TD on the target encoder's latents, its own optimiser
        goals = HindsightGoals(store.episode_ends, cfg.critic)
        is_success, goal_observation = task_functions(store)
        critic_params = list(model.critic.parameters())
        optimizers.append(torch.optim.Adam(critic_params, lr=cfg.critic.lr))
    gen = torch.Generator().manual_seed(cfg.seed + 1_000_003 * rank)
    out = Path(out)
    main = rank == 0
    if main:
        out.mkdir(parents=True, exist_ok=True)
    identity = {
        "dataset": store.fingerprint(),
        "model": json.dumps(asdict(model_cfg), sort_keys=True),
        "train": json.dumps(
            {k: v for k, v in asdict(cfg).items() if k not in NOT_IDENTITY}, sort_keys=True
        ),
    }
    first, peak_std = 0, None  # the largest latent std logged so far (collapse_report)
    if resume and (out / TRAIN_STATE).exists():
        first = load_train_state(out / TRAIN_STATE, identity, model, optimizers, sched, gen) + 1
        if world > 1:  # the saved generator is rank 0's; the others derive theirs
            gen.manual_seed(cfg.seed + 1_000_003 * rank + first)
        if main:
            _keep_metrics_up_to(out / "metrics.csv", first - 1)
            peak_std = _largest_logged(out / "metrics.csv", "z_std")
    elif main and (out / "metrics.csv").exists():
        (out / "metrics.csv").unlink()
    start = time.perf_counter()
    writer: csv.DictWriter | None = None
    board = None
    if main and cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        board = SummaryWriter(str(out / "tb"), purge_step=first)
    warned = False
    waited = busy = 0.0
    log = open(out / "metrics.csv", "a", newline="") if main else None  # noqa: SIM115
    try:
        bar = tqdm(
            range(first, cfg.steps),
            desc="train",
            unit="step",
            disable=None if (progress and main) else True,
            leave=False,
            initial=first,
            total=cfg.steps,
        )
        for step in bar:
            tick = time.perf_counter()
            batch = _to(batches.sample(cfg.batch_size, gen), device)
            tock = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss, parts, z = jepa_loss(
                    model,
                    batch["inputs"],
                    batch["actions"],
                    batch["achieved"],
                    batch["goal_inputs"],
                    batch["goal_achieved"],
                    cfg.loss,
                    cfg.anticollapse,
                    cfg.stop_gradient,
                )
            if not math.isfinite(parts["loss"]):
                saved = out / TRAIN_STATE
                kept = f"; the last good state is kept in {saved}" if saved.exists() else ""
                bad = _non_finite(batch, batches.input_keys)
                cause = (
                    f"{dataset!r} holds NaN/Inf in {bad!r}; clean or re-collect it"
                    if bad
                    else f"check {dataset!r} for extreme values or lower lr={cfg.lr}"
                )
                raise DatasetError(f"loss became {parts['loss']} at step {step}: {cause}{kept}")
            if model.critic is not None:
                closs, cparts = _critic_loss(
                    model, batches, goals, (is_success, goal_observation), cfg, gen, device
                )
                loss = loss + cfg.loss.critic * closs
                parts.update(cparts)
            for o in optimizers:
                o.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:
                _average_gradients([p for p in model.parameters() if p.requires_grad], world)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            if model.critic is not None:
                torch.nn.utils.clip_grad_norm_(critic_params, cfg.grad_clip)
            for o in optimizers:
                o.step()
            sched.step()
            model.update_target(model.momentum(step, cfg.steps))
            if model.critic is not None:
                critic_update(model.critic, model.critic_target, cfg.critic.target_tau)
            waited += tock - tick
            busy += time.perf_counter() - tick
            if main and (step % cfg.log_every == 0 or step == cfg.steps - 1):
                flat = z.detach().reshape(-1, z.shape[-1]).float().cpu()
                report = collapse_report(flat, peak_std)
                # as logged (z_std, 6 decimals), so that a resumed run reads back the same peak
                peak_std = max(peak_std or 0.0, round(report["z_std_mean"], 6))
                if report["collapsed"] and not warned:
                    warned = True
                    why = (
                        f"mean std {report['z_std_mean']:.2g}, under "
                        f"{SHRINK_FRACTION:g} x its peak {peak_std:.2g}"
                        if report["shrunk"]
                        else f"effective rank {report['effective_rank']:.2f} of {z.shape[-1]}, "
                        f"smallest std {report['z_std_min']:.2g}"
                    )
                    warnings.warn(
                        f"the latents look collapsed at step {step} ({why}); use "
                        f"model.train.anticollapse=vicreg or sigreg, or raise its weight",
                        stacklevel=2,
                    )
                row = {
                    "step": step,
                    **{k: round(v, 6) for k, v in parts.items()},
                    "effective_rank": round(report["effective_rank"], 3),
                    "z_std_min": round(report["z_std_min"], 6),
                    "collapsed": int(report["collapsed"]),
                    "lr": sched.get_last_lr()[0],
                    "data_wait": round(waited / max(busy, 1e-9), 4),
                    "seconds": round(time.perf_counter() - start, 2),
                }
                waited = busy = 0.0
                if writer is None:
                    writer = csv.DictWriter(log, fieldnames=list(row))
                    if log.tell() == 0:  # a new log; a resumed one has its header
                        writer.writeheader()
                writer.writerow(row)
                log.flush()
                if board is not None:
                    for key, value in row.items():
                        if key != "step":
                            board.add_scalar(f"train/{key}", value, step)
                bar.set_postfix(loss=f"{parts['loss']:.4f}", rank=row["effective_rank"])
            if main and (step + 1) % cfg.checkpoint_every == 0 and step < cfg.steps - 1:
                save_train_state(out / TRAIN_STATE, identity, step, model, optimizers, sched, gen)
        bar.close()
        if model.critic is not None and cfg.critic.finetune > 0 and first < cfg.steps:
            task = (is_success, goal_observation)
            for i in range(cfg.critic.finetune):  # the latents no longer move under it
                closs, cparts = _critic_loss(model, batches, goals, task, cfg, gen, device)
                optimizers[-1].zero_grad(set_to_none=True)
                closs.backward()
                if world > 1:
                    _average_gradients(critic_params, world)
                torch.nn.utils.clip_grad_norm_(critic_params, cfg.grad_clip)
                optimizers[-1].step()
                critic_update(model.critic, model.critic_target, cfg.critic.target_tau)
                last = i == cfg.critic.finetune - 1
                if main and writer is not None and (i % cfg.log_every == 0 or last):
                    row = {"step": cfg.steps + i, **{k: round(v, 6) for k, v in cparts.items()}}
                    writer.writerow({**row, "seconds": round(time.perf_counter() - start, 2)})
                    log.flush()
    finally:
        if log is not None:
            log.close()
        if board is not None:
            board.close()
    in_sync = _ranks_agree(model) if world > 1 else True
    if not main:
        return out
    meta = {
        "dataset": {
            "path": str(dataset),
            "fingerprint": store.fingerprint(),
            "episodes": store.n_episodes,
            "transitions": store.n_transitions,
        },
        "env": store.attrs["env"],
        "obs_key": observation_keys(store)[0],
        "input_keys": batches.input_keys,
        "steps": cfg.steps,
        "seed": cfg.seed,
        "world_size": world,
        "ranks_in_sync": in_sync,
        "seconds": round(time.perf_counter() - start, 2),
        "config": config_record or {},
        "versions": versions(),
        "git_revision": git_revision(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    model.cpu()
    save_train_state(out / TRAIN_STATE, identity, cfg.steps - 1, model, optimizers, sched, gen)
    return save_checkpoint(model, out, meta)


TRAIN_STATE = "train_state.pt"


def _largest_logged(path: Path, column: str) -> float | None:
    """The largest value of ``column`` in a metrics CSV, if it has any."""
    if not path.exists():
        return None
    with open(path, newline="") as f:
        values = [float(r[column]) for r in csv.DictReader(f) if r.get(column)]
    return max(values) if values else None


def save_train_state(
    path: Path, identity: dict[str, str], step: int, model, opt, sched, gen
) -> None:
    """Everything a resumed run needs to continue bit for bit, written atomically (plain
    tensors and numbers only, so it loads with ``weights_only=True``)."""
    state = {
        "identity": identity,
        "step": step,
        "model": model.state_dict(),
        "optimizer": [o.state_dict() for o in opt],
        "scheduler": sched.state_dict(),
        "generator": gen.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    write_atomically(path, lambda f: torch.save(state, f))


def load_train_state(path: Path, identity: dict[str, str], model, opt, sched, gen) -> int:
    """Restore a state written by :func:`save_train_state`; return its step."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a truncated or foreign file raises many types
        raise CheckpointError(f"cannot resume from {str(path)!r}: {e}") from None
    for key, value in identity.items():
        if state.get("identity", {}).get(key) != value:
            raise CheckpointError(
                f"{str(path)!r} was written for another {key} than this run's; resume with the "
                f"same dataset and config, or train into a new out="
            )
    model.load_state_dict(state["model"])
    for o, saved in zip(opt, state["optimizer"], strict=True):
        o.load_state_dict(saved)
    sched.load_state_dict(state["scheduler"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def _keep_metrics_up_to(path: Path, step: int) -> None:
    """Drop the log rows of steps after ``step`` (written before a crash, to be redone)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = lines[:1] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= step]
    write_atomically(path, lambda f: f.write("".join(kept).encode()), sync=False)

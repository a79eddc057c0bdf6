"""Data-parallel training with DDP (gloo, CPU, two processes): the ranks draw different batches,
end with equal weights, and one step equals a one-process step on their batches combined."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from wmrobot.datasets import EpisodeStore
from wmrobot.model import ModelConfig
from wmrobot.train import LossWeights, TrainConfig, fit
from wmrobot.train.critic import CriticConfig
from wmrobot.train.data import Batches, build_model
from wmrobot.train.trainer import (
    Objective,
    batch_generator,
    descend,
    follow_targets,
    lr_factor,
    optimizers,
)

MODEL = ModelConfig(
    latent_dim=8, hidden=16, depth=1, goal_dim=3, ema=0.9, latent_weight=0.5, cost_weight=1.0,
    critic=True, critic_hidden=16,
)  # fmt: skip
# No batch-statistics term (anticollapse=none): the loss is then a mean over windows, so the
# average of two ranks' gradients is the gradient on their batches combined.
TRAIN = TrainConfig(
    steps=1, batch_size=16, horizon=3, lr=1e-2, weight_decay=0.01, warmup=1, grad_clip=0.5,
    loss=LossWeights(1.0, 1.0, 0.04, 1.0), log_every=1, seed=3, tensorboard=False,
    anticollapse="none", critic=CriticConfig(batch_size=32, finetune=2),
)  # fmt: skip
WORLD = 2
# The heads' last biases cancel in their differences (||h(z) - h(g)||): their gradient is 0 up
# to rounding, which Adam's first step scales to +-lr, so no two summation orders agree there.
CANCELLED = ("cost_head.3.bias", "critic.phi.6.bias", "critic_target.phi.6.bias")


def _rank(rank: int, port: int, dataset: str, out: Path) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD))  # fmt: skip
    torch.set_num_threads(1)
    model = fit(dataset, out / "run", MODEL, TRAIN, progress=False)
    torch.save(model.state_dict(), out / f"rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def combined(a, b):
    """Two batches as one: every tensor concatenated along the batch axis."""
    if isinstance(a, dict):
        return {k: combined(a[k], b[k]) for k in a}
    return torch.cat([a, b])


def one_process_step(dataset: str, draws: list[torch.Generator]) -> dict[str, torch.Tensor]:
    """What ``fit`` does in one process for one step and the critic's fine-tuning, on the
    batches that ``draws`` give, combined."""
    store = EpisodeStore.open(dataset)
    torch.manual_seed(TRAIN.seed)
    model = build_model(store, MODEL)
    batches = Batches(store, model, TRAIN.horizon, TRAIN.batch_size, TRAIN.critic)
    opts = optimizers(model, TRAIN)
    for o in opts[:1]:
        o.param_groups[0]["lr"] *= lr_factor(0, TRAIN.warmup, TRAIN.steps)
    batch = [batches.sample(g) for g in draws]
    loss, _, _ = Objective(model, TRAIN)(batch[0] if len(draws) == 1 else combined(*batch))
    descend(loss, opts, TRAIN.grad_clip)
    follow_targets(model, model.momentum(0, TRAIN.steps), TRAIN)
    for _ in range(TRAIN.critic.finetune):
        batch = [batches.sample(g, windows=False) for g in draws]
        loss, _, _ = Objective(model, TRAIN, jepa=False)(
            batch[0] if len(draws) == 1 else combined(*batch)
        )
        descend(loss, opts[-1:], TRAIN.grad_clip)
        follow_targets(model, None, TRAIN)
    return model.state_dict()


def test_ddp_steps_as_one_process_on_the_ranks_batches_combined(maze_dataset, tmp_path):
    dataset = str(maze_dataset)
    mp.spawn(_rank, args=(_free_port(), dataset, tmp_path), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for key, value in ranks[0].items():
        assert torch.equal(value, ranks[1][key]), key  # the ranks end with equal weights

    store = EpisodeStore.open(dataset)
    batches = Batches(store, build_model(store, MODEL), TRAIN.horizon, TRAIN.batch_size)
    drawn = [batches.sample(batch_generator(TRAIN.seed, r))["windows"] for r in range(WORLD)]
    assert not torch.equal(drawn[0]["actions"], drawn[1]["actions"])  # different batches

    both = one_process_step(dataset, [batch_generator(TRAIN.seed, r) for r in range(WORLD)])
    alone = one_process_step(dataset, [batch_generator(TRAIN.seed, 0)])
    far = 0.0
    for key, value in ranks[0].items():
        if value.is_floating_point() and key not in CANCELLED:
            torch.testing.assert_close(value, both[key], rtol=1e-4, atol=1e-5, msg=key)
            far = max(far, (value - alone[key]).abs().max().item())
    assert far > 1e-3  # rank 0's batch alone would have stepped elsewhere

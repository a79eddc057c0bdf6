"""The critic: hindsight goals stay in their episode, TD with a target network learns the
shortest distance on a small graph, the target moves only by Polyak steps; the heads' shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from wmrobot.errors import ConfigError, DatasetError
from wmrobot.model.heads import Actor, Critic
from wmrobot.train.critic import (
    CriticConfig,
    HindsightGoals,
    critic_loss,
    make_critic,
    update_target,
)

RING = 12  # nodes of the ring graph; the shortest distance between two is at most RING // 2


def ring_walks(episodes: int, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random walks on the ring (move -1, 0 or +1 per step): node of each row, episode ends."""
    rng = np.random.default_rng(seed)
    nodes, ends = [], []
    for _ in range(episodes):
        moves = rng.integers(-1, 2, size=steps)
        walk = (rng.integers(RING) + np.concatenate([[0], np.cumsum(moves)])) % RING
        nodes.append(walk)
        ends.append(sum(len(n) for n in nodes))
    return np.concatenate(nodes), np.array(ends)


def ring_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    d = (a - b).abs()
    return torch.minimum(d, RING - d)


def train_ring_critic(cfg: CriticConfig, updates: int, seed: int = 0, arch=(128, 2, 32)):
    """Fit a critic on one-hot ring latents; returns it, the target and the loss before and
    after training."""
    nodes, ends = ring_walks(episodes=40, steps=40, seed=seed)
    node = torch.as_tensor(nodes)
    z = torch.eye(RING)[node]
    goals = HindsightGoals(ends, cfg)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    critic, target = make_critic(RING, *arch)
    opt = torch.optim.Adam(critic.parameters(), lr=cfg.lr)
    untrained = Critic(RING, *arch)
    untrained.load_state_dict(critic.state_dict())
    for _ in range(updates):
        b = goals.sample(cfg.batch_size, gen)
        reached = node[b.next_rows] == node[b.goal_rows]
        loss, parts = critic_loss(
            critic, target, z[b.rows], z[b.next_rows], z[b.goal_rows], reached, b.steps, cfg
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        update_target(critic, target, cfg.target_tau)
    # The TD loss against the final target network, on a fresh batch: before and after.
    b = goals.sample(4096, gen)
    reached = node[b.next_rows] == node[b.goal_rows]
    batch = (z[b.rows], z[b.next_rows], z[b.goal_rows], reached, b.steps, cfg)
    losses = [critic_loss(c, target, *batch)[1]["critic"] for c in (untrained, critic)]
    return critic, target, losses


def test_critic_orders_states_by_shortest_distance():
    cfg = CriticConfig(batch_size=256)
    critic, _, losses = train_ring_critic(cfg, arch=(64, 2, 16), updates=1000)
    s, g = torch.meshgrid(torch.arange(RING), torch.arange(RING), indexing="ij")
    s, g = s.flatten(), g.flatten()
    far = s != g
    with torch.no_grad():
        v = critic(torch.eye(RING)[s[far]], torch.eye(RING)[g[far]])
    steps = ring_distance(s[far], g[far]).float()
    # Random walks take far longer than the shortest path: only TD (stitching, optimistic
    # expectile) gets the values this close to the shortest distance.
    assert spearmanr(v.numpy(), steps.numpy())[0] > 0.9
    discounted = (1 - cfg.gamma**steps) / (1 - cfg.gamma)
    assert (v - discounted).abs().mean() < 0.75
    assert losses[1] < 0.5 * losses[0]


def test_target_network_moves_only_by_polyak_steps():
    cfg = CriticConfig(batch_size=32)
    critic, target = make_critic(4, hidden=16, depth=1, embed=8)
    assert all(not p.requires_grad for p in target.parameters())
    for p, q in zip(target.parameters(), critic.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    with torch.no_grad():  # make them differ, so the Polyak step below is visible
        for p in critic.parameters():
            p.add_(0.1)
    before = [p.clone() for p in target.parameters()]
    z = torch.randn(32, 4)
    steps = torch.full((32,), 3)
    loss, _ = critic_loss(critic, target, z, z.roll(1, 0), z.flip(0), z[:, 0] > 0, steps, cfg)
    loss.backward()
    assert all(p.grad is None for p in target.parameters())
    assert all(p.grad is not None for p in critic.parameters())
    for p, q in zip(target.parameters(), before, strict=True):
        torch.testing.assert_close(p, q)
    update_target(critic, target, 0.25)
    for p, q, c in zip(target.parameters(), before, critic.parameters(), strict=True):
        torch.testing.assert_close(p, 0.75 * q + 0.25 * c.detach())


def test_hindsight_goals_never_cross_episodes():
    ends = np.array([5, 6, 20, 23, 40])  # episode 1 has a single row: never a state
    goals = HindsightGoals(ends, CriticConfig(future=0.5, random=0.3, next=0.2))
    episode = np.repeat(np.arange(len(ends)), np.diff(np.concatenate([[0], ends])))
    b = goals.sample(20000, torch.Generator().manual_seed(0))
    rows, nxt, goal, steps = (x.numpy() for x in (b.rows, b.next_rows, b.goal_rows, b.steps))
    assert (nxt == rows + 1).all() and (episode[nxt] == episode[rows]).all()
    assert not np.isin(rows, ends - 1).any()  # a state always has a successor
    same = (episode[goal] == episode[rows]) & (goal > rows)
    assert (steps[same] == (goal - rows)[same]).all() and (steps[~same] == -1).all()
    assert (goal < ends[-1]).all() and (goal >= 0).all()
    # future goals reach every later row of the episode, up to its last one
    from_row_6 = goal[(rows == 6) & same]
    assert set(from_row_6) == set(range(7, 20))
    # the mixture: about 20% next rows, the rest future or anywhere
    assert 0.15 < np.mean(steps == 1) < 0.45
    assert np.mean(~same) > 0.1


def test_bad_configs_and_layouts_raise_clear_errors():
    with pytest.raises(ConfigError, match="sum to 1"):
        CriticConfig(future=0.9, random=0.3, next=0.2)
    with pytest.raises(ConfigError, match=r"model.train.critic.gamma=1.0 is out of range"):
        CriticConfig(gamma=1.0)
    with pytest.raises(ConfigError, match=r"model.train.critic.target_tau=0 is out of range"):
        CriticConfig(target_tau=0)
    with pytest.raises(DatasetError, match="episode_ends"):
        HindsightGoals(np.array([5, 5, 9]), CriticConfig())
    with pytest.raises(DatasetError, match="single row"):
        HindsightGoals(np.array([1, 2]), CriticConfig())


def test_heads_shapes_and_ranges():
    torch.manual_seed(0)
    critic, actor = Critic(6, 32, 2, embed=8), Actor(6, 3, 32, 2)
    z, g = 10 * torch.randn(4, 5, 6), torch.randn(1, 1, 6)  # goal broadcast over the batch
    v, a = critic(z, g), actor(z, g)
    assert v.shape == (4, 5) and (v >= 0).all()
    torch.testing.assert_close(critic(z, z), torch.full((4, 5), 1e-3))  # at the goal: ~0
    torch.testing.assert_close(critic(z, g), critic(g, z))  # a distance: symmetric
    assert a.shape == (4, 5, 3) and (a.abs() <= 1).all()
    assert not torch.allclose(v[0], v[1]) and not torch.allclose(a[0], a[1])
    # only Linear/LayerNorm/ReLU Sequentials: what the numba backend exports
    kinds = {type(m) for net in (critic.phi, actor.net) for m in net}
    assert kinds <= {torch.nn.Linear, torch.nn.LayerNorm, torch.nn.ReLU}

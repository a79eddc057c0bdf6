"""Training windows stay inside one episode and never reach an episode's action-less last row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wmrobot.datasets import EpisodeStore, WindowSampler, window_starts
from wmrobot.errors import DatasetError


def brute_force_starts(lengths: list[int], steps: int) -> list[int]:
    """Every row t whose window t..t+steps lies in one episode with real actions on t..t+steps-1."""
    ends = np.cumsum(lengths)
    episode = np.repeat(np.arange(len(lengths)), lengths)
    last_rows = set((ends - 1).tolist())
    starts = []
    for t in range(int(ends[-1]) - steps):
        same_episode = episode[t] == episode[t + steps]
        real_actions = not any(r in last_rows for r in range(t, t + steps))
        if same_episode and real_actions:
            starts.append(t)
    return starts


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("steps", [1, 3, 6])
def test_window_starts_match_brute_force(seed, steps):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 12, size=rng.integers(1, 8)).tolist()  # rows per episode
    starts = window_starts(np.cumsum(lengths), steps)
    assert starts.dtype == np.int64
    assert starts.tolist() == brute_force_starts(lengths, steps)


def test_short_episodes_give_no_windows():
    # Rows per episode: 3 (2 actions), 4 (3 actions), 2 (1 action); windows of 3 actions.
    assert window_starts(np.array([3, 7, 9]), 3).tolist() == [3]
    assert window_starts(np.array([3, 5]), 3).size == 0


@pytest.fixture
def sampler_store(new_store, make_episode):
    rng = np.random.default_rng(0)
    store = new_store()
    episodes = [make_episode(t, rng) for t in (2, 9, 5, 1, 7)]
    for ep in episodes:
        ep["obs"][:, 0] = np.arange(len(ep["obs"]))  # time within the episode
        ep["obs"][:, 1] = len(ep["action"])  # identifies the episode
    store.append(episodes)
    return store


def test_sampled_windows_are_consecutive_rows_of_one_episode(sampler_store):
    steps = 4
    sampler = WindowSampler(sampler_store, ["obs", "action"], steps=steps)
    assert len(sampler) == (9 - 4 + 1) + (5 - 4 + 1) + (7 - 4 + 1)

    batch = sampler.sample(256, torch.Generator().manual_seed(0))
    assert batch["obs"].shape == (256, steps + 1, 3)
    assert batch["action"].shape == (256, steps + 1, 2)
    assert batch["obs"].dtype == torch.float32
    t, episode = batch["obs"][..., 0], batch["obs"][..., 1]
    assert torch.all(t.diff(dim=1) == 1)
    assert torch.all(episode == episode[:, :1])
    assert torch.isfinite(batch["action"][:, :steps]).all()


def test_sample_is_reproducible_with_a_seeded_generator(sampler_store):
    sampler = WindowSampler(sampler_store, ["obs"], steps=2)
    a = sampler.sample(32, torch.Generator().manual_seed(3))["obs"]
    b = sampler.sample(32, torch.Generator().manual_seed(3))["obs"]
    c = sampler.sample(32, torch.Generator().manual_seed(4))["obs"]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_indexing_makes_it_a_torch_dataset(sampler_store):
    sampler = WindowSampler(sampler_store, ["obs", "action"], steps=2)
    loader = torch.utils.data.DataLoader(sampler, batch_size=4, shuffle=False)
    first = next(iter(loader))
    assert first["obs"].shape == (4, 3, 3)
    window = sampler[0]
    expected = sampler_store.load(["obs"])["obs"][sampler.starts[0] : sampler.starts[0] + 3]
    np.testing.assert_array_equal(window["obs"].numpy(), expected)
    assert torch.equal(first["obs"][0], window["obs"])


def test_no_window_long_enough_is_an_error(sampler_store):
    with pytest.raises(DatasetError, match="longer than 10 steps"):
        WindowSampler(sampler_store, ["obs"], steps=10)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        WindowSampler(sampler_store, ["obs"], steps=0)


def test_sampler_on_a_collected_dataset(maze_dataset):
    store = EpisodeStore.open(maze_dataset)
    keys = ["obs/observation", "action", "obs/achieved_goal"]
    sampler = WindowSampler(store, keys, steps=5)
    batch = sampler.sample(64, torch.Generator().manual_seed(0))
    assert batch["obs/observation"].shape == (64, 6, 4)
    assert torch.isfinite(batch["action"][:, :5]).all()
    torch.testing.assert_close(batch["obs/achieved_goal"], batch["obs/observation"][..., :2])

"""Training windows stay inside one episode, never reach an episode's action-less last row, and
read the same rows lazily, from memory and in DataLoader workers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import zarr

from wmrobot.datasets import EpisodeStore, WindowSampler, window_starts
from wmrobot.datasets.sampler import ChunkReader
from wmrobot.errors import DatasetError


def brute_force_starts(lengths: list[int], steps: int, frame_skip: int = 1) -> list[int]:
    """Every row t whose rows t, t+k, .., t+steps*k lie in one episode with real actions on
    t .. t+steps*k-1."""
    span = steps * frame_skip
    ends = np.cumsum(lengths)
    episode = np.repeat(np.arange(len(lengths)), lengths)
    last_rows = set((ends - 1).tolist())
    starts = []
    for t in range(int(ends[-1]) - span):
        same_episode = episode[t] == episode[t + span]
        real_actions = not any(r in last_rows for r in range(t, t + span))
        if same_episode and real_actions:
            starts.append(t)
    return starts


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("steps", [1, 3, 6])
@pytest.mark.parametrize("frame_skip", [1, 2, 3])
def test_window_starts_match_brute_force(seed, steps, frame_skip):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 20, size=rng.integers(1, 8)).tolist()  # rows per episode
    starts = window_starts(np.cumsum(lengths), steps, frame_skip)
    assert starts.dtype == np.int64
    assert starts.tolist() == brute_force_starts(lengths, steps, frame_skip)


def test_short_episodes_give_no_windows():
    # Rows per episode: 3 (2 actions), 4 (3 actions), 2 (1 action); windows of 3 actions.
    assert window_starts(np.array([3, 7, 9]), 3).tolist() == [3]
    assert window_starts(np.array([3, 5]), 3).size == 0
    # Two steps of frame skip 2 need 4 actions: only a 5-row episode holds one.
    assert window_starts(np.array([4, 9]), 2, frame_skip=2).tolist() == [4]


def labelled_store(new_store, make_episode, lengths, name="d.zarr"):
    """A synthetic store whose rows say where they are: obs[:, 0] and action[:, 0] are the time
    within the episode, obs[:, 1] the episode's length (actions)."""
    rng = np.random.default_rng(0)
    store = new_store(name)
    episodes = [make_episode(t, rng) for t in lengths]
    for ep in episodes:
        time = np.arange(len(ep["obs"]))
        ep["obs"][:, 0] = time
        ep["obs"][:, 1] = len(ep["action"]) - 1
        ep["action"][:-1, 0] = time[:-1]
    store.append(episodes)
    return store


@pytest.fixture
def sampler_store(new_store, make_episode):
    return labelled_store(new_store, make_episode, [2, 9, 5, 1, 7])


def assert_windows_are_episode_rows(batch, steps, frame_skip):
    """Rows t, t+k, ..; actions of steps t .. t+steps*k-1, all real, all in one episode."""
    t, episode = batch["obs"][..., 0], batch["obs"][..., 1]
    assert torch.all(t.diff(dim=1) == frame_skip)
    assert torch.all(episode == episode[:, :1])
    assert torch.all(t[:, -1] <= episode[:, 0])  # the last row is at most the final one
    action = batch["action"]
    assert action.shape[1] == steps * frame_skip
    assert torch.isfinite(action).all()
    torch.testing.assert_close(action[..., 0], t[:, :1] + torch.arange(steps * frame_skip))


@pytest.mark.parametrize("cache", [True, False])
@pytest.mark.parametrize("frame_skip", [1, 2])
def test_sampled_windows_are_consecutive_rows_of_one_episode(sampler_store, cache, frame_skip):
    steps = 2 if frame_skip == 2 else 4
    sampler = WindowSampler(
        sampler_store, ["obs", "action"], steps=steps, frame_skip=frame_skip, cache=cache
    )
    span = steps * frame_skip
    assert len(sampler) == sum(max(n + 1 - span, 0) for n in [2, 9, 5, 1, 7])
    batch = sampler.sample(256, torch.Generator().manual_seed(0))
    assert batch["obs"].shape == (256, steps + 1, 3)
    assert batch["action"].shape == (256, span, 2)
    assert batch["obs"].dtype == torch.float32
    assert_windows_are_episode_rows(batch, steps, frame_skip)


@pytest.mark.parametrize("seed", range(3))
def test_every_window_of_random_episodes_is_valid(new_store, make_episode, seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 15, size=6).tolist()
    store = labelled_store(new_store, make_episode, lengths)
    steps, frame_skip = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    if max(lengths) < steps * frame_skip:
        steps = frame_skip = 1
    sampler = WindowSampler(store, ["obs", "action"], steps, frame_skip=frame_skip, cache=False)
    every = sampler.batch(torch.arange(len(sampler)))
    assert_windows_are_episode_rows(every, steps, frame_skip)
    # ...and no valid window is left out.
    assert len(sampler) == len(brute_force_starts([n + 1 for n in lengths], steps, frame_skip))


def test_sample_is_reproducible_with_a_seeded_generator(sampler_store):
    sampler = WindowSampler(sampler_store, ["obs"], steps=2)
    a = sampler.sample(32, torch.Generator().manual_seed(3))["obs"]
    b = sampler.sample(32, torch.Generator().manual_seed(3))["obs"]
    c = sampler.sample(32, torch.Generator().manual_seed(4))["obs"]
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("normalize", [False, True])
def test_lazy_and_cached_reads_are_identical(maze_dataset, normalize):
    store = EpisodeStore.open(maze_dataset)
    kwargs = {"steps": 3, "frame_skip": 2, "normalize": normalize}
    cached = WindowSampler(store, store.keys, cache=True, **kwargs)
    lazy = WindowSampler(store, store.keys, cache=False, **kwargs)
    cold = WindowSampler(store, store.keys, cache=False, memory=0, **kwargs)  # no chunk LRU
    assert cached.cached and not lazy.cached
    expected = cached.sample(64, torch.Generator().manual_seed(0))
    for sampler in (lazy, cold):
        batch = sampler.sample(64, torch.Generator().manual_seed(0))
        assert batch.keys() == expected.keys()
        for key, value in expected.items():
            assert batch[key].dtype == value.dtype, key
            assert torch.equal(batch[key], value), key
        rows = torch.tensor([[0, 5], [store.n_rows - 1, 17]])
        assert torch.equal(sampler.rows("goal", rows), cached.rows("goal", rows))


def test_auto_cache_loads_what_fits_in_memory(sampler_store):
    assert WindowSampler(sampler_store, ["obs"], 2, memory=10**6).cached
    assert not WindowSampler(sampler_store, ["obs"], 2, memory=10).cached


def test_dataloader_workers_read_the_right_rows(sampler_store):
    sampler = WindowSampler(sampler_store, ["obs", "action"], steps=2, cache=False)
    assert len(pickle.dumps(sampler)) < 10_000  # no zarr handles, no data
    indices = list(range(len(sampler)))[::-1]
    loader = torch.utils.data.DataLoader(sampler, batch_size=4, sampler=indices, num_workers=2)
    batches = list(loader)
    expected = sampler.batch(indices)
    for key in ("obs", "action"):
        torch.testing.assert_close(torch.cat([b[key] for b in batches]), expected[key])
    start = int(sampler.starts[indices[0]])
    obs = sampler_store.load(["obs"])["obs"]
    np.testing.assert_array_equal(batches[0]["obs"][0].numpy(), obs[start : start + 3])
    window = sampler[indices[0]]
    assert torch.equal(window["obs"], batches[0]["obs"][0])
    assert torch.equal(sampler[indices[:4]]["obs"], batches[0]["obs"])


def test_loader_yields_whole_batches_like_sample(sampler_store):
    sampler = WindowSampler(sampler_store, ["obs", "action"], steps=3, cache=False)
    batches = list(sampler.loader(16, batches=3, generator=torch.Generator().manual_seed(0)))
    assert len(batches) == 3 and batches[0]["obs"].shape == (16, 4, 3)
    for batch in batches:
        assert_windows_are_episode_rows(batch, steps=3, frame_skip=1)
    again = next(iter(sampler.loader(16, batches=3, generator=torch.Generator().manual_seed(0))))
    assert torch.equal(again["obs"], batches[0]["obs"])


def test_normalisation_uses_the_stored_statistics_and_inverts(maze_dataset):
    store = EpisodeStore.open(maze_dataset)
    keys = ["obs/observation", "action", "physics", "terminated"]
    raw = WindowSampler(store, keys, steps=4).sample(128, torch.Generator().manual_seed(0))
    sampler = WindowSampler(store, keys, steps=4, normalize=True)
    norm = sampler.sample(128, torch.Generator().manual_seed(0))
    stats = store.attrs["stats"]
    for key in ("obs/observation", "action"):
        mean, std = (torch.tensor(stats[key][s], dtype=torch.float32) for s in ("mean", "std"))
        torch.testing.assert_close(norm[key], (raw[key] - mean) / std)
        torch.testing.assert_close(sampler.normalizer.unnormalize(key, norm[key]), raw[key])
        assert torch.isfinite(norm[key]).all()
    for key in ("physics", "terminated"):  # no statistics: passed through
        assert torch.equal(norm[key], raw[key])
    every = sampler.rows("obs/observation", torch.arange(store.n_rows))
    torch.testing.assert_close(every.mean(0), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(every.std(0, correction=0), torch.ones(4), atol=1e-4, rtol=0)


def test_normalising_a_constant_feature_stays_finite(new_store, make_episode):
    rng = np.random.default_rng(0)
    episodes = [make_episode(6, rng) for _ in range(3)]
    for ep in episodes:
        ep["obs"][:, 2] = 0.5  # std 0
    store = new_store()
    store.append(episodes)
    batch = WindowSampler(store, ["obs", "action"], 3, normalize=True).sample(
        16, torch.Generator().manual_seed(0)
    )
    assert torch.isfinite(batch["obs"]).all() and torch.isfinite(batch["action"]).all()
    assert torch.all(batch["obs"][..., 2] == 0)


@pytest.fixture
def pixel_store(tmp_path, make_episode):
    store = EpisodeStore.create(
        tmp_path / "pixels.zarr",
        env={"id": "synthetic", "kwargs": {}},
        spaces={"observation": "Box(3)", "action": "Box(2)"},
        row_shapes={
            "obs": ((3,), "float32"),
            "action": ((2,), "float32"),
            "reward": ((), "float32"),
            "pixels": ((8, 8, 3), "uint8"),
        },
    )
    rng = np.random.default_rng(0)
    episodes = [make_episode(24, rng) for _ in range(8)]  # 200 rows: 13 chunks of 16 frames
    for ep in episodes:
        ep["pixels"] = rng.integers(0, 256, size=(25, 8, 8, 3), dtype=np.uint8)
    store.append(episodes)
    return store


def test_pixel_windows_read_only_the_chunks_they_touch(pixel_store, monkeypatch):
    read = []
    original = zarr.Array.__getitem__

    def counting(array, selection):
        out = original(array, selection)
        read.append(len(out))
        return out

    monkeypatch.setattr(zarr.Array, "__getitem__", counting)
    sampler = WindowSampler(pixel_store, ["pixels"], steps=4, cache=False, memory=0)
    batch = sampler.sample(2, torch.Generator().manual_seed(0))
    assert batch["pixels"].dtype == torch.uint8 and batch["pixels"].shape == (2, 5, 8, 8, 3)
    assert 0 < sum(read) <= 2 * 2 * 16  # each 5-frame window spans at most two chunks
    monkeypatch.undo()
    pixels = pixel_store.load(["pixels"])["pixels"]
    rows = (sampler.starts[:, None] + torch.arange(5)).numpy()
    everything = sampler.batch(torch.arange(len(sampler)))["pixels"].numpy()
    np.testing.assert_array_equal(everything, pixels[rows])


def test_chunk_reader_keeps_its_lru_under_budget(pixel_store):
    chunk_bytes = 16 * 8 * 8 * 3
    reader = ChunkReader(pixel_store, ["pixels"], pixel_store.n_rows, budget=3 * chunk_bytes)
    pixels = pixel_store.load(["pixels"])["pixels"]
    rng = np.random.default_rng(0)
    for _ in range(5):
        rows = rng.integers(0, pixel_store.n_rows, size=(4, 3))
        np.testing.assert_array_equal(reader.read("pixels", rows), pixels[rows])
        assert reader.held == sum(b.nbytes for b in reader.lru.values()) <= 3 * chunk_bytes
    assert reader.lru  # it does keep chunks


class _CountingArray:
    """A zarr array that counts the reads made through it."""

    def __init__(self, array):
        self.array, self.reads = array, 0

    def __getitem__(self, index):
        self.reads += 1
        return self.array[index]

    def __getattr__(self, name):
        return getattr(self.array, name)


@pytest.mark.parametrize(("budget_chunks", "rereads"), [(8, 0), (0, 1)])
def test_chunk_reader_rereads_only_what_its_lru_cannot_hold(pixel_store, budget_chunks, rereads):
    budget = budget_chunks * 16 * 8 * 8 * 3
    reader = ChunkReader(pixel_store, ["pixels"], pixel_store.n_rows, budget=budget)
    reader.arrays["pixels"] = counting = _CountingArray(reader.arrays["pixels"])
    rows = np.array([[0, 1, 2]])  # all in the first chunk
    first = reader.read("pixels", rows)
    assert counting.reads == 1
    np.testing.assert_array_equal(reader.read("pixels", rows), first)
    assert counting.reads == 1 + rereads


def test_bad_arguments_are_one_line_errors(sampler_store):
    cases = [
        ({"steps": 10}, "holds a window of 10 steps"),
        ({"steps": 5, "frame_skip": 2}, r"window of 10 steps \(steps=5 x frame_skip=2\); lower"),
        ({"steps": 0}, "steps must be >= 1, got 0"),
        ({"steps": 2, "frame_skip": 0}, "frame_skip must be >= 1, got 0"),
        ({"steps": 2, "keys": ["obs", "pixels"]}, "has no key 'pixels'; choose from obs, action"),
        ({"steps": 2, "cache": "yes"}, "cache must be True, False or 'auto', got 'yes'"),
    ]
    for kwargs, message in cases:
        kwargs = {"keys": ["obs"], **kwargs}
        with pytest.raises(DatasetError, match=message) as error:
            WindowSampler(sampler_store, **kwargs)
        assert "\n" not in str(error.value)
    with pytest.raises(DatasetError, match="'action' is not one of this sampler's keys"):
        WindowSampler(sampler_store, ["obs"], 2).rows("action", torch.arange(3))


def test_sampler_on_a_collected_dataset(maze_dataset):
    store = EpisodeStore.open(maze_dataset)
    keys = ["obs/observation", "action", "obs/achieved_goal"]
    sampler = WindowSampler(store, keys, steps=5)
    batch = sampler.sample(64, torch.Generator().manual_seed(0))
    assert batch["obs/observation"].shape == (64, 6, 4)
    assert batch["action"].shape == (64, 5, 2)
    assert torch.isfinite(batch["action"]).all()
    torch.testing.assert_close(batch["obs/achieved_goal"], batch["obs/observation"][..., :2])

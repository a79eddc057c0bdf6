"""The acceleration layer on and off: the same collect() writes the same dataset."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from wmrobot.datasets import collect
from wmrobot.datasets.accel.store import DirectStore
from wmrobot.datasets.policies import PolicySpec


def _arrays(group: zarr.Group, prefix: str = "") -> dict[str, zarr.Array]:
    """Every array under ``group`` (``data/obs/observation``, ``meta/seed``, ...) by path."""
    out = {}
    for name, node in group.members():
        if isinstance(node, zarr.Array):
            out[prefix + name] = node
        else:
            out.update(_arrays(node, f"{prefix}{name}/"))
    return out


@pytest.mark.parametrize(
    ("env_id", "env_kwargs"),
    [
        ("wmrobot/PointMaze-v0", {"layout": "open", "min_goal_distance": 0.5}),
        ("HalfCheetah-v5", {"max_episode_steps": 40}),
    ],
)
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("beta", [0.0, 1.0])  # uniform and pink random actions
def test_the_layer_on_and_off_write_the_same_arrays_bit_for_bit(
    tmp_path, monkeypatch, env_id, env_kwargs, workers, beta
):
    direct_writes = []
    write = DirectStore._write_grown
    monkeypatch.setattr(
        DirectStore,
        "_write_grown",
        lambda self, *args: (direct_writes.append(args[0]), write(self, *args))[1],
    )
    groups = {}
    for fast in (False, True):
        before = len(direct_writes)
        path = tmp_path / f"fast-{fast}.zarr"
        collect(
            str(path),
            env_id,
            env_kwargs,
            policy=PolicySpec(beta=beta),
            episodes=7,
            seed=5,
            workers=workers,
            fast=fast,
            flush_every=3,
            progress=False,
        )
        # the layer wrote the second dataset, and nothing of the first
        assert (len(direct_writes) > before) == fast
        groups[fast] = zarr.open_group(path, mode="r")
    plain, accelerated = groups[False], groups[True]
    assert plain.attrs["collector"]["simulation"] == "env.step"
    assert accelerated.attrs["collector"]["simulation"] == "mujoco.rollout"
    for key in ("n_rows", "n_episodes", "keys", "spaces", "env"):
        assert plain.attrs[key] == accelerated.attrs[key], key
    stats, other = plain.attrs["stats"], accelerated.attrs["stats"]
    assert stats.keys() == other.keys()
    for key in stats:
        for name in ("min", "max", "q01", "q99"):  # of the rows themselves: exact
            assert stats[key][name] == other[key][name], (key, name)
        # running sums: their last bits depend on how the writer grouped its commits
        for name in ("mean", "std"):
            np.testing.assert_allclose(stats[key][name], other[key][name], rtol=1e-12)
    n_rows, n_episodes = plain.attrs["n_rows"], plain.attrs["n_episodes"]
    assert n_episodes == 7
    arrays = _arrays(plain)
    assert sorted(arrays) == sorted(_arrays(accelerated))
    assert "data/physics" in arrays and "meta/episode_ends" in arrays
    if env_id.startswith("wmrobot") and beta:  # some episodes end early, on success
        assert len(set(plain["meta/length"][:n_episodes])) > 1
    for name, array in arrays.items():
        n = n_rows if name.startswith("data/") else n_episodes
        a, b = array[:n], accelerated[name][:n]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), name  # bit for bit, NaN final actions included

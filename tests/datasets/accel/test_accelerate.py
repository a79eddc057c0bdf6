"""The acceleration layer on and off: the same collect() writes the same dataset."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import zarr

from wmrobot.datasets import EpisodeStore, collect
from wmrobot.datasets.accel.store import DirectStore
from wmrobot.datasets.policies import PolicySpec
from wmrobot.errors import DatasetError


def _arrays(group: zarr.Group, prefix: str = "") -> dict[str, zarr.Array]:
    """Every array under ``group`` (``data/obs/observation``, ``meta/seed``, ...) by path."""
    out = {}
    with warnings.catch_warnings():  # zarr names the writer lock file, which is no node
        warnings.filterwarnings("ignore", "Object at writer.lock is not recognized")
        members = list(group.members())
    for name, node in members:
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


def test_fast_path_refuses_what_it_cannot_simulate(tmp_path):
    for kwargs, reason in (
        ({"policy": "expert"}, "reacts to observations"),
        ({"pixels": 16}, "pixels"),
    ):
        with pytest.raises(DatasetError, match=reason):
            collect(
                str(tmp_path / "d.zarr"), "wmrobot/PointMaze-v0", episodes=1, fast=True, **kwargs
            )
        assert not (tmp_path / "d.zarr").exists()


def _collect_call(path, env_id="wmrobot/PointMaze-v0", **kwargs):
    """Source of a ``c.collect(...)`` call, for the script below."""
    listed = ", ".join(f"{k}={v!r}" for k, v in {"progress": False, **kwargs}.items())
    return f"c.collect({str(path)!r}, {env_id!r}, {listed})"


def _run_script(tmp_path, code):
    """Run ``code`` as a script of its own (``__main__``) in a fresh interpreter."""
    script = tmp_path / "script.py"
    script.write_text(code)
    command = [sys.executable, str(script)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_a_collector_with_a_writer_process_never_loads_zarr(tmp_path):
    # The writer creates the dataset too, so the stepping process keeps its core for stepping;
    # and the acceleration layer (on by default) writes a local dataset without zarr
    # (datasets/accel/chunks.py), so the writer never loads it either. A policy that reacts to
    # observations is stepped, so this process steps and the writer is a process.
    report = tmp_path / "writer.txt"
    code = (
        "import sys\n"
        "import wmrobot.datasets.collector as c\n"
        "c.WRITER_PROCESS_STEPS = 0\n"
        "finalize = c.EpisodeStore.finalize_stats\n"
        "def finalize_and_report(self, *args, **kwargs):\n"  # the writer's last step
        f"    open({str(report)!r}, 'w').write(f\"{{'zarr' in sys.modules}} {{c.os.getpid()}}\")\n"
        "    return finalize(self, *args, **kwargs)\n"
        "c.EpisodeStore.finalize_stats = finalize_and_report\n"
        "if __name__ == '__main__':\n"
        f"    r = {_collect_call(tmp_path / 'd.zarr', episodes=3, policy='expert')}\n"
        "    print(r.episodes, r.transitions, 'zarr' in sys.modules, c.os.getpid())\n"
    )
    result = _run_script(tmp_path, code)
    assert result.returncode == 0, result.stderr
    store = EpisodeStore.open(tmp_path / "d.zarr")
    n_episodes, n_transitions, loaded, pid = result.stdout.split()
    assert [n_episodes, n_transitions, loaded] == [
        str(store.n_episodes),
        str(store.n_transitions),
        "False",
    ]
    assert store.n_episodes == 3
    writer_loaded, writer_pid = report.read_text().split()
    assert writer_pid != pid  # a writer process, not this one's thread
    assert writer_loaded == "False"
    store.check_contents()  # and zarr reads what it wrote, statistics included

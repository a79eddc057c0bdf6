"""Minari conversion: datasets made by Minari's DataCollector come in row for row, ours go out
as datasets minari.load_dataset opens, and a round trip changes no row."""

from __future__ import annotations

import sys
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest

from wmrobot.cli import main
from wmrobot.datasets import EpisodeStore, collect
from wmrobot.datasets.episodes import episode_seed
from wmrobot.datasets.minari_io import export_minari, import_minari
from wmrobot.datasets.policies import RandomPolicy
from wmrobot.errors import DatasetError

# Minari warns about each optional metadata field that a test leaves out.
pytestmark = pytest.mark.filterwarnings("ignore:.*(is set to None|env_spec is None):UserWarning")

STEPS = 5  # actions per episode: enough for two short episodes per env
ROW_KEYS = ("action", "reward", "terminated", "truncated")


@pytest.fixture(autouse=True)
def minari_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every Minari dataset of a test lives under its tmp_path, never in ~/.minari."""
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two 2-episode datasets made by our collector: dict (PointMaze) and Box (HalfCheetah)
    observations."""
    folder = tmp_path_factory.mktemp("ours")
    paths = {"wmrobot/PointMaze-v0": folder / "maze.zarr", "HalfCheetah-v5": folder / "c.zarr"}
    for env_id, path in paths.items():
        collect(str(path), env_id, {"max_episode_steps": STEPS}, episodes=2, progress=False)
    return paths


def datacollector_dataset(env_id: str, dataset_id: str, episodes: int = 2, seed: int = 0):
    """A Minari dataset made by Minari's own DataCollector, on the episodes our collector runs
    with ``seed``: the same reset seeds and the same random actions."""
    # minari.DataCollector needs jax, which the dev extra installs (minari[create]).
    import wmrobot.envs  # noqa: F401  (registers our ids)

    # PointMaze reports is_success at reset and at every step, so its infos can be recorded.
    record_infos = env_id.startswith("wmrobot/")
    env = minari.DataCollector(gym.make(env_id, max_episode_steps=STEPS), record_infos=record_infos)
    policy = RandomPolicy(env.action_space)
    for index in range(episodes):
        s = episode_seed(seed, index)
        obs, _ = env.reset(seed=s)
        policy.reset(np.random.default_rng(s))
        done = False
        while not done:
            obs, _, terminated, truncated, _ = env.step(policy.act(obs))
            done = terminated or truncated
    dataset = env.create_dataset(
        dataset_id,
        algorithm_name="random",
        author="test",
        author_email="test@example.com",
        code_permalink="https://example.com/wmrobot",
        description="made by minari.DataCollector",
    )
    env.close()
    return dataset


def assert_same_rows(a: EpisodeStore, b: EpisodeStore, keys) -> None:
    assert a.n_rows == b.n_rows
    for key in keys:
        np.testing.assert_array_equal(a.array(key)[: a.n_rows], b.array(key)[: b.n_rows], key)
        assert a.array(key).dtype == b.array(key).dtype, key
    for key in ("episode_ends", "seed", "length", "success"):
        np.testing.assert_array_equal(a.meta(key), b.meta(key), key)


def obs_keys(store: EpisodeStore) -> list[str]:
    return [k for k in store.keys if k == "obs" or k.startswith("obs/")]


@pytest.mark.parametrize("env_id", ["wmrobot/PointMaze-v0", "HalfCheetah-v5"])
def test_import_of_a_datacollector_dataset_matches_our_collector(
    env_id, ours, tmp_path, read_plainly
):
    datacollector_dataset(env_id, "test/made-v0")
    store = import_minari("test/made-v0", tmp_path / "in.zarr")
    read_plainly(store.path)  # no capacity past the commit
    collected = EpisodeStore.open(ours[env_id])
    # The same episodes as our collector: same keys (dict obs as obs/<name>), rows, seeds.
    assert set(store.keys) == set(collected.keys) - {"physics", "goal"}
    assert_same_rows(store, collected, [*obs_keys(store), *ROW_KEYS])
    np.testing.assert_allclose(store.meta("return"), collected.meta("return"), rtol=1e-12)
    assert store.attrs["env"] == collected.attrs["env"]
    assert store.attrs["spaces"] == collected.attrs["spaces"]
    c = store.attrs["collector"]
    assert c["policy"] == "minari-import" and c["source"] == "test/made-v0"
    assert c["dataset_id"] == "test/made-v0" and c["algorithm_name"] == "random"
    assert c["author"] == ["test"] and "minari" in c["versions"]
    assert "q01" in store.attrs["stats"]["action"]
    store.check_contents()


def test_import_reads_success_from_infos_and_keeps_missing_seeds_unknown(tmp_path):
    from minari.data_collector.episode_buffer import EpisodeBuffer

    space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    rng = np.random.default_rng(0)

    def episode(seed, success):
        return EpisodeBuffer(
            seed=seed,
            observations=rng.normal(size=(4, 2)).astype(np.float32),
            actions=rng.uniform(-1, 1, size=(3, 2)).astype(np.float32),
            rewards=[1.0, 2.0, 3.0],
            terminations=[False, False, True],
            truncations=[False, False, False],
            infos={"is_success": np.array([False, False, success, False])},
        )

    minari.create_dataset_from_buffers(
        "test/buffers-v0",
        [episode(7, True), episode(None, False)],
        observation_space=space,
        action_space=space,
        algorithm_name="scripted",
    )
    store = import_minari("test/buffers-v0", tmp_path / "in.zarr")
    np.testing.assert_array_equal(store.meta("seed"), [7, -1])
    np.testing.assert_array_equal(store.meta("success"), [True, False])
    np.testing.assert_array_equal(store.meta("return"), [6.0, 6.0])
    np.testing.assert_array_equal(store.array("terminated")[:4], [False, False, True, False])
    assert store.attrs["env"]["id"] is None  # made without an env: no env spec to record
    store.check_contents()


@pytest.mark.parametrize("env_id", ["wmrobot/PointMaze-v0", "HalfCheetah-v5"])
def test_export_opens_with_minari_load_dataset(env_id, ours, minari_root):
    store = EpisodeStore.open(ours[env_id])
    export_minari(store.path, "wmrobot/export-v0", author="me")
    dataset = minari.load_dataset("wmrobot/export-v0")
    assert (minari_root / "wmrobot" / "export-v0" / "data").is_dir()
    assert dataset.total_episodes == store.n_episodes
    assert dataset.total_steps == store.n_transitions
    assert dataset.env_spec.id == env_id and dataset.env_spec.max_episode_steps == STEPS
    env = gym.make(dataset.env_spec)
    assert dataset.observation_space == env.observation_space
    assert dataset.action_space == env.action_space
    meta = dataset.storage.metadata
    assert meta["algorithm_name"] == "random (beta=0.0)" and meta["author"] == {"me"}
    assert meta["wmrobot"]["fingerprint"] == store.fingerprint()
    seeds = [m["seed"] for m in dataset.storage.get_episode_metadata(dataset.episode_indices)]
    assert seeds == store.meta("seed").tolist()
    for i, ep in enumerate(dataset.iterate_episodes()):
        rows = store.episode(i)
        for key in obs_keys(store):
            obs = ep.observations if key == "obs" else ep.observations[key.split("/", 1)[1]]
            np.testing.assert_array_equal(obs, rows[key])
        np.testing.assert_array_equal(ep.actions, rows["action"][:-1])
        np.testing.assert_array_equal(ep.rewards, rows["reward"][:-1])
        np.testing.assert_array_equal(ep.terminations, rows["terminated"][:-1])
        np.testing.assert_array_equal(ep.truncations, rows["truncated"][:-1])


@pytest.mark.parametrize("env_id", ["wmrobot/PointMaze-v0", "HalfCheetah-v5"])
def test_round_trip_changes_no_row(env_id, ours, tmp_path):
    store = EpisodeStore.open(ours[env_id])
    export_minari(store.path, "trip-v0")
    back = import_minari("trip-v0", tmp_path / "back.zarr")
    assert set(back.keys) == set(store.keys) - {"physics", "goal"}
    assert_same_rows(back, store, [*obs_keys(store), *ROW_KEYS])
    np.testing.assert_array_equal(back.meta("return"), store.meta("return"))
    assert back.attrs["env"] == store.attrs["env"]
    assert back.attrs["spaces"] == store.attrs["spaces"]
    assert back.attrs["collector"]["wmrobot"]["collector"] == store.attrs["collector"]


def test_import_from_a_dataset_folder(ours, minari_root, tmp_path):
    export_minari(ours["HalfCheetah-v5"], "folder-v0")
    for source in (minari_root / "folder-v0", minari_root / "folder-v0" / "data"):
        out = tmp_path / f"{source.name}.zarr"
        assert import_minari(str(source), out).n_episodes == 2


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("nope/missing-v0", "no Minari dataset 'nope/missing-v0'"),
        ("not a dataset id", "is not a Minari dataset id"),
    ],
)
def test_import_refuses_an_unknown_source(source, needle, tmp_path):
    with pytest.raises(DatasetError, match=needle):
        import_minari(source, tmp_path / "out.zarr")
    assert list(tmp_path.glob("out.zarr*")) == []


def test_import_refuses_a_folder_that_is_not_a_minari_dataset(ours, tmp_path):
    with pytest.raises(DatasetError, match="not a Minari dataset folder"):
        import_minari(str(ours["HalfCheetah-v5"]), tmp_path / "out.zarr")


def test_import_refuses_an_existing_out_and_leaves_it_alone(ours, tmp_path):
    export_minari(ours["HalfCheetah-v5"], "exists-v0")
    out = tmp_path / "out.zarr"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(DatasetError, match="already exists; convert into a new path"):
        import_minari("exists-v0", out)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_import_refuses_discrete_actions_and_leaves_nothing(tmp_path):
    from minari.data_collector.episode_buffer import EpisodeBuffer

    minari.create_dataset_from_buffers(
        "test/discrete-v0",
        [
            EpisodeBuffer(
                observations=np.zeros((2, 3)),
                actions=[1],
                rewards=[0.0],
                terminations=[True],
                truncations=[False],
            )
        ],
        observation_space=gym.spaces.Box(-1, 1, (3,)),
        action_space=gym.spaces.Discrete(2),
    )
    with pytest.raises(DatasetError, match="Box \\(continuous\\) actions only"):
        import_minari("test/discrete-v0", tmp_path / "out.zarr")
    assert list(tmp_path.glob("out.zarr*")) == []


def test_export_refuses_an_existing_id_and_a_bad_id(ours, minari_root):
    export_minari(ours["HalfCheetah-v5"], "taken-v0")
    before = sorted(p.relative_to(minari_root) for p in minari_root.rglob("*"))
    with pytest.raises(DatasetError, match="Minari dataset 'taken-v0' already exists"):
        export_minari(ours["wmrobot/PointMaze-v0"], "taken-v0")
    with pytest.raises(DatasetError, match="'no version' is not a Minari dataset id"):
        export_minari(ours["wmrobot/PointMaze-v0"], "no version")
    assert sorted(p.relative_to(minari_root) for p in minari_root.rglob("*")) == before


def test_export_into_a_given_root(ours, tmp_path):
    root = tmp_path / "elsewhere"
    dataset = export_minari(ours["HalfCheetah-v5"], "rooted-v0", root=root)
    assert Path(dataset.spec.data_path) == root / "rooted-v0" / "data"
    assert [p.name for p in root.iterdir()] == ["rooted-v0"]  # no build folder left behind


def test_missing_minari_is_one_line_with_the_install_hint(ours, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "minari", None)  # as if not installed
    with pytest.raises(DatasetError, match=r"pip install 'wmrobot\[minari\]'"):
        import_minari("any-v0", tmp_path / "out.zarr")


def test_cli_converts_both_ways_and_refuses_with_one_line(ours, tmp_path, capsys):
    path, back = str(ours["wmrobot/PointMaze-v0"]), str(tmp_path / "back.zarr")
    assert main(["data", "convert", path, "--to-minari", "cli/maze-v0", "--author", "me"]) == 0
    assert "into Minari dataset cli/maze-v0" in " ".join(capsys.readouterr().out.split())
    assert main(["data", "convert", "--from-minari", "cli/maze-v0", back]) == 0
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "2 episodes (10 steps) from Minari cli/maze-v0" in out
    for args, needle in [
        (["convert", path, "--to-minari", "cli/maze-v0"], "'cli/maze-v0' already exists"),
        (["convert", "--from-minari", "cli/maze-v0", back], "already exists"),
        (["convert", "--from-minari", "cli/none-v0", str(tmp_path / "x.zarr")], "no Minari"),
        (["convert", path, back], "expected --from-minari SOURCE OUT or PATH --to-minari ID"),
        (["convert", path, "--to-minari"], "--to-minari needs a value"),
        (["convert", path, "--to-minari", "a-v0", "--bogus", "1"], "unknown option '--bogus'"),
        (["convert", "--from-minari", "cli/maze-v0", back, "--author", "x"], "--to-minari"),
        (["replay", back], "no MuJoCo physics state to restore"),
    ]:
        assert main(["data", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert err.startswith(f"wmrobot data {args[0]}: error: ") and needle in err, err


def test_an_import_that_fails_after_creating_leaves_nothing(ours, tmp_path, monkeypatch):
    export_minari(ours["HalfCheetah-v5"], "fails-v0")

    def crash(self):  # as if stopped just before the import's last write
        raise KeyboardInterrupt

    monkeypatch.setattr(EpisodeStore, "finalize_stats", crash)
    with pytest.raises(KeyboardInterrupt):
        import_minari("fails-v0", tmp_path / "out.zarr")
    assert list(tmp_path.glob("out.zarr*")) == []


def test_export_keeps_the_recorded_spaces_when_the_env_cannot_be_made(ours, minari_root, tmp_path):
    import shutil

    path = tmp_path / "maze.zarr"
    shutil.copytree(ours["wmrobot/PointMaze-v0"], path)
    store = EpisodeStore.open(path, mode="a")
    store.update_attrs(env={**store.attrs["env"], "id": "gone/NotInstalled-v0"})
    exported = export_minari(path, "gone/maze-v0")
    env = gym.make("wmrobot/PointMaze-v0")
    assert exported.observation_space == env.observation_space  # bounds kept, not (-inf, inf)
    assert exported.action_space == env.action_space


@pytest.mark.parametrize("where", ["root", "root/under"])
def test_export_into_a_file_is_one_error_and_leaves_the_file(where, ours, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    root = tmp_path / where.replace("root", "notes.txt")
    with pytest.raises(DatasetError, match=f"cannot write into {root}: Not a directory"):
        export_minari(ours["HalfCheetah-v5"], "filed-v0", root=root)
    assert path.read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_an_export_that_fails_leaves_no_new_root(ours, tmp_path, monkeypatch):
    def fail(src, dst):  # the last step, moving the finished export under its id
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("wmrobot.datasets.minari_io.os.rename", fail)
    with pytest.raises(DatasetError, match="No space left on device"):
        export_minari(ours["HalfCheetah-v5"], "ns/cut-v0", root=tmp_path / "new" / "root")
    assert [p.name for p in tmp_path.iterdir()] == []

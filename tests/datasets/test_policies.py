"""Collection policies: random, scripted expert, saved SB3 models (loaded safely), mixtures."""

from __future__ import annotations

import base64
import json
import pickle
import zipfile

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO, SAC

from wmrobot.datasets import EpisodeStore, collect
from wmrobot.datasets.policies import PolicySpec, RandomPolicy, load_sb3, make_policy
from wmrobot.envs import eval_pairs
from wmrobot.errors import DatasetError, EnvError

MAZE = "wmrobot/PointMaze-v0"


""" + open('/tmp/moved_policy_tests.py').read() + """


def test_uniform_actions_continue_past_the_horizon_without_repeating():
    policy = RandomPolicy(gym.spaces.Box(-1, 1, shape=(2,)), beta=0.0, horizon=5)
    policy.reset(np.random.default_rng(0))
    actions = policy.actions(12)
    assert len(np.unique(actions, axis=0)) == 12


def test_uniform_actions_are_the_per_step_draws_of_the_reset_rng():
    # Drawing a block at reset must not change which actions a seed gives.
    low, high = np.array([-1.0, 0.0]), np.array([1.0, 2.0])
    expected = np.random.default_rng(3).uniform(low, high, size=(7, 2))
    space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32))
    policy = RandomPolicy(space, horizon=100)
    policy.reset(np.random.default_rng(3))
    np.testing.assert_array_equal(policy.actions(7), expected.astype(np.float32))


@pytest.mark.parametrize("layout", ["ring", "umaze"])
def test_pointmaze_expert_reaches_the_goal(layout):
    env = gym.make(MAZE, layout=layout)
    expert = make_policy(PolicySpec("expert"), env)
    reached = 0
    for pair in eval_pairs(env, 20, seed=1):
        obs, _ = env.reset(seed=0, options=pair)
        expert.reset(np.random.default_rng(0))
        for _ in range(100):
            obs, _, terminated, _, info = env.step(expert.act(obs))
            if terminated:
                break
        reached += info["is_success"]
    assert reached >= 19


def test_expert_dataset_succeeds_where_random_does_not(tmp_path):
    expert = collect(str(tmp_path / "e.zarr"), MAZE, policy="expert", episodes=6, progress=False)
    random = collect(str(tmp_path / "r.zarr"), MAZE, policy="random", episodes=6, progress=False)
    e, r = EpisodeStore.open(expert.path), EpisodeStore.open(random.path)
    assert e.meta("success").mean() >= 5 / 6 > r.meta("success").mean()
    assert e.attrs["collector"]["policy"] == "expert"
    assert e.attrs["collector"]["policy_params"] == {"epsilon": 0.0, "noise": 0.0}


def test_epsilon_mixture_takes_random_actions_at_that_rate():
    env = gym.make(MAZE)
    obs, _ = env.reset(seed=0)
    expert = make_policy(PolicySpec("expert"), env)
    mixture = make_policy(PolicySpec("expert", epsilon=0.3), env)
    mixture.reset(np.random.default_rng(0))
    differs = [not np.array_equal(mixture.act(obs), expert.act(obs)) for _ in range(2000)]
    assert 0.25 < np.mean(differs) < 0.35


def test_expert_for_a_task_without_one_is_refused(tmp_path):
    with pytest.raises(EnvError, match="no scripted expert"):
        collect(str(tmp_path / "d.zarr"), "HalfCheetah-v5", policy="expert", episodes=1)
    assert not (tmp_path / "d.zarr").exists()


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        (PolicySpec("greedy"), "unknown policy 'greedy'"),
        (PolicySpec(epsilon=1.5), "epsilon=1.5"),
        (PolicySpec("expert", noise=-0.1), "noise=-0.1"),
        (PolicySpec("sb3"), "policy.path"),
        (PolicySpec("sb3", path="/nonexistent/model.zip"), "is not a file"),
    ],
)
def test_bad_policy_is_refused_before_anything_is_written(tmp_path, spec, match):
    with pytest.raises(EnvError, match=match):
        collect(str(tmp_path / "d.zarr"), MAZE, policy=spec, episodes=1, progress=False)
    assert not (tmp_path / "d.zarr").exists()


@pytest.fixture(scope="module")
def maze_sac(tmp_path_factory) -> str:
    """An (untrained) SAC model for PointMaze saved the SB3 way."""
    path = str(tmp_path_factory.mktemp("sb3") / "sac_maze.zip")
    SAC("MultiInputPolicy", gym.make(MAZE), policy_kwargs={"net_arch": [16, 16]}, seed=0).save(path)
    return path


def test_sb3_policy_acts_as_the_saved_model(maze_sac):
    env = gym.make(MAZE)
    original = SAC.load(maze_sac, device="cpu")  # SB3's own load, for comparison
    safe = load_sb3(maze_sac, env)
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        np.testing.assert_array_equal(
            safe.predict(obs, deterministic=True)[0], original.predict(obs, deterministic=True)[0]
        )


def test_collect_with_a_saved_sb3_model_records_its_file(tmp_path, maze_sac):
    spec = PolicySpec("sb3", path=maze_sac, epsilon=0.1, beta=1.0)
    res = collect(str(tmp_path / "d.zarr"), MAZE, policy=spec, episodes=2, progress=False)
    params = EpisodeStore.open(res.path).attrs["collector"]["policy_params"]
    assert params["path"] == maze_sac and len(params["sha256"]) == 16
    assert params["epsilon"] == 0.1 and params["beta"] == 1.0
    # Resuming with another policy file is refused.
    other = str(tmp_path / "other.zip")
    SAC("MultiInputPolicy", gym.make(MAZE), seed=1).save(other)
    with pytest.raises(DatasetError, match="policy_params"):
        collect(
            res.path,
            MAZE,
            policy=PolicySpec("sb3", path=other, epsilon=0.1, beta=1.0),
            episodes=3,
            progress=False,
        )
    assert EpisodeStore.open(res.path).n_episodes == 2


def test_policy_file_for_another_env_is_refused(tmp_path):
    path = str(tmp_path / "ppo_cheetah.zip")
    PPO("MlpPolicy", gym.make("HalfCheetah-v5"), n_steps=64, batch_size=64).save(path)
    with pytest.raises(EnvError, match=r"trained for another env.*Box \(17,\)"):
        collect(str(tmp_path / "d.zarr"), MAZE, policy=PolicySpec("sb3", path=path), episodes=1)
    assert not (tmp_path / "d.zarr").exists()


def test_loading_a_policy_file_never_unpickles_it(tmp_path, maze_sac):
    """A pickled entry that would run code when unpickled is replaced, never executed."""
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    hostile = tmp_path / "hostile.zip"
    with zipfile.ZipFile(maze_sac) as src, zipfile.ZipFile(hostile, "w") as dst:
        for item in src.infolist():
            content = src.read(item.filename)
            if item.filename == "data":
                data = json.loads(content)
                for key in ("lr_schedule", "policy_class", "observation_space"):
                    data[key][":serialized:"] = base64.b64encode(pickle.dumps(Payload())).decode()
                content = json.dumps(data).encode()
            dst.writestr(item, content)
    load_sb3(str(hostile), gym.make(MAZE))
    assert not marker.exists()


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    bad = tmp_path / "notes.zip"
    bad.write_text("not a zip")
    with pytest.raises(EnvError, match="not a saved stable-baselines3 model"):
        load_sb3(str(bad), gym.make(MAZE))


def test_a_policy_file_with_hostile_weights_is_one_line_and_never_runs(
    tmp_path, maze_sac, hostile_pickle
):
    """SB3 reads the weights with a weights-only load: its refusal is our one line."""
    write, marker = hostile_pickle
    hostile = tmp_path / "hostile.zip"
    with zipfile.ZipFile(maze_sac) as src, zipfile.ZipFile(hostile, "w") as dst:
        for item in src.infolist():
            content = src.read(item.filename)
            if item.filename == "policy.pth":
                content = write(tmp_path / "policy.pth").read_bytes()
            dst.writestr(item, content)
    with pytest.raises(EnvError, match="holds objects a safe load refuses") as refused:
        load_sb3(str(hostile), gym.make(MAZE))
    assert "weights_only" not in str(refused.value) and "\n" not in str(refused.value)
    assert not marker.exists()


def test_epsilon_is_taken_by_every_policy(tmp_path, capsys):
    """A sweep over policies may share one policy.epsilon; for a random policy, a random action
    in place of a random one changes nothing (the same dataset)."""
    from wmrobot.cli import main

    for policy in ("random", "colored"):
        runs = [tmp_path / f"{policy}-{eps}.zarr" for eps in ("0", "0.3")]
        for out, eps in zip(runs, ("0", "0.3"), strict=True):
            args = [f"policy={policy}", f"policy.epsilon={eps}", "episodes=2", f"out={out}"]
            assert main(["collect", *args]) == 0, capsys.readouterr().err
        plain, mixed = (EpisodeStore.open(p) for p in runs)
        for key in ("policy", "policy_params"):  # a resume with either is the same policy
            assert plain.attrs["collector"][key] == mixed.attrs["collector"][key]
        np.testing.assert_array_equal(plain.array("action")[:], mixed.array("action")[:])

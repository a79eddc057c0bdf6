"""DreamVecEnv: imagined episodes as a stable-baselines3 VecEnv, and the agent it trains."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.vec_env import VecCheckNan, VecMonitor, VecNormalize

from wmrobot.agent import RandomAgent
from wmrobot.errors import ConfigError
from wmrobot.eval.rollout import evaluate
from wmrobot.model import ModelConfig, WorldModel
from wmrobot.rl.dream import DreamAgent, DreamVecEnv, dataset_latents, imagine

D = 6


def goal_model(predictor: str = "mlp", ensemble: int = 1) -> WorldModel:
    torch.manual_seed(0)
    cfg = ModelConfig(D, 16, 1, 3, 0.9, 0.0, 1.0, predictor=predictor, history=4,
                      ensemble=ensemble)  # fmt: skip
    return WorldModel(4, 2, cfg).eval()


def reward_model() -> WorldModel:
    torch.manual_seed(0)
    cfg = ModelConfig(D, 16, 1, 3, 0.9, 0.0, 1.0, task="reward", reward_scale=1.0)
    cfg.continuation = False
    return WorldModel(3, 1, cfg).eval()


def latents(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("predictor", ["mlp", "gru"])
def test_dream_steps_are_the_models_rollout(predictor):
    model = goal_model(predictor)
    env = DreamVecEnv(model, latents(50, 1), latents(50, 2), num_envs=4, horizon=10, seed=3)
    obs = env.reset()
    z0, goal = torch.as_tensor(obs[:, :D]), torch.as_tensor(obs[:, D:])
    actions = torch.rand(4, 5, 2, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        want = model.rollout(z0, actions)
    for t in range(5):
        obs, reward, done, _ = env.step(actions[:, t].numpy())
        assert not done.any()
        assert np.allclose(obs[:, :D], want[:, t].numpy(), atol=1e-6)
        assert np.allclose(obs[:, D:], goal.numpy())  # the goal stays for the episode
        cost = model.task_cost(want[:, t], goal).detach().numpy()
        assert np.allclose(reward, -cost, atol=1e-6)


def test_ended_episodes_restart_from_the_dataset_with_their_last_observation():
    model, starts, goals = goal_model(), latents(20, 1), latents(20, 2)
    env = DreamVecEnv(model, starts, goals, num_envs=3, horizon=2, seed=0)
    obs = env.reset()
    assert {tuple(z) for z in obs[:, :D].round(5)} <= {tuple(z) for z in starts.numpy().round(5)}
    env.step(np.zeros((3, 2), np.float32))
    last, _, done, infos = env.step(np.zeros((3, 2), np.float32))
    assert done.all() and all(info["TimeLimit.truncated"] for info in infos)
    for i, info in enumerate(infos):
        assert info["terminal_observation"].shape == (2 * D,)
        assert tuple(last[i, :D].round(5)) in {tuple(z) for z in starts.numpy().round(5)}
    # The same seed draws the same episodes.
    again = DreamVecEnv(model, starts, goals, num_envs=3, horizon=2, seed=0).reset()
    assert np.array_equal(again, obs)


def test_reached_goals_terminate_with_zero_reward():
    model, starts = goal_model(), latents(10, 1)
    env = DreamVecEnv(model, starts, starts, 8, 50, goal_reward="reached", tolerance=1e6)
    env.reset()
    _, reward, done, infos = env.step(np.zeros((8, 2), np.float32))
    assert done.all() and (reward == 0).all()
    assert not any(info["TimeLimit.truncated"] for info in infos)
    far = DreamVecEnv(model, starts, starts, 8, 50, goal_reward="reached", tolerance=1e-9)
    far.reset()
    _, reward, done, _ = far.step(np.zeros((8, 2), np.float32))
    assert not done.any() and (reward == -1).all()


@pytest.mark.parametrize("goal_reward", ["cost", "critic"])
def test_a_tolerance_ends_shaped_episodes_at_the_goal_and_keeps_their_reward(goal_reward):
    model, starts = goal_model(), latents(10, 1)
    model.critic = torch.nn.Identity()  # a stand-in value: only termination is checked here
    model.value = lambda z, goal_z: (z - goal_z).norm(dim=-1)
    shaped = DreamVecEnv(model, starts, starts, 8, 50, goal_reward=goal_reward)
    ended = DreamVecEnv(model, starts, starts, 8, 50, goal_reward=goal_reward, tolerance=1e6)
    shaped.reset(), ended.reset()
    action = np.zeros((8, 2), np.float32)
    _, want, done, _ = shaped.step(action)
    _, reward, reached, infos = ended.step(action)
    assert not done.any() and reached.all()
    assert not any(info["TimeLimit.truncated"] for info in infos)
    assert np.allclose(reward, want) and (reward < 0).all()


def test_a_reward_tasks_dream_pays_the_reward_head_and_ends_where_the_model_says():
    model = reward_model()
    env = DreamVecEnv(model, latents(30, 1), None, num_envs=5, horizon=7)
    obs = env.reset()
    assert obs.shape == (5, D)
    action = np.full((5, 1), 0.3, np.float32)
    with torch.no_grad():
        want = model.reward(torch.as_tensor(obs), torch.as_tensor(action)).numpy()
    _, reward, done, _ = env.step(action)
    assert np.allclose(reward, want, atol=1e-6) and not done.any()


@pytest.mark.parametrize("algo", [SAC, TD3, PPO])
def test_sb3_algorithms_and_wrappers_run_in_a_dream(algo):
    env = DreamVecEnv(goal_model(), latents(40, 1), latents(40, 2), num_envs=4, horizon=8)
    env = VecNormalize(VecCheckNan(VecMonitor(env)), norm_reward=False)
    extra = {"n_steps": 16, "batch_size": 32} if algo is PPO else {"learning_starts": 16}
    agent = algo("MlpPolicy", env, seed=0, **extra)
    agent.learn(128)
    assert len(env.venv.venv.episode_returns) >= 4  # VecMonitor saw whole episodes
    actions, _ = agent.predict(env.reset(), deterministic=True)
    assert actions.shape == (4, 2) and np.abs(actions).max() <= 1


def test_sac_learns_a_planted_reward_in_the_dream():
    """The dream of a system whose reward is exactly -(a - 0.5)^2: SAC's policy goes to 0.5."""
    model = reward_model()
    model.reward = lambda z, a: -((a - 0.5) ** 2).sum(-1)
    env = DreamVecEnv(model, latents(64, 1), None, num_envs=4, horizon=5, seed=0)
    agent = SAC("MlpPolicy", env, seed=0, learning_starts=100, gradient_steps=2)
    before, _ = agent.predict(env.reset(), deterministic=True)
    agent.learn(1500)
    after, _ = agent.predict(env.reset(), deterministic=True)
    assert np.abs(after - 0.5).max() < 0.15 < np.abs(before - 0.5).max()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"goals": None}, "needs goal latents"),
        ({"goal_reward": "bonus"}, "dream.goal_reward='bonus'"),
        ({"goal_reward": "reached"}, "needs dream.tolerance > 0"),
        ({"tolerance": -0.1}, "dream.tolerance=-0.1"),
        ({"num_envs": 0}, "dream.envs"),
        ({"horizon": 0}, "dream.horizon"),
        ({"penalty": -1.0}, "dream.penalty"),
    ],
)
def test_bad_dream_settings_are_refused_in_one_line(kwargs, match):
    settings = {"goals": latents(5, 2), **kwargs}
    with pytest.raises(ConfigError, match=match):
        DreamVecEnv(goal_model(), latents(5, 1), **settings)


def test_the_penalty_pays_the_ensembles_disagreement_and_the_record_keeps_it():
    model, starts, goals = goal_model(ensemble=3), latents(40, 1), latents(40, 2)
    plain = DreamVecEnv(model, starts, goals, num_envs=6, horizon=20, seed=5)
    penalised = DreamVecEnv(model, starts, goals, num_envs=6, horizon=20, seed=5, penalty=0.5)
    obs = plain.reset()
    assert np.array_equal(penalised.reset(), obs)
    action = np.random.default_rng(0).uniform(-1, 1, (6, 2)).astype(np.float32)
    with torch.no_grad():
        spread = model.disagreement(torch.as_tensor(obs[:, :D]), torch.as_tensor(action))
    assert (spread > 0).all()
    _, reward, _, _ = plain.step(action)
    _, paid, _, _ = penalised.step(action)
    assert np.allclose(paid, reward - 0.5 * spread.numpy(), atol=1e-6)
    assert penalised.disagreement == [pytest.approx(float(spread.sum()), rel=1e-5), 6]
    with pytest.raises(ConfigError, match="dream.penalty=0.5 .* one predictor"):
        DreamVecEnv(goal_model(), starts, goals, penalty=0.5)


def test_a_transformer_predictor_is_refused():
    with pytest.raises(ConfigError, match="predictor=transformer"):
        DreamVecEnv(goal_model("transformer"), latents(5, 1), latents(5, 2))


def test_dataset_latents_and_the_agent_in_the_real_env(tmp_path):
    from wmrobot.datasets import collect
    from wmrobot.datasets.store import EpisodeStore
    from wmrobot.envs import make_env
    from wmrobot.eval.rollout import evaluate
    from wmrobot.train.data import build_model

    env_id, kwargs = "wmrobot/PointMaze-v0", {"layout": "open"}
    collect(str(tmp_path / "d.zarr"), env_id, kwargs, episodes=3, seed=0, progress=False)
    store = EpisodeStore.open(tmp_path / "d.zarr")
    torch.manual_seed(0)
    model = build_model(store, ModelConfig(D, 16, 1, 3, 0.9, 0.0, 1.0)).eval()
    starts, goals = dataset_latents(model, store)
    ends = np.asarray(store.episode_ends)
    assert len(starts) == len(goals) == ends[-1] - len(ends)  # every row but episodes' last
    obs = torch.as_tensor(store.array("obs/observation")[:])
    achieved = store.array("obs/achieved_goal")[:]
    env = make_env(env_id, kwargs)
    goal_obs = torch.as_tensor(env.unwrapped.goal_observation(achieved), dtype=torch.float32)
    with torch.no_grad():
        assert torch.allclose(starts[0], model.encode(obs[:1])[0], atol=1e-6)
        assert torch.allclose(goals[0], model.encode(goal_obs[:1])[0], atol=1e-6)
    dream = DreamVecEnv(model, starts, goals, num_envs=2, horizon=4)
    policy = SAC("MlpPolicy", dream, seed=0)
    agent = DreamAgent(model, policy, env.unwrapped.goal_observation)
    records = evaluate(agent, env_id, kwargs, [{}, {}], budget=3)
    assert [r.steps for r in records] == [3, 3]
    env.close()


def test_wmrobot_dream_trains_saves_and_evaluates_an_agent(tmp_path, monkeypatch):
    import json

    from wmrobot.cli import main

    monkeypatch.chdir(tmp_path)
    data, ckpt, out = tmp_path / "d.zarr", tmp_path / "ck", tmp_path / "dream"
    assert main(["collect", "env.kwargs.layout=open", "episodes=3", f"out={data}"]) == 0
    train = ["train", f"dataset={data}", f"out={ckpt}", "model.train.steps=5"]
    assert main([*train, "model.train.critic.finetune=2"]) == 0
    easy = ["env.kwargs.layout=open", "env.eval.pairs=2", "env.eval.budget=4"]
    dream = ["dream", f"checkpoint={ckpt}", f"out={out}", "dream.steps=64", "dream.envs=4"]
    tiny = ["planner.backend=torch", "planner.samples=8", "planner.elites=2", "planner.horizon=3"]
    args = [*dream, *easy, "planner_seeds=[0]", *tiny]
    her = ["rl_seeds=[0]", "rl.learning_starts=8", "rl.batch_size=8"]
    assert main([*args, *her, "dream.goal_reward=critic", "seeds=[0,1]"]) == 0
    rows = {r["method"]: r for r in json.loads((out / "results.json").read_text())["results"]}
    assert set(rows) == {"random", "Mode-2 MPPI", "Dream SAC (SB3)", "SAC+HER (SB3)"}
    # The model-free row trains online on as many real steps as the dataset holds.
    assert rows["SAC+HER (SB3)"]["env_steps"] == rows["Dream SAC (SB3)"]["env_steps"]
    assert (out / "agents" / "sac_her_seed0.zip").is_file()
    assert len(rows["Dream SAC (SB3)"]["success"]) == 2  # one agent per seed
    assert rows["Dream SAC (SB3)"]["env_steps"] == rows["Mode-2 MPPI"]["env_steps"] > 0
    runs = json.loads((out / "dream.json").read_text())["runs"]
    assert [r["seed"] for r in runs] == [0, 1] and all(r["imagined_steps"] == 64 for r in runs)
    gap = runs[0]["reality_gap"]  # the same policy, real and imagined
    assert gap["metric"] == "final distance" and gap["real"] > 0 and gap["dream"] > 0
    # The saved agent loads without unpickling anything from the file, as a collection policy
    # loads SB3 models, and acts as the trained one.
    from wmrobot.datasets.policies import load_sb3

    model = WorldModel.load(ckpt)
    zeros = torch.zeros(3, model.latent_dim)
    spaces = DreamVecEnv(model, zeros, zeros)
    saved = load_sb3(str(out / "agents" / "sac-seed0.zip"), spaces)
    obs = np.random.default_rng(0).standard_normal((3, *saved.observation_space.shape))
    trained = SAC.load(out / "agents" / "sac-seed0.zip")
    act = lambda agent: agent.predict(obs, deterministic=True)[0]  # noqa: E731
    assert np.allclose(act(saved), act(trained))
    # `wmrobot plan` puts saved dream agents beside the planner, with the same results.
    agents = [str(out / "agents" / f"sac-seed{s}.zip") for s in (0, 1)]
    plan = ["plan", f"checkpoint={ckpt}", f"out={tmp_path / 'plan'}", *easy, "seeds=[0]", *tiny,
            f"dream_agents=[{','.join(agents)}]", "video=false", "baseline=false"]  # fmt: skip
    assert main(plan) == 0
    planned = json.loads((tmp_path / "plan" / "results.json").read_text())["results"]
    assert [r["method"] for r in planned] == ["Mode-2 MPPI", "Dream SAC (SB3)"]
    assert planned[1]["success"] == rows["Dream SAC (SB3)"]["success"]


class Constant:
    """A policy that always takes ``action``."""

    def __init__(self, action: list[float]) -> None:
        self.action = np.asarray(action, np.float32)

    def predict(self, obs, deterministic=True):
        return np.tile(self.action, (len(obs), 1)), None


def test_imagine_rolls_the_policy_from_the_real_first_observations():
    from wmrobot.agent import Observer
    from wmrobot.envs import make_env

    env_id, kwargs = "wmrobot/PointMaze-v0", {"layout": "open"}
    model = goal_model()
    pairs, steps = [{}, {}], [3, 5]
    got = imagine(model, Constant([0.5, -0.2]), env_id, kwargs, pairs, steps)
    env = make_env(env_id, kwargs)
    observer = Observer(model, env.unwrapped.goal_observation)
    for i, n in enumerate(steps):
        obs, _ = env.reset(seed=i)
        z, goal = observer({k: v[None] for k, v in obs.items()})
        actions = torch.tensor([[0.5, -0.2]]).repeat(n, 1)[None]
        with torch.no_grad():
            want = model.task_cost(model.rollout(z, actions)[:, -1], goal)
        assert got[i] == pytest.approx(float(want[0]), abs=1e-5)
    env.close()


class Line(gym.Env):
    """A point on a line: x' = clip(x + 0.2 a, -1, 1), reward -|x'|, 30 steps from x ~ U(-1, 1)."""

    observation_space = gym.spaces.Box(-1, 1, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1, 1, 1).astype(np.float32)
        return self.x.copy(), {}

    def step(self, action):
        self.x = np.clip(self.x + 0.2 * np.asarray(action, np.float32), -1, 1)
        return self.x.copy(), -float(abs(self.x[0])), False, False, {}


class LineDynamics(torch.nn.Module):
    """The predictor of the Line system, exactly."""

    def init_state(self, z0):
        return None

    def step(self, z, a, state):
        return (z + 0.2 * a).clamp(-1, 1), None


def test_an_agent_trained_in_the_dream_of_a_planted_system_solves_the_real_one():
    """A model that is exactly the real system (latent = x): what SAC learns in the dream, it
    does in the real env through the agent's encoder path."""
    if "wmrobot-test/Line-v0" not in gym.registry:
        gym.register("wmrobot-test/Line-v0", entry_point=Line, max_episode_steps=30)
    cfg = ModelConfig(1, 8, 1, 1, 0.9, 0.0, 1.0, task="reward", reward_scale=1.0)
    cfg.continuation = False
    model = WorldModel(1, 1, cfg, state_key="obs").eval()
    model.encode = lambda inputs: inputs["state"] if isinstance(inputs, dict) else inputs
    model.predictor = LineDynamics()
    model.reward = lambda z, a: -(z + 0.2 * a).clamp(-1, 1).abs().sum(-1)
    starts = torch.linspace(-1, 1, 101)[:, None]
    dream = DreamVecEnv(model, starts, None, num_envs=8, horizon=30, seed=0)
    policy = SAC("MlpPolicy", dream, seed=0, learning_starts=200, gradient_steps=2)
    policy.learn(3000)
    records = evaluate(DreamAgent(model, policy), "wmrobot-test/Line-v0", {}, [{}] * 8, 30)
    random = evaluate(RandomAgent(-np.ones(1), np.ones(1), 0), "wmrobot-test/Line-v0", {},
                      [{}] * 8, 30)  # fmt: skip
    # Optimal: walk to 0 at 0.2 per step, then stay (return about -1.3 from |x| = 1).
    assert np.mean([r.ret for r in records]) > -3 > np.mean([r.ret for r in random])


def test_a_compiled_dream_steps_as_the_eager_one():
    """dream.compile: the same transitions, rewards and ends (torch.compile of the step)."""
    model, starts, goals = goal_model(ensemble=2), latents(30, 1), latents(30, 2)
    eager = DreamVecEnv(model, starts, goals, num_envs=8, horizon=3, seed=1, penalty=0.5)
    fast = DreamVecEnv(model, starts, goals, num_envs=8, horizon=3, seed=1, penalty=0.5,
                       compile=True)  # fmt: skip
    assert fast.compiled and not eager.compiled
    assert np.array_equal(eager.reset(), fast.reset())
    rng = np.random.default_rng(0)
    for _ in range(5):  # past an episode's end: resets draw alike
        action = rng.uniform(-1, 1, (8, 2)).astype(np.float32)
        (o1, r1, d1, _), (o2, r2, d2, _) = eager.step(action), fast.step(action)
        assert np.allclose(o1, o2, atol=1e-5) and np.allclose(r1, r2, atol=1e-5)
        assert np.array_equal(d1, d2)

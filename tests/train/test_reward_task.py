"""Reward tasks: the heads learn the env's signal, the planners' objective ranks sequences by
predicted return, and the scalar encodings are exact where they must be."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from wmrobot.datasets import EpisodeStore
from wmrobot.errors import ConfigError, DatasetError
from wmrobot.model.reward import Scalar, symexp, symlog
from wmrobot.model.world_model import ModelConfig, WorldModel
from wmrobot.planners import PlannerConfig, make_planner
from wmrobot.planners.base import Objective
from wmrobot.train.data import build_model, discount, resolve_task
from wmrobot.train.reward import RewardBatches
from wmrobot.train.trainer import RewardUpdate, TrainConfig, follow_targets, optimizers

OBS, ACT = 3, 2
MOVE = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, -0.5]], np.float32)  # state change per action


def planted(obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """The planted reward: a smooth function of the state and the action."""
    return 2.0 * obs[..., 0] - obs[..., 1] ** 2 - 0.5 * (action**2).sum(-1)


def reward_store(path, rng, episodes=40, steps=25, terminate=False, edge=1.0) -> EpisodeStore:
    """A dataset of random walks whose reward is :func:`planted` of each row and action;
    with ``terminate``, an episode ends (terminated) on reaching obs[0] > ``edge``."""
    store = EpisodeStore.create(
        path,
        env={"id": "synthetic", "kwargs": {}},
        spaces={
            "observation": "Box(3)",
            "action": "Box(2)",
            "action_low": [-1.0, -1.0],
            "action_high": [1.0, 1.0],
        },  # fmt: skip
        row_shapes={
            "obs": ((OBS,), "float32"),
            "action": ((ACT,), "float32"),
            "reward": ((), "float32"),
            "terminated": ((), "bool"),
            "truncated": ((), "bool"),
        },
        collector={"policy": "test", "seed": 0},
    )
    eps = []
    for i in range(episodes):
        # Deterministic dynamics, as a simulator's: each action moves the state.
        action = rng.uniform(-1, 1, (steps + 1, ACT)).astype(np.float32)
        obs = np.zeros((steps + 1, OBS), np.float32)
        obs[0] = rng.normal(0, 0.3, OBS)
        for t in range(steps):
            obs[t + 1] = obs[t] + 0.3 * MOVE @ action[t]
        n = steps + 1
        if terminate:  # rows up to the first past the edge
            over = np.flatnonzero(obs[1:, 0] > edge)
            n = over[0] + 2 if len(over) else n
        obs, action = obs[:n], action[:n]
        action[-1] = np.nan
        reward = np.zeros(n, np.float32)
        reward[:-1] = planted(obs[:-1], action[:-1])
        term = np.zeros(n, bool)
        term[-2] = terminate and obs[-1, 0] > edge
        eps.append({"obs": obs, "action": action, "reward": reward, "terminated": term,
                    "truncated": np.zeros(n, bool), "seed": i,
                    "return": float(reward.sum()), "success": False})  # fmt: skip
    store.append(eps)
    return store


def tiny_cfg(**over) -> ModelConfig:
    base = dict(latent_dim=16, hidden=64, depth=2, goal_dim=4, ema=0.0, latent_weight=0.0,
                cost_weight=1.0, task="auto", head_hidden=64, bins=51)  # fmt: skip
    return ModelConfig(**{**base, **over})


def train_cfg(steps: int) -> TrainConfig:
    from wmrobot.train.losses import LossWeights

    return TrainConfig(steps=steps, batch_size=64, horizon=3, lr=1e-3, weight_decay=0.0,
                       warmup=0, grad_clip=20.0, loss=LossWeights(1, 1, 0.04, 1),
                       log_every=100, seed=0, tensorboard=False)  # fmt: skip


def fit_offline(store, model, steps):
    cfg = train_cfg(steps)
    gen = torch.Generator().manual_seed(0)
    update = RewardUpdate(model, cfg, optimizers(model, cfg), gen)
    batches = RewardBatches(store, model, cfg.horizon, cfg.batch_size)
    for _ in range(steps):
        update(batches.sample(gen), lambda *a: None)
        follow_targets(model, 0.0, cfg)
    return model.eval()


@pytest.mark.parametrize("kind", ["twohot", "regression"])
def test_reward_head_learns_a_planted_reward(tmp_path, kind):
    rng = np.random.default_rng(0)
    store = reward_store(tmp_path / "d.zarr", rng)
    torch.manual_seed(0)
    model = build_model(store, tiny_cfg(reward_loss=kind))
    assert model.task == "reward" and model.state_key == "obs"
    obs = torch.as_tensor(rng.normal(0, 1, (500, OBS)), dtype=torch.float32)
    act = torch.as_tensor(rng.uniform(-1, 1, (500, ACT)), dtype=torch.float32)
    truth = torch.as_tensor(planted(obs.numpy(), act.numpy()))

    def error() -> float:
        with torch.no_grad():
            return float((model.reward(model.encode(obs), act) - truth).pow(2).mean())

    before = error()
    fit_offline(store, model, 600)
    after = error()
    # Fresh states and actions, not the training rows: the head learnt the function (R² > 0.7).
    assert after < 0.3 * truth.var().item() and after < 0.3 * before, (before, after)


def test_anticollapse_term_follows_the_configured_weights(tmp_path):
    from wmrobot.model.collapse import covariance_loss, variance_loss
    from wmrobot.train.losses import LossWeights
    from wmrobot.train.reward import RewardLossConfig, reward_loss

    store = reward_store(tmp_path / "d.zarr", np.random.default_rng(0), episodes=4)
    torch.manual_seed(0)
    model = build_model(store, tiny_cfg())
    batch = RewardBatches(store, model, 3, 8).sample(torch.Generator().manual_seed(0))
    args = (model, batch["inputs"], batch["actions"], batch["rewards"], batch["terminated"])

    def total(
        variance: float, covariance: float, kind: str = "vicreg"
    ) -> tuple[float, torch.Tensor]:
        gen = torch.Generator().manual_seed(0)
        weights = LossWeights(1, variance, covariance, 1)
        loss, _, zs = reward_loss(*args, RewardLossConfig(), weights, kind, gen)
        return loss.item(), zs.reshape(-1, zs.shape[-1])

    bare, flat = total(0.0, 0.0, "none")
    var, cov = variance_loss(flat).item(), covariance_loss(flat).item()
    assert var > 0
    assert total(1.0, 0.04)[0] == pytest.approx(bare + var + 0.04 * cov, rel=1e-5)
    assert total(3.0, 0.5)[0] == pytest.approx(bare + 3 * var + 0.5 * cov, rel=1e-5)


def test_continuation_head_learns_where_episodes_end(tmp_path):
    rng = np.random.default_rng(1)
    store = reward_store(tmp_path / "d.zarr", rng, 300, 6, terminate=True, edge=0.3)
    term = store.load(["terminated"])["terminated"]
    assert term.sum() > 50
    torch.manual_seed(0)
    model = build_model(store, tiny_cfg())
    assert model.continuation is not None  # the data terminates: the head is made
    fit_offline(store, model, 600)
    obs = torch.as_tensor(store.load(["obs"])["obs"])
    cont = model.cont(model.encode(obs)).detach()
    final = torch.as_tensor(np.flatnonzero(term) + 1)  # rows the episodes ended on
    inside = obs[:, 0] < 0.0  # well clear of the edge
    assert cont[final].mean() < cont[inside].mean() - 0.05, (
        cont[final].mean(),
        cont[inside].mean(),
    )


def test_no_continuation_head_without_terminations(tmp_path):
    store = reward_store(tmp_path / "d.zarr", np.random.default_rng(2))
    model = build_model(store, tiny_cfg())
    assert model.continuation is None
    assert torch.equal(model.cont(torch.zeros(4, 16)), torch.ones(4))


class KnownModel:
    """A model whose dynamics and reward are known: z' = z + a (1-D), r(z, a) = -|z + a - 3|,
    V(z) = 0, terminating when z > 10 (continuation 0 there)."""

    task, gamma, latent_dim, has_value = "reward", 0.9, 1, True
    action_low, action_high = torch.tensor([-2.0]), torch.tensor([2.0])

    def rollout(self, z0, actions):
        return z0[:, None] + actions.cumsum(1)

    def reward(self, z, a):
        return -(z + a - 3).abs()[..., 0]

    def cont(self, z):
        return (z[..., 0] <= 10).float()

    def state_value(self, z):
        return torch.zeros(z.shape[:-1])

    def predict(self, z, a):
        return z + a

    def policy_action(self, z, generator=None):
        return torch.zeros_like(z)


def planner_cfg(**over) -> PlannerConfig:
    base = dict(horizon=3, samples=64, iterations=4, elites=8, init_std=1.0, min_std=0.05,
                max_std=2.0, terminal_weight=1.0, backend="torch", policy_samples=0)  # fmt: skip
    return PlannerConfig(**{**base, **over})


def test_reward_objective_picks_the_better_of_two_sequences():
    objective = Objective(KnownModel(), planner_cfg())
    z0 = torch.zeros(1, 1)
    towards = torch.tensor([[[1.5], [1.5], [0.0]]])  # reaches 3 and stays
    away = torch.tensor([[[-1.0], [-1.0], [-1.0]]])
    j = objective(z0, z0, torch.stack([towards[0], away[0]])[None])
    assert j[0, 0] < j[0, 1]
    # Exactly minus the discounted sum: rewards -1.5, 0, 0 and -4, -5, -6.
    torch.testing.assert_close(j[0], torch.tensor([1.5, 4 + 0.9 * 5 + 0.81 * 6]))


def test_reward_objective_stops_counting_after_termination():
    objective = Objective(KnownModel(), planner_cfg(horizon=2))
    # z jumps past 10 after the first step: the second step's reward must not count.
    jump = torch.tensor([[[[11.0], [-20.0]]]])
    j = objective(torch.zeros(1, 1), torch.zeros(1, 1), jump)
    torch.testing.assert_close(j[0, 0], torch.tensor(8.0))  # only |0 + 11 - 3|


@pytest.mark.parametrize("name", ["cem", "icem", "mppi", "grad"])
def test_every_planner_maximises_the_predicted_return(name):
    planner = make_planner(KnownModel(), planner_cfg(name=name, grad_steps=50), seed=0)
    plan = planner.plan(torch.zeros(1, 1), torch.zeros(1, 1))
    # The best first action takes z to 3 at once (within the bounds: 2), so z0 + a1 > 1.
    assert plan.shape == (1, 3, 1) and plan[0, 0, 0] > 1.0


def test_policy_samples_join_the_population():
    class Prior(KnownModel):
        def policy_action(self, z, generator=None):
            return torch.full_like(z, 1.5)  # 1.5, 1.5 reach 3 exactly

    cfg = planner_cfg(name="cem", samples=8, elites=2, init_std=0.01, iterations=1,
                      policy_samples=4)  # fmt: skip
    planner = make_planner(Prior(), cfg, seed=0)
    plan = planner.plan(torch.zeros(1, 1), torch.zeros(1, 1))
    torch.testing.assert_close(plan[0, :2, 0], torch.tensor([1.5, 1.5]), atol=0.2, rtol=0)


def test_two_hot_round_trips_and_regression_scales():
    s = Scalar("twohot", bins=101, limit=10.0)
    x = torch.tensor([-300.0, -1.0, 0.0, 0.3, 7.0, 1000.0])
    logits = torch.log(s.two_hot(x) + 1e-12)
    torch.testing.assert_close(s.value(logits), x, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(s.two_hot(x).sum(-1), torch.ones(6))
    torch.testing.assert_close(symexp(symlog(x)), x)
    r = Scalar("regression", scale=5.0)
    assert r.value(torch.tensor([[2.0]])).item() == 10.0
    assert r.loss(torch.tensor([[2.0]]), torch.tensor([10.0])).item() == 0.0


def test_lambda_returns_are_one_step_at_zero_and_monte_carlo_at_one():
    from wmrobot.train.reward import lambda_returns

    r = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    done = torch.tensor([[0, 0, 0], [0, 1, 0]], dtype=torch.bool)
    v = torch.tensor([[10.0, 20.0, 30.0], [5.0, 5.0, 5.0]])  # V of the next step's state
    g = 0.5
    one_step = r + g * (~done).float() * v
    torch.testing.assert_close(lambda_returns(r, done, v, g, 0.0), one_step)
    full = lambda_returns(r, done, v, g, 1.0)
    # every step's recorded rewards up to the window's end (or the episode's), then V
    torch.testing.assert_close(
        full[0],
        torch.tensor([1 + 0.5 * 2 + 0.25 * 3 + 0.125 * 30, 2 + 0.5 * 3 + 0.25 * 30, 3 + 0.5 * 30]),
    )
    torch.testing.assert_close(full[1, :2], torch.tensor([1.0 + 0.5 * 1.0, 1.0]))
    half = lambda_returns(r, done, v, g, 0.5)[0, 1]
    assert half.item() == pytest.approx(2 + 0.5 * (0.5 * 20 + 0.5 * (3 + 0.5 * 30)))


def test_bad_reward_settings_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="model.reward_loss='l1' is unknown"):
        tiny_cfg(reward_loss="l1")
    with pytest.raises(ConfigError, match="model.gamma=1.5"):
        tiny_cfg(gamma=1.5)
    from wmrobot.train.reward import RewardLossConfig

    with pytest.raises(ConfigError, match="model.train.reward.td_lambda=1.5"):
        RewardLossConfig(td_lambda=1.5)
    store = EpisodeStore.create(
        tmp_path / "n.zarr", env={"id": "synthetic", "kwargs": {}},
        spaces={"observation": "Box(3)", "action": "Box(2)"},
        row_shapes={"obs": ((3,), "float32"), "action": ((2,), "float32")},
        collector={"policy": "test", "seed": 0},
    )  # fmt: skip
    with pytest.raises(DatasetError, match="has no 'reward' column"):
        resolve_task(store, tiny_cfg())
    with pytest.raises(ConfigError, match="build the model for a dataset"):
        WorldModel(3, 2, tiny_cfg())


def test_mode_1_acts_with_the_policy_prior(tmp_path):
    from wmrobot.agent import ActorAgent

    store = reward_store(tmp_path / "d.zarr", np.random.default_rng(3))
    model = build_model(store, tiny_cfg()).eval()
    obs = np.random.default_rng(4).normal(0, 1, (5, OBS)).astype(np.float32)
    action, _ = ActorAgent(model, None).predict(obs)
    with torch.no_grad():
        want = model.policy_action(model.encode(torch.as_tensor(obs)))
    np.testing.assert_allclose(action, want.numpy(), rtol=1e-6)
    assert np.all(np.abs(action) <= 1.0)


@pytest.mark.parametrize(
    ("env_id", "gamma"),
    [("Reacher-v5", 0.95), ("HalfCheetah-v5", 0.995), ("Pendulum-v1", 0.975), ("nope", 0.99)],
)
def test_a_null_discount_follows_the_envs_episode_length(env_id, gamma):
    store = SimpleNamespace(attrs={"env": {"id": env_id}})  # 50, 1000, 200 steps, unknown
    assert discount(store) == pytest.approx(gamma)

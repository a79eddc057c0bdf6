"""Evaluation in the real env: Box observations as well as Dict ones."""

import numpy as np

from wmrobot.agent import RandomAgent
from wmrobot.eval.rollout import evaluate


def test_evaluate_runs_an_env_with_box_observations():
    def returns(seed):
        agent = RandomAgent(np.array([-3.0]), np.array([3.0]), seed=seed)
        records = evaluate(agent, "InvertedPendulum-v5", {}, [{}, {}, {}], 50, seeds=[7, 8, 9])
        assert [r.pair for r in records] == [0, 1, 2]
        # +1 per step upright, 0 on the step it falls (v5)
        assert all(1 <= r.steps <= 50 and r.ret in (r.steps, r.steps - 1) for r in records)
        return [r.ret for r in records]

    assert returns(0) == returns(0)  # fixed seeds: the same episodes
    assert min(returns(0)) < 50  # random actions let the pole fall


def test_random_agent_takes_one_box_observation_or_a_batch():
    agent = RandomAgent(np.array([-1.0, -1.0]), np.array([1.0, 1.0]), seed=0)
    one, _ = agent.predict(np.zeros(11, dtype=np.float32))
    many, _ = agent.predict(np.zeros((4, 11), dtype=np.float32))
    assert one.shape == (2,) and many.shape == (4, 2)

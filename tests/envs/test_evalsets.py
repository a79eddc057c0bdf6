"""The frozen evaluation sets are what their tasks' samplers draw, valid, and solvable."""

from __future__ import annotations

import pytest

from wmrobot.envs.evalsets import EVALSETS, draw_evalset, load_evalset, success_rate
from wmrobot.errors import EnvError

NAMES = sorted(EVALSETS)


@pytest.mark.parametrize("name", NAMES)
def test_the_frozen_file_is_what_the_sampler_draws(name):
    frozen = load_evalset(name)
    # A failure here means a task's sampling changed: keep the file (results were measured
    # on it) or, deliberately, rewrite it (`wmrobot envs evalsets --write`) and bump version.
    assert frozen == draw_evalset(name, frozen.version)
    assert len(frozen.pairs) == 50 and frozen.budget > 0


@pytest.mark.parametrize("name", NAMES)
def test_every_pair_is_a_valid_start_and_goal(name):
    evalset = load_evalset(name)
    env = evalset.make_env()
    for pair in evalset.pairs:
        obs, info = env.reset(options=pair)
        assert not info["is_success"]  # nothing is solved before the first step
    assert env.spec.max_episode_steps == evalset.budget
    env.close()


@pytest.mark.parametrize("name", NAMES)
def test_the_scripted_expert_solves_at_least_90_percent(name):
    expert, _ = success_rate(load_evalset(name), "expert")
    random, _ = success_rate(load_evalset(name), "random")
    assert expert >= 0.9
    assert random < expert


def test_an_unknown_set_is_refused_with_the_choices():
    with pytest.raises(EnvError, match="unknown evaluation set 'maze'.*pointmaze-umaze"):
        load_evalset("maze")

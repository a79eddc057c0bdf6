"""Every command's composed config is typed and range-checked before any work starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from wmrobot.cli_common import compose, config_dir
from wmrobot.config import SCHEMAS, CollectCommand, DemoCommand, validate
from wmrobot.errors import ConfigError

REQUIRED = {
    "collect": [],
    "train": ["dataset=d.zarr"],
    "plan": ["checkpoint=ckpt"],
    "demo": [],
    "distill": ["checkpoint=ckpt"],
    "eval_model": ["checkpoint=ckpt", "dataset=d.zarr"],
    "learn": [],
    "dream": ["checkpoint=ckpt"],
    "bench": [],
    "cell": ["cell=umaze-mppi-10000-s0", "out=b"],
}


def checked(command: str, *overrides: str):
    return validate(command, compose(command, [*REQUIRED[command], *overrides]))


@pytest.mark.parametrize("command", sorted(SCHEMAS))
def test_defaults_of_every_command_validate(command):
    typed = checked(command)
    assert isinstance(typed, SCHEMAS[command])


def test_defaults_are_typed_values():
    collect = checked("collect", "episodes=5")
    assert isinstance(collect, CollectCommand)
    assert collect.episodes == 5
    assert collect.env.id == "wmrobot/PointMaze-v0"
    assert collect.policy.beta == 0.0

    demo = checked("demo")
    assert isinstance(demo, DemoCommand)
    assert demo.policy.beta == 1.0  # demo collects with colored noise
    assert demo.model.train.seed == demo.seed
    assert demo.planner.elites <= demo.planner.samples


@pytest.mark.parametrize(
    "command, override, needle",
    [
        ("plan", "agent.mode=3", "agent.mode='3'"),
        ("train", "+model.actor=true", "wmrobot distill"),
        ("distill", "actor.future=2", "actor.future=2"),
        ("distill", "actor.states=0", "actor.states=0"),
    ],
)
def test_agent_and_actor_settings_are_checked(command, override, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        checked(command, override)


@pytest.mark.parametrize(
    ("command", "key", "bad", "want"),
    [
        ("collect", "workers", 0, ">= 1"),
        ("collect", "steps", 0, ">= 1"),
        ("collect", "env.eval.pairs", 0, ">= 1"),
        ("plan", "env.eval.max_distance", 0.0, "> 0"),
        ("plan", "threads", 0, ">= 1"),
        ("train", "model.hidden", 0, ">= 1"),
        ("train", "model.ema_end", 2.0, "in [0, 1]"),
        ("train", "model.train.lr", 0.0, "> 0"),
        ("train", "model.train.loss.cost", -1.0, ">= 0"),
        ("train", "model.train.critic.lr", 0.0, "> 0"),
        ("train", "model.train.critic.gamma", 2.0, "in (0, 1)"),
        ("train", "model.train.critic.future", 5.0, "in [0, 1]"),
        ("demo", "rl.batch_size", 0, ">= 1"),
        ("distill", "seed", -1, ">= 0"),
        ("eval_model", "threads", 0, ">= 1"),
    ],
)
def test_each_range_is_checked_by_its_dataclass_with_one_message(command, key, bad, want):
    with pytest.raises(ConfigError) as e:
        checked(command, f"{key}={bad}")
    assert str(e.value) == f"{key}={bad} is out of range: it must be {want}"


@pytest.mark.parametrize(
    ("command", "override", "named"),
    [
        ("collect", "episodes=-1", "episodes"),
        ("collect", "episodes=0", "episodes"),
        ("collect", "flush_every=0", "flush_every"),
        ("collect", "policy.beta=-0.5", "policy.beta"),
        ("collect", "policy.epsilon=1.5", "policy.epsilon"),
        ("collect", "policy.noise=-1", "policy.noise"),
        ("plan", "planner.elites=500", "planner.elites"),
        ("plan", "planner.temperature=0", "planner.temperature"),
        ("train", "model.ema=1.5", "model.ema"),
        ("train", "model.train.batch_size=1", "model.train.batch_size"),
        ("demo", "model.ema=1.5", "model.ema"),
        ("demo", "rl.gamma=2", "rl.gamma"),
        # values of the wrong type
        ("collect", "episodes=abc", "episodes"),
        ("train", "model.latent_dim=big", "model.latent_dim"),
    ],
)
def test_bad_values_raise_config_error_naming_the_key(command, override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        checked(command, override)


def test_elites_must_not_exceed_samples():
    with pytest.raises(ConfigError, match=r"planner\.elites=64 exceeds planner\.samples=32"):
        checked("plan", "planner.samples=32", "planner.elites=64")
    assert checked("plan", "planner.samples=32", "planner.elites=32").planner.elites == 32


@pytest.mark.parametrize(("command", "key"), [("train", "dataset"), ("plan", "checkpoint")])
def test_a_missing_required_key_is_named(command, key):
    with pytest.raises(ConfigError, match=f"{key} is required"):
        validate(command, compose(command, []))


def test_unknown_options_and_groups_are_config_errors():
    with pytest.raises(ConfigError, match="episodez"):
        compose("collect", ["episodez=5"])
    with pytest.raises(ConfigError, match="available: colored, expert, random, sb3"):
        compose("collect", ["policy=greedy"])


@pytest.mark.parametrize(
    "env", ["pointmaze_umaze", "pointmaze_medium", "tworoom", "reacher", "reacher_pose", "push"]
)
def test_env_configs_with_a_frozen_set_take_its_pairs_and_budget(env):
    from wmrobot.envs.evalsets import load_evalset
    from wmrobot.steps import evaluation_set as _evaluation_set

    typed = checked("plan", f"env={env}")
    frozen = load_evalset(typed.env.eval.file)
    assert _evaluation_set(typed.env) == frozen.pairs
    assert typed.env.eval.budget == frozen.budget


def test_a_frozen_set_of_another_env_is_refused():
    from wmrobot.steps import evaluation_set as _evaluation_set

    typed = checked("plan", "env=pointmaze", "env.eval.file=tworoom")
    with pytest.raises(ConfigError, match="is a set for wmrobot/TwoRoom-v0"):
        _evaluation_set(typed.env)


@pytest.mark.parametrize("env", sorted(p.stem for p in (Path(config_dir()) / "env").glob("*.yaml")))
@pytest.mark.parametrize("command", ["collect", "plan", "demo", "learn"])
def test_every_task_config_composes_for_every_command_that_takes_one(env, command):
    given = ["env.id=Hopper-v5"] if env == "gym" else []  # the generic config names none
    typed = checked(command, f"env={env}", *given)
    assert typed.env.id.startswith(("wmrobot/", "HalfCheetah", "InvertedPendulum", "Hopper"))


def test_the_generic_gym_config_asks_for_an_id():
    with pytest.raises(ConfigError, match="env.id is required"):
        checked("collect", "env=gym")


def test_a_task_may_set_its_planner_defaults_and_the_command_line_still_wins():
    assert checked("plan").planner.value_weight == 7.0
    assert checked("plan", "env=reacher").planner.value_weight == 0.0
    assert checked("demo", "env=reacher").planner.value_weight == 0.0
    assert checked("plan", "env=reacher", "planner=cem").planner.name == "cem"
    assert checked("plan", "env=reacher", "planner=cem").planner.value_weight == 0.0
    assert checked("plan", "env=reacher", "planner.value_weight=3").planner.value_weight == 3.0
    assert not hasattr(checked("collect", "env=reacher"), "planner")

"""Planner configs: the shipped YAML files build their planners; bad values fail in one line."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from toys import PointMass, planner_config

import wmrobot
from wmrobot.errors import ConfigError
from wmrobot.planners import PLANNER_NAMES, TORCH_PLANNERS, as_config, make_planner

CONFIGS = Path(wmrobot.__file__).parent.parent / "configs" / "planner"


@pytest.mark.parametrize("name", PLANNER_NAMES)
def test_each_shipped_config_builds_its_planner(name):
    values = OmegaConf.load(CONFIGS / f"{name}.yaml")
    cfg = as_config(values)
    assert cfg.name == name
    assert type(make_planner(PointMass(), values, seed=0)) is TORCH_PLANNERS[name]


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"name": "ilqr"}, "planner.name='ilqr'"),
        ({"backend": "jax"}, "planner.backend='jax'"),
        ({"horizon": 0}, "planner.horizon=0"),
        ({"elites": 65}, "planner.elites=65"),
        ({"temperature": -0.1}, "planner.temperature=-0.1"),
        ({"min_std": 3.0}, "planner.min_std=3.0"),
        ({"init_std": 0.0}, "planner.init_std=0.0"),
        ({"alpha": 1.0}, "planner.alpha=1.0"),
        ({"decay": 0.5}, "planner.decay=0.5"),
        ({"keep_elites": 1.5}, "planner.keep_elites=1.5"),
        ({"smooth_weight": -1.0}, "planner.smooth_weight=-1.0"),
        ({"replan_every": 7}, "planner.replan_every=7"),
        ({"lr": 0.0}, "planner.lr=0.0"),
        ({"horizon": 1, "terminal_weight": 0.0, "replan_every": 1}, "planner.terminal_weight=0"),
    ],
)
def test_bad_values_name_the_key_in_one_line(overrides, key):
    with pytest.raises(ConfigError, match="^" + re.escape(key)) as e:
        replace(planner_config("mppi"), **overrides)
    assert "\n" not in str(e.value)


def test_mappings_must_hold_known_and_required_keys():
    good = dict(vars(planner_config("cem")))
    assert as_config(good) == planner_config("cem")
    with pytest.raises(ConfigError, match=r"planner\.samplez is not a planner setting"):
        as_config({**good, "samplez": 3})
    del good["horizon"]
    with pytest.raises(ConfigError, match=r"planner\.horizon is required"):
        as_config(good)


def test_a_config_changed_after_construction_is_checked_again():
    cfg = planner_config("cem")
    cfg.elites = 1000
    with pytest.raises(ConfigError, match="elites"):
        make_planner(PointMass(), cfg)


@pytest.mark.parametrize("name", PLANNER_NAMES)
def test_the_plan_command_accepts_each_planner(name):
    from wmrobot.cli_common import compose
    from wmrobot.config import validate

    typed = validate("plan", compose("plan", ["checkpoint=ckpt", f"planner={name}"]))
    assert typed.planner.name == name
    with pytest.raises(ConfigError, match=r"^planner\.horizon=0"):
        validate(
            "plan", compose("plan", ["checkpoint=ckpt", f"planner={name}", "planner.horizon=0"])
        )

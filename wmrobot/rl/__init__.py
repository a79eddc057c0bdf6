"""Model-free RL baselines (stable-baselines3)."""

from wmrobot.rl.sac import ALGOS, RLConfig, is_goal_env, make_sac, run_seeds, train_and_evaluate
from wmrobot.rl.zoo import make_zoo_sac, zoo_settings

__all__ = [
    "ALGOS",
    "RLConfig",
    "is_goal_env",
    "make_sac",
    "make_zoo_sac",
    "run_seeds",
    "train_and_evaluate",
    "zoo_settings",
]

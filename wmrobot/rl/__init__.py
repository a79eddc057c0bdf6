"""Model-free RL baselines (stable-baselines3), and RL agents trained inside the world model."""

from wmrobot.rl.dream import DreamAgent, DreamConfig, DreamVecEnv, dataset_latents
from wmrobot.rl.sac import ALGOS, RLConfig, is_goal_env, make_sac, run_seeds, train_and_evaluate
from wmrobot.rl.zoo import make_zoo_sac, zoo_settings

__all__ = [
    "ALGOS",
    "DreamAgent",
    "DreamConfig",
    "DreamVecEnv",
    "dataset_latents",
    "RLConfig",
    "is_goal_env",
    "make_sac",
    "make_zoo_sac",
    "run_seeds",
    "train_and_evaluate",
    "zoo_settings",
]

"""Model-free RL baselines (stable-baselines3)."""

from wmrobot.rl.sac import ALGOS, RLConfig, is_goal_env, make_sac, run_seeds, train_and_evaluate

__all__ = ["ALGOS", "RLConfig", "is_goal_env", "make_sac", "run_seeds", "train_and_evaluate"]

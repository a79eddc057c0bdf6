"""Model-free RL baselines (stable-baselines3)."""

from wmrobot.rl.sac import RLConfig, run_seeds, train_and_evaluate

__all__ = ["RLConfig", "run_seeds", "train_and_evaluate"]

"""World-model modules: encoders, predictor, heads and anti-collapse terms."""

from wmrobot.model.world_model import ModelConfig, WorldModel

__all__ = ["ModelConfig", "WorldModel"]

"""Training: the JEPA loss, the trainer loop and checkpoints."""

from wmrobot.train.checkpoint import load_checkpoint, save_checkpoint
from wmrobot.train.losses import LossWeights
from wmrobot.train.trainer import TrainConfig, fit, train

__all__ = ["LossWeights", "TrainConfig", "fit", "load_checkpoint", "save_checkpoint", "train"]

"""Layers shared by the world model's modules: the Linear/LayerNorm/ReLU MLP."""

from __future__ import annotations

from torch import nn

# Under the square roots of the cost and the critic's value, so their gradients stay finite at
# zero distance; the model's export carries them to compiled consumers.
COST_EPS, VALUE_EPS = 1e-8, 1e-6


def mlp(inp: int, hidden: int, out: int, depth: int) -> nn.Sequential:
    """``depth`` hidden layers of width ``hidden``, LayerNorm, ReLU (cheap on CPU, where planners
    run it), then a Linear to ``out``."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(inp if i == 0 else hidden, hidden), nn.LayerNorm(hidden), nn.ReLU()]
    layers.append(nn.Linear(hidden if depth else inp, out))
    return nn.Sequential(*layers)

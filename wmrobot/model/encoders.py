"""Observation encoders: state (MLP), pixels (small CNN) and both (fusion), one call convention.

Every encoder is called as ``encoder(inputs)`` with a dict of tensors sharing leading dims
(..., e.g. (B,) or (B, T)) and returns latents (..., D). ``encoder.needs`` names the keys it reads:
``"state"`` (..., O) float, already normalised, and/or ``"pixels"`` uint8 frames, channels-last
as stored, (..., H, W, C), or (..., S, H, W, C) with ``frame_stack`` S > 1.
"""

from __future__ import annotations

import torch
from torch import nn

from wmrobot.errors import ConfigError
from wmrobot.model.layers import mlp

ENCODER_KINDS = ("mlp", "cnn", "fusion")
CONV_LAYERS = 4  # each halves the image side
MIN_IMAGE_SIZE = 2**CONV_LAYERS


def _read(inputs: dict[str, torch.Tensor], key: str, kind: str) -> torch.Tensor:
    if key not in inputs:
        raise ConfigError(
            f"encoder '{kind}' reads inputs['{key}'] but got keys {sorted(inputs)}; "
            f"pass '{key}' (a dataset recorded with it) or choose an encoder that does not need it"
        )
    return inputs[key]


class ConvTrunk(nn.Module):
    """Four stride-2 3x3 convolutions with ReLU, flattened: frames -> (..., ``out_dim``).

    Channels are ``width, width, 2 width, 2 width``, so a 64x64 frame leaves a 4x4x(2 width)
    map. uint8 frames are scaled to [-0.5, 0.5]; float frames (e.g. augmented) are taken to be
    in [0, 1] and centred the same way. Stacked frames are concatenated on channels.
    """

    def __init__(self, image_size: int, channels: int, frame_stack: int, width: int) -> None:
        super().__init__()
        for name, value, low in [
            ("image_size", image_size, MIN_IMAGE_SIZE),
            ("channels", channels, 1),
            ("frame_stack", frame_stack, 1),
            ("width", width, 1),
        ]:
            if int(value) != value or value < low:
                raise ConfigError(f"encoder {name}={value!r} must be an integer >= {low}")
        image_size, channels, frame_stack = int(image_size), int(channels), int(frame_stack)
        self.image_size, self.channels, self.frame_stack = image_size, channels, frame_stack
        widths = [channels * frame_stack, width, width, 2 * width, 2 * width]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
        self.convs = nn.Sequential(*layers)
        side = image_size
        for _ in range(CONV_LAYERS):
            side = (side - 1) // 2 + 1  # 3x3, stride 2, padding 1
        self.out_dim = widths[-1] * side * side

    def frame_shape(self) -> tuple[int, ...]:
        hwc = (self.image_size, self.image_size, self.channels)
        return hwc if self.frame_stack == 1 else (self.frame_stack, *hwc)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        shape = self.frame_shape()
        if tuple(pixels.shape[pixels.dim() - len(shape) :]) != shape:
            raise ConfigError(
                f"pixels of shape {tuple(pixels.shape)} do not end in {shape}; set the "
                "encoder's image size, channels and frame_stack to the dataset's"
            )
        lead = pixels.shape[: pixels.dim() - len(shape)]
        x = pixels.reshape(-1, *shape)
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        x = x - 0.5
        if self.frame_stack > 1:  # (N, S, H, W, C) -> (N, H, W, S C)
            x = x.permute(0, 2, 3, 1, 4).reshape(*x.shape[:1], *x.shape[2:4], -1)
        # (N, C, H, W) kept channels-last in memory, which CPU convolutions read faster than a
        # contiguous NCHW copy.
        x = x.permute(0, 3, 1, 2)
        return self.convs(x).flatten(1).reshape(*lead, self.out_dim)


class StateEncoder(nn.Module):
    """MLP over the normalised state: ``inputs["state"]`` (..., O) -> (..., D).

    ``net`` is the plain :func:`mlp` (LayerNorm + ReLU layers), exported layer by layer.
    """

    needs = ("state",)

    def __init__(self, obs_dim: int, latent_dim: int, hidden: int, depth: int) -> None:
        super().__init__()
        self.net = mlp(obs_dim, hidden, latent_dim, depth)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.net(_read(inputs, "state", "mlp"))


class PixelEncoder(nn.Module):
    """Small CNN for square frames: ``inputs["pixels"]`` uint8 (..., [S,] H, W, C) -> (..., D).

    :class:`ConvTrunk` then one linear layer. At 64x64x3, ``width`` w = 32: 5.0 M
    multiply-adds per frame in the convolutions (0.88 M, 2.36 M, 1.18 M, 0.59 M) plus 1024 D in
    the linear, and 65.6 k + 1025 D parameters; ``frame_stack`` 3 widens only the first layer
    (6.8 M multiply-adds, 67.3 k + 1025 D). Compute grows with image area and w^2.
    """

    needs = ("pixels",)

    def __init__(
        self,
        image_size: int = 64,
        channels: int = 3,
        frame_stack: int = 1,
        latent_dim: int = 16,
        width: int = 32,
    ) -> None:
        super().__init__()
        self.trunk = ConvTrunk(image_size, channels, frame_stack, width)
        self.head = nn.Linear(self.trunk.out_dim, latent_dim)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.trunk(_read(inputs, "pixels", "cnn")))


class FusionEncoder(nn.Module):
    """Pixels through :class:`ConvTrunk` and the state through an MLP, concatenated, then a
    one-hidden-layer MLP to D: ``inputs["state"]`` (..., O), ``inputs["pixels"]`` -> (..., D)."""

    needs = ("state", "pixels")

    def __init__(
        self,
        obs_dim: int,
        image_size: int,
        channels: int,
        frame_stack: int,
        latent_dim: int,
        hidden: int,
        depth: int,
        width: int,
    ) -> None:
        super().__init__()
        self.trunk = ConvTrunk(image_size, channels, frame_stack, width)
        self.state_net = mlp(obs_dim, hidden, hidden, depth)
        self.fuse = mlp(self.trunk.out_dim + hidden, hidden, latent_dim, 1)

    def forward(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        pixels = self.trunk(_read(inputs, "pixels", "fusion"))
        state = self.state_net(_read(inputs, "state", "fusion"))
        return self.fuse(torch.cat([pixels, state], dim=-1))


def make_encoder(
    kind: str,
    *,
    obs_dim: int | None,
    image_shape: tuple[int, int, int] | None,
    frame_stack: int,
    latent_dim: int,
    hidden: int,
    depth: int,
    width: int,
) -> nn.Module:
    """The encoder of ``kind`` ("mlp", "cnn" or "fusion"); ``image_shape`` is one frame's
    (H, W, C) with H == W; each kind needs ``obs_dim`` and/or ``image_shape`` set."""
    if kind not in ENCODER_KINDS:
        raise ConfigError(
            f"unknown encoder kind {kind!r}; choose one of {', '.join(ENCODER_KINDS)}"
        )
    if kind in ("mlp", "fusion") and obs_dim is None:
        raise ConfigError(f"encoder '{kind}' reads the state vector but obs_dim is None; pass it")
    if kind in ("cnn", "fusion"):
        if image_shape is None or len(image_shape) != 3 or image_shape[0] != image_shape[1]:
            raise ConfigError(
                f"encoder '{kind}' needs image_shape (H, W, C) with H == W, got {image_shape}; "
                "record square frames"
            )
        size, _, channels = image_shape
    if kind == "mlp":
        return StateEncoder(obs_dim, latent_dim, hidden, depth)
    if kind == "cnn":
        return PixelEncoder(size, channels, frame_stack, latent_dim, width)
    return FusionEncoder(obs_dim, size, channels, frame_stack, latent_dim, hidden, depth, width)

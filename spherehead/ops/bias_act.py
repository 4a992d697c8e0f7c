"""Bias + activation + gain + clamp, the elementwise tail of every StyleGAN2 layer.

Reference PyTorch path only. The order of operations is part of the contract
(released checkpoints were trained with it): add bias, apply the activation,
multiply by the gain, clamp to [-clamp, clamp].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Activation:
    """An activation function with its default shape parameter and output gain."""
    func: Callable[[torch.Tensor, float], torch.Tensor]
    default_alpha: float = 0.0
    default_gain: float = 1.0


ACTIVATIONS: dict[str, Activation] = {
    'linear': Activation(lambda x, a: x),
    'relu': Activation(lambda x, a: F.relu(x), default_gain=math.sqrt(2)),
    'lrelu': Activation(lambda x, a: F.leaky_relu(x, a), default_alpha=0.2, default_gain=math.sqrt(2)),
    'tanh': Activation(lambda x, a: torch.tanh(x)),
    'sigmoid': Activation(lambda x, a: torch.sigmoid(x)),
    'elu': Activation(lambda x, a: F.elu(x)),
    'selu': Activation(lambda x, a: F.selu(x)),
    'softplus': Activation(lambda x, a: F.softplus(x)),
    'swish': Activation(lambda x, a: torch.sigmoid(x) * x, default_gain=math.sqrt(2)),
}


def default_gain(act: str) -> float:
    """The gain that keeps unit variance through `act` (sqrt(2) for relu-like, else 1)."""
    return _lookup(act).default_gain


def _lookup(act: str) -> Activation:
    try:
        return ACTIVATIONS[act]
    except KeyError:
        raise ValueError(f'unknown activation {act!r}; choose one of {sorted(ACTIVATIONS)}') from None


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = 'linear',
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
    """Add a bias, apply an activation, scale and clamp.

    Args:
        x: activations of any shape, e.g. [batch, channels, H, W].
        b: bias [x.shape[dim]] or None.
        dim: axis of `x` that `b` runs along.
        act: name in ACTIVATIONS.
        alpha: shape parameter (lrelu slope); None = the activation's default.
        gain: output scale; None = the activation's default gain.
        clamp: clamp the result to [-clamp, clamp]; None = no clamping.
    Returns:
        tensor with the shape and dtype of `x`.
    """
    spec = _lookup(act)
    if clamp is not None and clamp < 0:
        raise ValueError(f'clamp must be >= 0, got {clamp}')
    alpha = float(spec.default_alpha if alpha is None else alpha)
    gain = float(spec.default_gain if gain is None else gain)
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f'bias of shape {tuple(b.shape)} does not match dim {dim} of {tuple(x.shape)}')
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape)
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-float(clamp), float(clamp))
    return x

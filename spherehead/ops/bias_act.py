"""Bias + activation + gain + clamp, the elementwise tail of every StyleGAN2 layer.

The order of operations is part of the contract (released checkpoints were trained with
it): add bias, apply the activation, multiply by the gain, clamp to [-clamp, clamp].

`bias_act_reference` is plain PyTorch (four or five elementwise ops, each with its own
backward). On CUDA, for the piecewise-linear activations the networks use (linear, relu,
lrelu) and a positive gain, `bias_act` runs bias_act_kernel.cu instead: one pass forward,
one pass backward computed from the output alone (the slope is a function of y), and a
second-order gradient that is one more such pass. SPHEREHEAD_NO_CUDA_KERNELS=1, another
device, another activation, or a failed build (one warning) use the reference.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from spherehead.ops.extension import LazyExtension


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


_extension = LazyExtension('spherehead_bias_act', Path(__file__).with_name('bias_act_kernel.cu'), 'bias_act')
_KERNEL_ACTS = {'linear': 0, 'relu': 1, 'lrelu': 2}
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = 'linear',
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None) -> torch.Tensor:
    """Add a bias, apply an activation, scale and clamp (arguments as in `bias_act_reference`);
    the CUDA kernel where it can run (module docstring)."""
    spec = _lookup(act)
    alpha = float(spec.default_alpha if alpha is None else alpha)
    gain = float(spec.default_gain if gain is None else gain)
    if (act in _KERNEL_ACTS and gain > 0 and x.dtype in _KERNEL_DTYPES and (b is None or b.dtype == x.dtype)
            and (clamp is None or clamp >= 0) and _extension.usable(x, *([] if b is None else [b]))):
        if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[dim]):
            raise ValueError(f'bias of shape {tuple(b.shape)} does not match dim {dim} of {tuple(x.shape)}')
        return _BiasAct.apply(x, b, dim % x.ndim, _KERNEL_ACTS[act], alpha, gain,
                              -1.0 if clamp is None else float(clamp), _extension.get())
    return bias_act_reference(x, b, dim, act, alpha, gain, clamp)


class _TorchOps:
    """The kernel's two passes in PyTorch (tests run the Functions below on CPU through it)."""

    @staticmethod
    def forward(x, b, inner, act, alpha, gain, clamp):
        if b.numel():
            c = b.shape[0]
            x = (x.reshape(-1, c, inner) + b.reshape(1, c, 1)).reshape(x.shape)
        if act == 1:
            x = F.relu(x)
        elif act == 2:
            x = F.leaky_relu(x, alpha)
        x = x * gain
        return x.clamp(-clamp, clamp) if clamp >= 0 else x

    @staticmethod
    def grad(dy, y, act, alpha, gain, clamp):
        k = torch.full_like(y, gain)
        if act == 1:
            k = torch.where(y > 0, k, torch.zeros_like(k))
        elif act == 2:
            k = torch.where(y > 0, k, k * alpha)
        if clamp >= 0:
            k = torch.where(y.abs() < clamp, k, torch.zeros_like(k))
        return dy * k


class _BiasAct(torch.autograd.Function):
    """y = clamp(act(x + b) * gain); saves y only."""

    @staticmethod
    def forward(ctx, x, b, dim, act, alpha, gain, clamp, ops):
        x = x.contiguous()
        inner = math.prod(x.shape[dim + 1:])
        y = ops.forward(x, b.contiguous() if b is not None else x.new_empty(0), inner, act, alpha, gain, clamp)
        ctx.save_for_backward(y)
        ctx.args = (dim, act, alpha, gain, clamp, ops)
        return y

    @staticmethod
    def backward(ctx, dy):
        (y,) = ctx.saved_tensors
        dim, act, alpha, gain, clamp, ops = ctx.args
        dx = _BiasActGrad.apply(dy.contiguous(), y, act, alpha, gain, clamp, ops)
        db = None
        if ctx.needs_input_grad[1]:
            db = dx.sum([d for d in range(dx.ndim) if d != dim])
        return dx, db, None, None, None, None, None, None


class _BiasActGrad(torch.autograd.Function):
    """dx = dy * slope(y): linear in dy, and piecewise constant in y (zero derivative)."""

    @staticmethod
    def forward(ctx, dy, y, act, alpha, gain, clamp, ops):
        ctx.save_for_backward(y)
        ctx.args = (act, alpha, gain, clamp, ops)
        return ops.grad(dy, y, act, alpha, gain, clamp)

    @staticmethod
    def backward(ctx, ddx):
        (y,) = ctx.saved_tensors
        return (_BiasActGrad.apply(ddx.contiguous(), y, *ctx.args), None, None, None, None, None, None)


def bias_act_reference(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = 'linear',
                       alpha: float | None = None, gain: float | None = None,
                       clamp: float | None = None) -> torch.Tensor:
    """Add a bias, apply an activation, scale and clamp (plain PyTorch ops).

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

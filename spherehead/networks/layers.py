"""StyleGAN2 primitive layers with equalised learning rate.

Weights are stored unscaled (initialised N(0, 1) / lr_multiplier) and scaled at run time:
weight_gain = lr_multiplier / sqrt(fan_in), bias_gain = lr_multiplier. Parameter and
buffer names and shapes equal EG3D's so that released checkpoints load by name.

Two cheaper formulations of the same maths, each with its reference and a switch:
- demodulation (SPHEREHEAD_NO_FAST_DEMOD=1 for the reference): the coefficients from
  styles^2 @ sum_k(weight^2)^T ([N, O]) instead of squaring and summing the per-sample
  kernels [N, O, I, kh, kw] (that product runs at the matmul precision in effect: TF32 where
  allowed, bf16 under autocast); the fused path scales the weight once by styles x dcoefs;
- dense layers (SPHEREHEAD_NO_FAST_FC=1): the gains go into addmm's alpha and beta instead of
  separate multiplications of weight and bias (fewer kernel launches).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from spherehead.ops.bias_act import bias_act, default_gain
from spherehead.ops.conv2d_resample import conv2d_resample
from spherehead.switches import switch_set
from spherehead.ops.upfirdn2d import setup_filter

DEFAULT_RESAMPLE_FILTER = (1, 3, 3, 1)
ENV_REFERENCE_DEMOD = 'SPHEREHEAD_NO_FAST_DEMOD'
ENV_REFERENCE_FC = 'SPHEREHEAD_NO_FAST_FC'


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale `x` to unit root-mean-square along `dim` ([N, C] -> [N, C])."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None = None,
                     up: int = 1, down: int = 1, padding: int = 0, resample_filter: torch.Tensor | None = None,
                     demodulate: bool = True, flip_weight: bool = True, fused_modconv: bool = True) -> torch.Tensor:
    """StyleGAN2 modulated convolution.

    Per sample n the kernel is weight[o, i] * styles[n, i], demodulated (divided by its
    L2 norm over (i, kh, kw), + 1e-8) when `demodulate`.

    Args:
        x: [N, I, H, W].
        weight: [O, I, kh, kw] (already scaled if the caller wants a gain).
        styles: [N, I].
        noise: added after demodulation, broadcastable to [N, O, H', W'] (or None).
        up, down, padding, resample_filter, flip_weight: as in `conv2d_resample`.
        fused_modconv: True = one grouped convolution with per-sample kernels; False = scale
            activations before and after a shared convolution (same result up to rounding).
    Returns:
        [N, O, H', W'].
    """
    batch = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if x.shape[1] != in_channels or tuple(styles.shape) != (batch, in_channels):
        raise ValueError(f'modulated_conv2d: x {tuple(x.shape)}, weight {tuple(weight.shape)}, '
                         f'styles {tuple(styles.shape)} do not agree')

    if x.dtype == torch.float16 and demodulate:
        # Keep fp16 in range; demodulation cancels these scales.
        weight = weight * (1 / math.sqrt(in_channels * kh * kw) / weight.norm(float('inf'), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float('inf'), dim=1, keepdim=True)

    w = dcoefs = None
    if demodulate and not switch_set(ENV_REFERENCE_DEMOD):
        # sum_{i,k} (weight[o,i,k] s[n,i])^2 = sum_i s[n,i]^2 sum_k weight[o,i,k]^2. In the dtype the
        # reference's product weight * styles promotes to (the matmul takes no mixed dtypes).
        dtype = torch.result_type(weight, styles)
        dcoefs = (styles.to(dtype).square() @ weight.to(dtype).square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()   # [N, O]
        if fused_modconv:
            scale = dcoefs.unsqueeze(2) * styles.unsqueeze(1)                              # [N, O, I]
            w = weight.unsqueeze(0) * scale.reshape(batch, out_channels, in_channels, 1, 1)
    else:
        if demodulate or fused_modconv:
            w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)   # [N, O, I, kh, kw]
        if demodulate:
            dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()        # [N, O]
            if fused_modconv:
                w = w * dcoefs.reshape(batch, -1, 1, 1, 1)

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                            flip_weight=flip_weight)
        if demodulate and noise is not None:
            return torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(batch, -1, 1, 1))
        if demodulate:
            return x * dcoefs.to(x.dtype).reshape(batch, -1, 1, 1)
        if noise is not None:
            return x + noise.to(x.dtype)
        return x

    # Fused: fold the batch into the channels and run one grouped convolution.
    x = x.reshape(1, -1, *x.shape[2:])                                  # [1, N*I, H, W]
    w = w.reshape(-1, in_channels, kh, kw)                              # [N*O, I, kh, kw]
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                        groups=batch, flip_weight=flip_weight)
    x = x.reshape(batch, -1, *x.shape[2:])                              # [N, O, H', W']
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


class FullyConnectedLayer(nn.Module):
    """Dense layer [N, in_features] -> [N, out_features] with equalised learning rate.

    Parameters: weight [out, in], bias [out] (absent when bias=False).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = 'linear',
                 lr_multiplier: float = 1.0, bias_init: float = 0.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 2 and not switch_set(ENV_REFERENCE_FC):
            w = self.weight.to(x.dtype).t()
            if self.bias is None:
                y = torch.mm(x, w) * self.weight_gain
            else:   # gain * (x @ W^T) + bias_gain * b in one GEMM
                y = torch.addmm(self.bias.to(x.dtype).unsqueeze(0), x, w, beta=self.bias_gain, alpha=self.weight_gain)
            return y if self.activation == 'linear' else bias_act(y, None, act=self.activation)
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == 'linear' and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f'in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}'


class Conv2dLayer(nn.Module):
    """Convolution [N, in, H, W] -> [N, out, H*up/down, W*up/down] with equalised learning rate.

    Parameters (buffers when trainable=False): weight [out, in, k, k], bias [out];
    buffer resample_filter [4, 4] (always registered).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = 'linear', up: int = 1, down: int = 1,
                 resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER, conv_clamp: float | None = None,
                 channels_last: bool = False, trainable: bool = True) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = default_gain(activation)

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias_value = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias_value) if bias_value is not None else None
        else:
            self.register_buffer('weight', weight)
            if bias_value is not None:
                self.register_buffer('bias', bias_value)
            else:
                self.bias = None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding, flip_weight=(self.up == 1))
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, out_channels={self.out_channels}, activation={self.activation}, '
                f'up={self.up}, down={self.down}')

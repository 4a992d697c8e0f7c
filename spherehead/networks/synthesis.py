"""StyleGAN2 synthesis network and the mapping + synthesis backbone (EG3D's `Generator`).

Module names follow EG3D (`b{res}.conv0`, `b{res}.conv1`, `b{res}.torgb`, `b4.const`, ...)
so that released checkpoints load by name. The backbone runs in fp32 (`num_fp16_res` is kept
only so that configurations read like EG3D's); blocks built with `use_fp16` (the
super-resolution's) can compute in float16 (see spherehead.networks.precision).
"""
from __future__ import annotations

import math
from typing import Any, Sequence, Union

import numpy as np
import torch
from torch import nn

from spherehead.networks.layers import (DEFAULT_RESAMPLE_FILTER, Conv2dLayer, FullyConnectedLayer,
                                        modulated_conv2d)
from spherehead.networks.mapping import MappingNetwork
from spherehead.ops.bias_act import bias_act, default_gain
from spherehead.ops.upfirdn2d import setup_filter, upsample2d

NOISE_MODES = ('random', 'const', 'none')
FusedModconv = Union[bool, str]   # True, False or 'inference_only' (fused in eval mode only)


def resolve_fused_modconv(fused_modconv: FusedModconv | None, default: FusedModconv, training: bool) -> bool:
    """The fused_modconv flag to use: the explicit value, else the default; 'inference_only' = not training."""
    value = default if fused_modconv is None else fused_modconv
    if value == 'inference_only':
        return not training
    return bool(value)


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution + noise + bias + activation.

    [N, in_channels, R/up, R/up], w [N, w_dim] -> [N, out_channels, R, R].
    Parameters: affine.{weight,bias}, weight [out, in, k, k], bias [out], noise_strength [];
    buffers: resample_filter [4, 4], noise_const [R, R] (a fixed noise image drawn at init).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, kernel_size: int = 3,
                 up: int = 1, use_noise: bool = True, activation: str = 'lrelu',
                 resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER, conv_clamp: float | None = None,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', setup_filter(list(resample_filter)))
        self.padding = kernel_size // 2
        self.act_gain = default_gain(activation)

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        if use_noise:
            self.register_buffer('noise_const', torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = 'random', fused_modconv: bool = True,
                gain: float = 1.0) -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f'noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}')
        in_res = self.resolution // self.up
        if x.shape[1:] != (self.in_channels, in_res, in_res):
            raise ValueError(f'expected [N, {self.in_channels}, {in_res}, {in_res}], got {tuple(x.shape)}')
        styles = self.affine(w)

        noise = None
        if self.use_noise and noise_mode == 'random':
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == 'const':
            noise = self.noise_const * self.noise_strength

        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                             fused_modconv=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, '
                f'resolution={self.resolution}, up={self.up}, activation={self.activation}')


class ToRGBLayer(nn.Module):
    """Modulated (not demodulated) convolution + bias: [N, in, H, W], w [N, w_dim] -> [N, out, H', W'].

    No padding is applied (as in EG3D): with kernel_size k the output shrinks by k - 1.
    Parameters: affine.{weight,bias}, weight [out, in, k, k], bias [out].
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None, channels_last: bool = False) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return f'in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}'


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network.

    (x [N, in, R/up, R/up] or None for the first block, img [N, img_channels, R/up, R/up] or None,
    ws [N, num_conv + num_torgb, w_dim]) -> (x [N, out, R, R], img [N, img_channels, R, R] or None).

    Modules: const [out, R, R] (first block, in_channels == 0), conv0 (upsamples by `up`),
    conv1, torgb (when last or architecture == 'skip'), skip (architecture == 'resnet');
    buffer resample_filter. With up=1 the block keeps its resolution (EG3D's
    `SynthesisBlockNoUp`, used by super-resolution). A `use_fp16` block computes x in float16
    when its forward is called with fp16=True on CUDA (EG3D's fp16 super-resolution blocks; the
    image stays float32).
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, architecture: str = 'skip',
                 resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER, conv_clamp: float | None = 256,
                 fused_modconv_default: FusedModconv = True, up: int = 2, use_fp16: bool = False,
                 **layer_kwargs: Any) -> None:
        if architecture not in ('orig', 'skip', 'resnet'):
            raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet', got {architecture!r}")
        if up not in (1, 2):
            raise ValueError(f'up must be 1 or 2, got {up}')
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.fused_modconv_default = fused_modconv_default
        self.up = up
        self.use_fp16 = use_fp16
        self.register_buffer('resample_filter', setup_filter(list(resample_filter)))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=up,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == 'skip':
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
            self.num_torgb += 1
        if in_channels != 0 and architecture == 'resnet':
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=up,
                                    resample_filter=resample_filter)

    @property
    def in_resolution(self) -> int:
        return self.resolution // self.up

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                fused_modconv: FusedModconv | None = None, noise_mode: str = 'random',
                update_emas: bool = False, fp16: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        del update_emas  # no running statistics in the synthesis blocks
        n_ws = self.num_conv + self.num_torgb
        if ws.ndim != 3 or ws.shape[1:] != (n_ws, self.w_dim):
            raise ValueError(f'ws must be [N, {n_ws}, {self.w_dim}], got {tuple(ws.shape)}')
        w_iter = iter(ws.unbind(dim=1))
        fused = resolve_fused_modconv(fused_modconv, self.fused_modconv_default, self.training)

        if self.in_channels == 0:
            x = self.const.to(torch.float32).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused)
        else:
            expected = (self.in_channels, self.in_resolution, self.in_resolution)
            if x is None or x.shape[1:] != expected:
                raise ValueError(f'x must be [N, {", ".join(map(str, expected))}], '
                                 f'got {None if x is None else tuple(x.shape)}')
            x = x.to(torch.float16 if fp16 and self.use_fp16 and x.device.type == 'cuda' else torch.float32)
            if self.architecture == 'resnet':
                y = self.skip(x, gain=np.sqrt(0.5))
                x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused)
                x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused, gain=np.sqrt(0.5))
                x = y + x
            else:
                x = self.conv0(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused)
                x = self.conv1(x, next(w_iter), noise_mode=noise_mode, fused_modconv=fused)

        if img is not None and self.up > 1:
            if img.shape[1:] != (self.img_channels, self.in_resolution, self.in_resolution):
                raise ValueError(f'img must be [N, {self.img_channels}, {self.in_resolution}, {self.in_resolution}], '
                                 f'got {tuple(img.shape)}')
            img = upsample2d(img, self.resample_filter, up=self.up)
        if self.is_last or self.architecture == 'skip':
            y = self.torgb(x, next(w_iter), fused_modconv=fused).to(torch.float32)
            img = img + y if img is not None else y
        return x, img

    def extra_repr(self) -> str:
        return f'resolution={self.resolution}, architecture={self.architecture}, up={self.up}'


class SynthesisNetwork(nn.Module):
    """StyleGAN2 synthesis: ws [N, num_ws, w_dim] -> image [N, img_channels, R, R].

    Blocks b4, b8, ..., b{R}; channels at resolution r = min(channel_base // r, channel_max).
    Block b{r} reads ws[:, i : i + num_conv + num_torgb] where i counts the convolutions of
    the previous blocks (the toRGB of one block shares its w with the next block's conv0).

    Args:
        w_dim, img_resolution (a power of two >= 4), img_channels.
        channel_base, channel_max: channel schedule.
        num_fp16_res: accepted for EG3D fidelity; computation is always fp32.
        conv_clamp: clamp conv outputs to +-conv_clamp (None = off).
        architecture: 'skip' (EG3D), 'orig' or 'resnet'.
        fused_modconv_default: True, False or 'inference_only'.
        **layer_kwargs: SynthesisLayer options (use_noise, activation, kernel_size, channels_last).
    """

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 4, conv_clamp: float | None = None,
                 architecture: str = 'skip', resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER,
                 fused_modconv_default: FusedModconv = True, **layer_kwargs: Any) -> None:
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f'img_resolution must be a power of two >= 4, got {img_resolution}')
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.num_fp16_res = num_fp16_res
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}

        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=is_last, architecture=architecture,
                                   resample_filter=resample_filter, conv_clamp=conv_clamp,
                                   fused_modconv_default=fused_modconv_default, **layer_kwargs)
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f'b{res}', block)

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f'b{res}') for res in self.block_resolutions]

    def forward(self, ws: torch.Tensor, noise_mode: str = 'random', update_emas: bool = False,
                fused_modconv: FusedModconv | None = None) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f'ws must be [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}')
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for block in self.blocks():
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, fused_modconv=fused_modconv, noise_mode=noise_mode,
                           update_emas=update_emas)
        return img

    def extra_repr(self) -> str:
        return (f'w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, '
                f'img_channels={self.img_channels}')


class StyleGAN2Backbone(nn.Module):
    """Mapping + synthesis (EG3D's StyleGAN2 `Generator`, used as the tri-plane backbone).

    (z [N, z_dim], c [N, c_dim]) -> [N, img_channels, R, R]. Modules: synthesis, mapping
    (mapping's num_ws = synthesis.num_ws).
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_resolution: int, img_channels: int,
                 mapping_kwargs: dict[str, Any] | None = None, **synthesis_kwargs: Any) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      **(mapping_kwargs or {}))

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, update_emas: bool = False,
                **synthesis_kwargs: Any) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)

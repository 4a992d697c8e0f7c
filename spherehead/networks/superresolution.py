"""EG3D's super-resolution nets: two StyleGAN2 synthesis blocks on the rendered feature image.

Kinds (EG3D class names in brackets), for an output side R:
- 'hybrid2x' (SuperresolutionHybrid2X), 'hybrid4x' (SuperresolutionHybrid4X): input R/2;
  block0 keeps R/2 (`SynthesisBlockNoUp`), block1 upsamples to R.
- 'hybrid8x' (SuperresolutionHybrid8X), 'hybrid8xdc' (SuperresolutionHybrid8XDC): input R/4;
  block0 upsamples to R/2, block1 to R.
EG3D's channel pairs are (128, 64), except (256, 128) for 'hybrid8xdc'.

State-dict names equal EG3D's: block0.*, block1.*, and resample_filter for every kind
except 'hybrid8xdc' (which has no such buffer in EG3D).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from spherehead.networks.synthesis import FusedModconv, SynthesisBlock
from spherehead.ops.upfirdn2d import setup_filter

if TYPE_CHECKING:
    from spherehead.config import GeneratorConfig

SR_KINDS = ('hybrid2x', 'hybrid4x', 'hybrid8x', 'hybrid8xdc')
EG3D_SR_CHANNELS = {'hybrid2x': (128, 64), 'hybrid4x': (128, 64), 'hybrid8x': (128, 64), 'hybrid8xdc': (256, 128)}


class SynthesisBlockNoUp(SynthesisBlock):
    """A SynthesisBlock that keeps its resolution: x [N, in, R, R], img [N, C, R, R] -> [N, out, R, R], img."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool, **kwargs: Any) -> None:
        super().__init__(in_channels, out_channels, w_dim=w_dim, resolution=resolution, img_channels=img_channels,
                         is_last=is_last, up=1, **kwargs)


class SuperResolution(nn.Module):
    """Feature image + raw RGB -> super-resolved RGB.

    forward(rgb [N, 3, h, w], x [N, channels, h, w], ws [N, num_ws, w_dim]) -> [N, 3, R, R].
    Inputs are resized to `input_resolution` (bilinear, antialiased when sr_antialias) when
    their side differs; both blocks use the last w of `ws`.

    Args:
        kind: one of SR_KINDS.
        channels: channels of the feature image.
        img_resolution: output side R.
        w_dim: size of w.
        sr_channels: output channels of block0 and block1.
        sr_antialias: antialiased bilinear resizing of the inputs.
        num_fp16_res: as EG3D's sr_num_fp16_res: > 0 makes both blocks float16-capable (they run
            in float16 while `mixed_precision` is True, on CUDA) and implies conv_clamp=256 when
            conv_clamp is None (EG3D clamps its fp16 SR blocks).
        conv_clamp: clamp of the block convolutions (None = see num_fp16_res).
        **block_kwargs: SynthesisBlock options (fused_modconv_default, architecture, use_noise, ...).
    """

    def __init__(self, kind: str, channels: int, img_resolution: int, w_dim: int,
                 sr_channels: Sequence[int] = (256, 128), sr_antialias: bool = True, num_fp16_res: int = 0,
                 conv_clamp: float | None = None, **block_kwargs: Any) -> None:
        if kind not in SR_KINDS:
            raise ValueError(f'kind must be one of {SR_KINDS}, got {kind!r}')
        factor = 2 if kind in ('hybrid2x', 'hybrid4x') else 4
        if img_resolution % factor:
            raise ValueError(f'img_resolution {img_resolution} is not divisible by {factor} ({kind})')
        super().__init__()
        c0, c1 = (int(c) for c in sr_channels)
        if conv_clamp is None and num_fp16_res > 0:
            conv_clamp = 256
        self.kind = kind
        self.channels = channels
        self.img_resolution = img_resolution
        self.w_dim = w_dim
        self.input_resolution = img_resolution // factor
        self.sr_antialias = sr_antialias
        self.mixed_precision = False   # set by the trainer (TrainingConfig.precision == 'mixed')
        common = dict(w_dim=w_dim, img_channels=3, conv_clamp=conv_clamp, use_fp16=num_fp16_res > 0, **block_kwargs)
        if factor == 2:
            self.block0 = SynthesisBlockNoUp(channels, c0, resolution=img_resolution // 2, is_last=False, **common)
        else:
            self.block0 = SynthesisBlock(channels, c0, resolution=img_resolution // 2, is_last=False, **common)
        self.block1 = SynthesisBlock(c0, c1, resolution=img_resolution, is_last=True, **common)
        if kind != 'hybrid8xdc':
            self.register_buffer('resample_filter', setup_filter([1, 3, 3, 1]))

    def forward(self, rgb: torch.Tensor, x: torch.Tensor, ws: torch.Tensor, noise_mode: str = 'none',
                fused_modconv: FusedModconv | None = None, update_emas: bool = False) -> torch.Tensor:
        ws = ws[:, -1:, :].repeat(1, 3, 1)
        if x.shape[-1] != self.input_resolution:
            size = (self.input_resolution, self.input_resolution)
            x = F.interpolate(x, size=size, mode='bilinear', align_corners=False, antialias=self.sr_antialias)
            rgb = F.interpolate(rgb, size=size, mode='bilinear', align_corners=False, antialias=self.sr_antialias)
        kwargs = dict(noise_mode=noise_mode, fused_modconv=fused_modconv, update_emas=update_emas,
                      fp16=self.mixed_precision)
        x, rgb = self.block0(x, rgb, ws, **kwargs)
        x, rgb = self.block1(x, rgb, ws, **kwargs)
        return rgb

    def extra_repr(self) -> str:
        return f'kind={self.kind}, input_resolution={self.input_resolution}, img_resolution={self.img_resolution}'


def make_superresolution(cfg: GeneratorConfig, fused_modconv_default: FusedModconv = 'inference_only',
                         sr_num_fp16_res: int | None = None) -> SuperResolution | None:
    """The super-resolution net of a GeneratorConfig (None when cfg.superresolution == 'none').

    EG3D trains with fused_modconv_default='inference_only' (fused in eval mode only).
    sr_num_fp16_res: EG3D's training option of that name (None = cfg.num_fp16_res). Its
    default in EG3D / PanoHead training is 4, which clamps the SR convolutions at 256
    when cfg.conv_clamp is None; pass 4 (or set conv_clamp) to reproduce such models exactly.
    """
    if cfg.superresolution == 'none':
        return None
    sr = SuperResolution(cfg.superresolution, channels=cfg.feature_channels, img_resolution=cfg.img_resolution,
                         w_dim=cfg.w_dim, sr_channels=tuple(cfg.sr_channels), sr_antialias=cfg.rendering.sr_antialias,
                         num_fp16_res=cfg.num_fp16_res if sr_num_fp16_res is None else sr_num_fp16_res,
                         conv_clamp=cfg.conv_clamp,
                         fused_modconv_default=fused_modconv_default)
    if sr.input_resolution != cfg.sr_input_resolution:
        raise ValueError(f'super-resolution input {sr.input_resolution} != config {cfg.sr_input_resolution}')
    return sr

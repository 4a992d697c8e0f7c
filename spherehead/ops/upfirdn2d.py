"""Upsample, pad, FIR-filter, downsample: the resampling op of StyleGAN2.

`upfirdn2d` performs, per channel and in this order (like scipy.signal.upfirdn):

1. upsample by inserting `up - 1` zeros after every pixel,
2. pad with zeros (negative padding crops),
3. convolve with the FIR filter (true convolution unless `flip_filter`), keeping only
   outputs whose footprint lies inside the padded image ("valid"),
4. downsample by keeping every `down`-th pixel.

Filters come from `setup_filter`: 2D [fh, fw], or 1D [taps] applied separably
(horizontal pass, then vertical). A filter is a float32 tensor that never needs grad.

`upfirdn2d` is an autograd Function whose backward is upfirdn2d again (flipped filter,
up and down swapped, padding chosen so that the sizes match), so a second-order gradient
(the discriminator's R1 penalty) is one more such call. Autograd's own double backward
of a depthwise convolution runs one convolution per channel (thousands of launches:
8.4 s for one paper-config R1 pass on an H100). On CUDA the forward is one kernel
(upfirdn2d_kernel.cu) that never materialises the upsampled or padded image; elsewhere,
with SPHEREHEAD_NO_CUDA_KERNELS=1, or when the build fails (one warning), it is
`upfirdn2d_reference`, the plain PyTorch composition (zero insertion, pad, depthwise
convolution, decimation), which tests also differentiate directly.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import torch
import torch.nn.functional as F

from spherehead.ops.extension import LazyExtension

Scaling = Union[int, Sequence[int]]   # f or (fx, fy)
Padding = Union[int, Sequence[int]]   # p, (px, py) or (x0, x1, y0, y1)


def parse_scaling(scaling: Scaling) -> tuple[int, int]:
    """(sx, sy) from an int or an (x, y) pair; both >= 1."""
    if isinstance(scaling, int):
        sx = sy = scaling
    else:
        sx, sy = (int(s) for s in scaling)
    if sx < 1 or sy < 1:
        raise ValueError(f'scaling factors must be >= 1, got {scaling}')
    return sx, sy


def parse_padding(padding: Padding) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1) from an int, an (x, y) pair or a 4-tuple."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        return px, px, py, py
    if len(padding) == 4:
        x0, x1, y0, y1 = padding
        return x0, x1, y0, y1
    raise ValueError(f'padding must have 1, 2 or 4 entries, got {padding}')


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(width, height) of a filter; a 1D filter of n taps is n x n; None is 1 x 1."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f'filter must be 1D or 2D, got shape {tuple(f.shape)}')
    return int(f.shape[-1]), int(f.shape[0])


def setup_filter(f, device: torch.device | str = 'cpu', normalize: bool = True, flip_filter: bool = False,
                 gain: float = 1.0, separable: bool | None = None) -> torch.Tensor:
    """Turn taps into a float32 FIR filter ready for `upfirdn2d`.

    Args:
        f: taps: 2D [fh, fw], 1D [n] (made 2D by an outer product unless separable),
           a scalar, or None (identity).
        normalize: divide by the sum so that a constant signal keeps its value.
        flip_filter: flip along every axis.
        gain: overall gain of the 2D filter (a separable filter gets sqrt(gain)).
        separable: keep a 1D filter 1D; None = only when it has 8 taps or more.
    Returns:
        float32 tensor [fh, fw] or [n].
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim > 2 or f.numel() == 0:
        raise ValueError(f'filter must be a non-empty scalar, 1D or 2D array, got shape {tuple(f.shape)}')
    if f.ndim == 0:
        f = f.reshape(1)
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError('a 2D filter cannot be made separable')
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


_extension = LazyExtension('spherehead_upfirdn2d', Path(__file__).with_name('upfirdn2d_kernel.cu'), 'upfirdn2d')
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_KERNEL_MAX_TAPS = 64   # the kernel's shared-memory tile holds the footprint of a filter up to this size
# The kernel has a compile-time variant for a 4x4 filter with up, down in {1, 2} (StyleGAN2's
# resampling and its gradients); tests set this False to compare it with the general kernel.
USE_TILED_KERNEL = True


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: Scaling = 1, down: Scaling = 1,
              padding: Padding = 0, flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad, filter, downsample by decimation (arguments and shapes as in
    `upfirdn2d_reference`); differentiable to any order, with the CUDA kernel where it can run."""
    x, f, up, down, pad = _check(x, f, up, down, padding)
    return _UpFirDn2d.apply(x, f, up, down, pad, bool(flip_filter), float(gain))


def _check(x, f, up, down, padding):
    """Validated (x, f, (upx, upy), (downx, downy), (x0, x1, y0, y1))."""
    if x.ndim != 4:
        raise ValueError(f'x must be [batch, channels, H, W], got shape {tuple(x.shape)}')
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if f.ndim not in (1, 2) or f.dtype != torch.float32 or f.requires_grad:
        raise ValueError('f must be a float32 1D or 2D filter that does not require grad')
    upx, upy = parse_scaling(up)
    downx, downy = parse_scaling(down)
    x0, x1, y0, y1 = parse_padding(padding)
    h, w = x.shape[2:]
    if w * upx + x0 + x1 < f.shape[-1] or h * upy + y0 + y1 < f.shape[0]:
        raise ValueError('the padded, upsampled image is smaller than the filter')
    return x, f, (upx, upy), (downx, downy), (x0, x1, y0, y1)


class _UpFirDn2d(torch.autograd.Function):
    """upfirdn2d with an explicit backward (itself an upfirdn2d), saving no activations."""

    @staticmethod
    def forward(ctx, x, f, up, down, pad, flip_filter, gain):
        ctx.save_for_backward(f)
        ctx.args = (tuple(x.shape), up, down, pad, flip_filter, gain)
        if x.dtype in _KERNEL_DTYPES and max(f.shape) <= _KERNEL_MAX_TAPS and _extension.usable(x, f):
            return _kernel_forward(x, f, up, down, pad, flip_filter, gain)
        return upfirdn2d_reference(x, f, up, down, pad, flip_filter, gain)

    @staticmethod
    def backward(ctx, dy):
        (f,) = ctx.saved_tensors
        (_, _, h, w), (upx, upy), (downx, downy), (x0, x1, y0, y1), flip_filter, gain = ctx.args
        fw, fh = filter_size(f)
        oh, ow = dy.shape[2:]
        # The adjoint: zero-insert by `down`, full correlation with f (pad by the filter size minus
        # the forward's padding), crop what the forward's tail padding and decimation dropped,
        # decimate by `up`.
        gpad = (fw - x0 - 1, w * upx - ow * downx + x0 - upx + 1,
                fh - y0 - 1, h * upy - oh * downy + y0 - upy + 1)
        dx = _UpFirDn2d.apply(dy, f, (downx, downy), (upx, upy), gpad, not flip_filter, gain)
        return dx, None, None, None, None, None, None


def _kernel_forward(x, f, up, down, pad, flip_filter, gain):
    """The CUDA kernel: a 2D filter in one pass, a 1D filter as a horizontal then a vertical pass."""
    ext = _extension.get()
    n, c, h, w = x.shape
    f = f * (gain ** (f.ndim / 2))
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    (upx, upy), (downx, downy), (x0, x1, y0, y1) = up, down, pad
    xs = x.reshape(n * c, h, w).contiguous()
    if f.ndim == 2:
        y = ext.forward(xs, f.contiguous(), upx, upy, downx, downy, x0, x1, y0, y1, USE_TILED_KERNEL)
    else:
        y = ext.forward(xs, f[None].contiguous(), upx, 1, downx, 1, x0, x1, 0, 0, False)
        y = ext.forward(y, f[:, None].contiguous(), 1, upy, 1, downy, 0, 0, y0, y1, False)
    return y.reshape(n, c, *y.shape[1:])


def upfirdn2d_reference(x: torch.Tensor, f: torch.Tensor | None, up: Scaling = 1, down: Scaling = 1,
                        padding: Padding = 0, flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Upsample by zero insertion, pad, filter, downsample by decimation (plain PyTorch ops).

    Args:
        x: [batch, channels, H, W].
        f: filter from `setup_filter` ([fh, fw] or separable [n]); None = identity.
        up, down: integer factors, or (x, y) pairs.
        padding: zeros added to the upsampled image (negative crops): p, (px, py) or (x0, x1, y0, y1).
        flip_filter: False = convolution, True = correlation.
        gain: overall signal gain.
    Returns:
        [batch, channels, (H*up_y + y0 + y1 - fh) // down_y + 1, (W*up_x + x0 + x1 - fw) // down_x + 1].
    """
    x, f, (upx, upy), (downx, downy), (x0, x1, y0, y1) = _check(x, f, up, down, padding)
    n, c, h, w = x.shape

    # 1. Zero insertion: every pixel becomes the top-left corner of an up_y x up_x cell.
    x = x.reshape(n, c, h, 1, w, 1)
    x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
    x = x.reshape(n, c, h * upy, w * upx)

    # 2. Pad with zeros where positive, crop where negative.
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0):x.shape[2] - max(-y1, 0), max(-x0, 0):x.shape[3] - max(-x1, 0)]

    # 3. Depthwise filtering; conv2d correlates, so flipping the taps gives a convolution.
    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].repeat(c, 1, 1, 1), groups=c)
    else:
        taps = f[None, None].repeat(c, 1, 1)   # [c, 1, n]
        x = F.conv2d(x, taps.unsqueeze(2), groups=c)   # along W
        x = F.conv2d(x, taps.unsqueeze(3), groups=c)   # along H

    # 4. Decimation.
    return x[:, :, ::downy, ::downx]


def filter2d(x: torch.Tensor, f: torch.Tensor | None, padding: Padding = 0, flip_filter: bool = False,
             gain: float = 1.0) -> torch.Tensor:
    """Filter keeping the size: [batch, channels, H, W] -> same (plus `padding`, relative to the output)."""
    x0, x1, y0, y1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [x0 + fw // 2, x1 + (fw - 1) // 2, y0 + fh // 2, y1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain)


def upsample2d(x: torch.Tensor, f: torch.Tensor | None, up: Scaling = 2, padding: Padding = 0,
               flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Filtered upsampling: [batch, channels, H, W] -> [batch, channels, H*up, W*up].

    The gain is multiplied by up_x * up_y to make up for the inserted zeros; `padding`
    is relative to the output.
    """
    upx, upy = parse_scaling(up)
    x0, x1, y0, y1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [x0 + (fw + upx - 1) // 2, x1 + (fw - upx) // 2, y0 + (fh + upy - 1) // 2, y1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy)


def downsample2d(x: torch.Tensor, f: torch.Tensor | None, down: Scaling = 2, padding: Padding = 0,
                 flip_filter: bool = False, gain: float = 1.0) -> torch.Tensor:
    """Filtered downsampling: [batch, channels, H, W] -> [batch, channels, H/down, W/down].

    `padding` is relative to the input.
    """
    downx, downy = parse_scaling(down)
    x0, x1, y0, y1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [x0 + (fw - downx + 1) // 2, x1 + (fw - downx) // 2, y0 + (fh - downy + 1) // 2, y1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain)

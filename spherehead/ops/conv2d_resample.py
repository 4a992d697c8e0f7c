"""2D convolution fused with FIR up/downsampling (reference PyTorch path).

Mathematically: upsample (zero insertion) -> pad -> filter -> convolve -> filter ->
downsample, with all padding applied once up front. Each case is executed the way
StyleGAN2 executes it (filter-then-conv, transposed conv for upsampling, strided conv
for downsampling) so that results match released models to the last bit in fp32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from spherehead.ops import conv_autograd
from spherehead.ops.upfirdn2d import Padding, filter_size, parse_padding, upfirdn2d


def _conv(x: torch.Tensor, w: torch.Tensor, stride: int = 1, padding: int | list[int] = 0, groups: int = 1,
          transpose: bool = False, flip_weight: bool = True) -> torch.Tensor:
    """conv2d (correlation) or conv_transpose2d; flip_weight=False flips the kernel (true convolution).

    While gradients are recorded it runs through `conv_autograd` (cheap second-order gradients;
    SPHEREHEAD_NO_CONV_AUTOGRAD=1 keeps torch's own convolution autograd, the reference)."""
    if not flip_weight and (w.shape[2] > 1 or w.shape[3] > 1):
        w = w.flip([2, 3])
    if conv_autograd.use_conv_autograd(x, w):
        if transpose:
            return conv_autograd.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
        return conv_autograd.conv2d(x, w, stride=stride, padding=padding, groups=groups)
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None = None, up: int = 1, down: int = 1,
                    padding: Padding = 0, groups: int = 1, flip_weight: bool = True,
                    flip_filter: bool = False) -> torch.Tensor:
    """Convolution with optional up/downsampling.

    Args:
        x: [batch, in_channels, H, W].
        w: [out_channels, in_channels // groups, kh, kw], same dtype as x.
        f: resampling filter from `setup_filter` (None = identity).
        up, down: integer factors (>= 1).
        padding: relative to the upsampled image: p, (px, py) or (x0, x1, y0, y1).
        groups: grouped convolution.
        flip_weight: True = correlation (like torch conv2d), False = convolution.
        flip_filter: True = correlate with f, False = convolve.
    Returns:
        [batch, out_channels, H', W']; with 'same' padding (k // 2), H' = H * up / down.
    """
    if x.ndim != 4 or w.ndim != 4 or w.dtype != x.dtype:
        raise ValueError('x and w must be 4D tensors of the same dtype')
    if f is not None and (f.ndim not in (1, 2) or f.dtype != torch.float32):
        raise ValueError('f must be a float32 1D or 2D filter')
    if not (isinstance(up, int) and up >= 1 and isinstance(down, int) and down >= 1 and groups >= 1):
        raise ValueError(f'bad up={up}, down={down}, groups={groups}')
    out_channels, in_per_group, kh, kw = (int(s) for s in w.shape)
    fw, fh = filter_size(f)
    px0, px1, py0, py1 = parse_padding(padding)

    # The filter's own support adds to the requested padding.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2
    pad = [px0, px1, py0, py1]

    if kw == 1 and kh == 1 and down > 1 and up == 1:
        # 1x1 with downsampling: shrink first, then the cheap conv.
        x = upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter)
        return _conv(x, w, groups=groups, flip_weight=flip_weight)

    if kw == 1 and kh == 1 and up > 1 and down == 1:
        # 1x1 with upsampling: the cheap conv first, then grow.
        x = _conv(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d(x, f, up=up, padding=pad, gain=up ** 2, flip_filter=flip_filter)

    if down > 1 and up == 1:
        # Downsampling: filter, then a strided convolution.
        x = upfirdn2d(x, f, padding=pad, flip_filter=flip_filter)
        return _conv(x, w, stride=down, groups=groups, flip_weight=flip_weight)

    if up > 1:
        # Upsampling: a strided transposed convolution, then filter (and optionally downsample).
        if groups == 1:
            w = w.transpose(0, 1)
        else:
            w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
            w = w.reshape(groups * in_per_group, out_channels // groups, kh, kw)
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        x = _conv(x, w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True, flip_weight=not flip_weight)
        x = upfirdn2d(x, f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], gain=up ** 2,
                      flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d(x, f, down=down, flip_filter=flip_filter)
        return x

    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        # Plain convolution with symmetric padding.
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    # General case (asymmetric or negative padding without resampling).
    x = upfirdn2d(x, None, padding=pad, flip_filter=flip_filter)
    x = _conv(x, w, groups=groups, flip_weight=flip_weight)
    return x

"""2D convolutions whose gradients are again such convolutions (cheap second-order gradients for R1).

Why: torch's own double backward of a convolution (`_convolution_double_backward`) computes the
weight-gradient term of the second-order pass as a *forward* convolution of the transposed
second-order input gradient [C_in, N, H, W] with the transposed output gradient [C_out, N, H', W']
used as a kernel as large as the image. cuDNN runs that with its generic kernels: at the paper
config the R1 pass spent 162 of its 186 ms of GPU time in nine of them (docs/performance.md).

Here a convolution y = conv(x, w) is an autograd Function whose backward is made of two more
Functions of the same kind:
- the input gradient gx = conv^T(gy, w) is a convolution of the other direction (transposed <->
  plain, same stride, padding and groups), so its own backward is again a plain convolution of
  ggx with w plus a weight gradient;
- the weight gradient gw = B(gy, x) runs as cuDNN's backward-filter (``convolution_backward`` with
  only the weight output), and its backward is two convolutions (of x, and of gy, with ggw).
Each part is computed only when the autograd engine will use it: in R1's inner pass
(``autograd.grad(D(x), x, create_graph=True)``) the weight gradients are skipped, as the released
loss skips them (its ``no_weight_gradients`` context), here found out from the engine instead of a
global flag. Without create_graph the backward is one ``convolution_backward`` call, the same work
as torch's own.

Where: only inside ``with second_order_gradients():`` (R1's forward through D, `GANLoss.d_r1`).
A Python autograd Function costs host time on every call, and first-order passes (G, D's main
pass) gain nothing from it. The PyTorch reference is torch's native convolution autograd
(``F.conv2d`` / ``F.conv_transpose2d``); ``SPHEREHEAD_NO_CONV_AUTOGRAD=1`` selects it inside the
block too (`conv2d_resample` asks `use_conv_autograd`).
"""
from __future__ import annotations

import contextvars
import dataclasses
import warnings
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F

from spherehead.switches import switch_set

ENV_DISABLE = 'SPHEREHEAD_NO_CONV_AUTOGRAD'

_convolution_backward = torch.ops.aten.convolution_backward.default
_in_block = contextvars.ContextVar('spherehead_conv_second_order', default=False)
_warned = False


@contextmanager
def second_order_gradients() -> Iterator[None]:
    """Convolutions recorded in this block (through `conv2d_resample`) get this module's autograd,
    for a graph that will be differentiated twice (R1). Scoped to the block and to this thread."""
    token = _in_block.set(True)
    try:
        yield
    finally:
        _in_block.reset(token)


def use_conv_autograd(*tensors: torch.Tensor) -> bool:
    """True when a convolution of these tensors should go through this module: inside
    `second_order_gradients`, gradients recorded for one of them, SPHEREHEAD_NO_CONV_AUTOGRAD unset."""
    return (_in_block.get() and torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
            and not switch_set(ENV_DISABLE))


@dataclasses.dataclass(frozen=True)
class ConvSpec:
    """One 2D convolution's geometry (dilation 1, no bias): stride, padding (rows, cols),
    transposed or not, output_padding (transposed only) and groups."""
    stride: tuple[int, int]
    padding: tuple[int, int]
    transposed: bool
    output_padding: tuple[int, int] = (0, 0)
    groups: int = 1

    def run(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The convolution itself (no autograd of ours): x [N, C_in, H, W], w as torch wants it
        (plain [C_out, C_in / groups, kh, kw]; transposed [C_in, C_out / groups, kh, kw])."""
        if self.transposed:
            return F.conv_transpose2d(x, w, None, self.stride, self.padding, self.output_padding, self.groups)
        return F.conv2d(x, w, None, self.stride, self.padding, 1, self.groups)

    def backward(self, gy: torch.Tensor, x: torch.Tensor, w: torch.Tensor,
                 mask: tuple[bool, bool]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(gx, gw) of this convolution for output gradient gy, each computed only where mask says."""
        gx, gw, _ = _convolution_backward(gy, x, w, None, self.stride, self.padding, (1, 1), self.transposed,
                                          self.output_padding, self.groups, (mask[0], mask[1], False))
        return gx, gw

    def input_grad_spec(self, x_shape: torch.Size, y_shape: torch.Size, w_shape: torch.Size) -> 'ConvSpec':
        """The convolution that maps an output gradient gy [y_shape] to the input gradient gx
        [x_shape] with the same weight: the other direction, same stride, padding and groups."""
        if self.transposed:
            return ConvSpec(self.stride, self.padding, False, (0, 0), self.groups)
        # conv_transpose's output is (H' - 1) s - 2 p + k; the rows the forward's stride skipped
        # at the end come back as output_padding.
        out_pad = tuple(int(x_shape[2 + i]) - ((int(y_shape[2 + i]) - 1) * self.stride[i] - 2 * self.padding[i]
                                               + int(w_shape[2 + i])) for i in range(2))
        return ConvSpec(self.stride, self.padding, True, out_pad, self.groups)


def _engine_needs(ctx, i: int) -> bool:
    """Whether the running backward will use the gradient of the Function's i-th input.

    ``ctx.needs_input_grad`` says only that the input requires grad; autograd.grad(out, x)
    skips every other branch, which the engine knows (the check register_multi_grad_hook
    uses). Where it cannot tell (a leaf under autograd.grad, an older torch) the answer is yes:
    the gradient is computed and maybe dropped, never missing."""
    global _warned
    if not ctx.needs_input_grad[i]:
        return False
    node = ctx.next_functions[i][0]
    if node is None:
        return False
    try:
        return bool(torch._C._will_engine_execute_node(node))
    except RuntimeError:
        return True
    except AttributeError:   # a torch without the query: correct, only slower
        if not _warned:
            _warned = True
            warnings.warn('spherehead: this torch cannot tell which gradients a backward uses; convolutions '
                          'compute every weight gradient (R1 is slower)', RuntimeWarning, stacklevel=2)
        return True


class _Conv(torch.autograd.Function):
    """y = spec.run(x, w); the backward is made of `_Conv` (input gradient) and `_ConvWeightGrad`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
        y = spec.run(x, w)
        ctx.spec = spec
        ctx.save_for_backward(x, w)
        return y

    @staticmethod
    def backward(ctx, gy: torch.Tensor):
        x, w = ctx.saved_tensors
        spec: ConvSpec = ctx.spec
        need_x, need_w = _engine_needs(ctx, 0), _engine_needs(ctx, 1)
        if not (need_x or need_w):
            return None, None, None
        if not torch.is_grad_enabled():   # no create_graph: one call, the work torch's own backward does
            gx, gw = spec.backward(gy, x, w, (need_x, need_w))
            return gx, gw, None
        gx = _Conv.apply(gy, w, spec.input_grad_spec(x.shape, gy.shape, w.shape)) if need_x else None
        gw = _ConvWeightGrad.apply(gy, x, w.detach(), spec) if need_w else None
        return gx, gw, None


class _ConvWeightGrad(torch.autograd.Function):
    """gw = the weight gradient of spec's convolution for input x and output gradient gy
    (cuDNN's backward-filter on CUDA). `w` only gives the shape and layout (not differentiated)."""

    @staticmethod
    def forward(ctx, gy: torch.Tensor, x: torch.Tensor, w: torch.Tensor, spec: ConvSpec) -> torch.Tensor:
        ctx.spec = spec
        ctx.w_shape = w.shape
        ctx.save_for_backward(gy, x)
        return spec.backward(gy, x, w, (False, True))[1]

    @staticmethod
    def backward(ctx, ggw: torch.Tensor):
        gy, x = ctx.saved_tensors
        spec: ConvSpec = ctx.spec
        need_gy, need_x = _engine_needs(ctx, 0), _engine_needs(ctx, 1)
        back = spec.input_grad_spec(x.shape, gy.shape, ctx.w_shape)
        # <ggw, B(gy, x)> is bilinear: d/dgy = conv(x, ggw), d/dx = conv^T(gy, ggw).
        if torch.is_grad_enabled():
            g_gy = _Conv.apply(x, ggw, spec) if need_gy else None
            g_x = _Conv.apply(gy, ggw, back) if need_x else None
        else:
            g_gy = spec.run(x, ggw) if need_gy else None
            g_x = back.run(gy, ggw) if need_x else None
        return g_gy, g_x, None, None


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def conv2d(x: torch.Tensor, w: torch.Tensor, stride: int | tuple[int, int] = 1,
           padding: int | tuple[int, int] | list[int] = 0, groups: int = 1) -> torch.Tensor:
    """Like F.conv2d without bias (x [N, C_in, H, W], w [C_out, C_in / groups, kh, kw]), with the
    cheap higher-order gradients of this module."""
    return _Conv.apply(x, w, ConvSpec(_pair(stride), _pair(padding), False, (0, 0), groups))


def conv_transpose2d(x: torch.Tensor, w: torch.Tensor, stride: int | tuple[int, int] = 1,
                     padding: int | tuple[int, int] | list[int] = 0, groups: int = 1) -> torch.Tensor:
    """Like F.conv_transpose2d without bias or output_padding (w [C_in, C_out / groups, kh, kw])."""
    return _Conv.apply(x, w, ConvSpec(_pair(stride), _pair(padding), True, (0, 0), groups))

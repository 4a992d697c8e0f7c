"""Dual-sphere feature sampling: dispatch between the CUDA kernel and the PyTorch reference.

The kernel (dual_sphere_kernel.cu) computes, per point, both spheres' coordinates and
weights, the bilinear samples of the three planes of the chosen sphere(s) and their
(weight-fused) mean in one pass; its backward adds the plane gradients with atomics.
It is built on first use with torch.utils.cpp_extension (ninja), cached under
TORCH_EXTENSIONS_DIR (default ~/.cache/torch_extensions).

The reference, spherehead.render.spherical.sample_dual_sphere, is used when:
- SPHEREHEAD_NO_CUDA_KERNELS=1 is set,
- the tensors are not on CUDA, or of a dtype the kernel does not take,
- gradients w.r.t. the points are needed (the kernel gives plane gradients only),
- the build failed (one warning per process).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from spherehead.render.spherical import sample_dual_sphere

ENV_DISABLE = 'SPHEREHEAD_NO_CUDA_KERNELS'
_SOURCE = Path(__file__).with_name('dual_sphere_kernel.cu')
_MODES = {'A': 0, 'B': 1, 'fused': 2}
_PLANE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class _Extension:
    """The compiled module, built at most once per process; None after a failed build."""

    def __init__(self):
        self.tried = False
        self.module = None

    def get(self):
        if not self.tried:
            self.tried = True
            try:
                self.module = _build()
            except Exception as e:  # noqa: BLE001 - any build failure means: use the reference
                warnings.warn(f'spherehead: the dual-sphere CUDA kernel could not be built ({type(e).__name__}: '
                              f'{str(e).strip().splitlines()[-1] if str(e).strip() else e!r}); '
                              f'using the PyTorch reference', RuntimeWarning, stacklevel=3)
                self.module = None
        return self.module

    def reset(self):
        self.tried, self.module = False, None


_extension = _Extension()


def _build():
    """Compile and load the extension (torch.utils.cpp_extension.load, ninja)."""
    from torch.utils.cpp_extension import load
    return load(name='spherehead_dual_sphere', sources=[str(_SOURCE)], extra_cuda_cflags=['-O3'],
                extra_cflags=['-O3'], verbose=os.environ.get('SPHEREHEAD_VERBOSE_BUILD') == '1')


def kernels_disabled() -> bool:
    return os.environ.get(ENV_DISABLE, '') not in ('', '0')


def kernel_available() -> bool:
    """True when the CUDA kernel can run here (CUDA present, not disabled, built)."""
    return torch.cuda.is_available() and not kernels_disabled() and _extension.get() is not None


def _use_kernel(planes_A, planes_B, points) -> bool:
    if kernels_disabled() or not points.is_cuda or not planes_A.is_cuda:
        return False
    if planes_B is not None and (not planes_B.is_cuda or planes_B.shape != planes_A.shape
                                 or planes_B.dtype != planes_A.dtype):
        return False
    if points.dtype != torch.float32 or planes_A.dtype not in _PLANE_DTYPES:
        return False
    if points.dim() != 3 or points.shape[-1] != 3 or planes_A.dim() != 5 or planes_A.shape[1] != 3:
        return False
    if points.shape[0] != planes_A.shape[0]:
        return False
    if points.requires_grad and torch.is_grad_enabled():
        return False  # point gradients: the reference's autograd
    return _extension.get() is not None


def _channels_last(planes: torch.Tensor) -> torch.Tensor:
    """[N, 3, C, H, W] any float dtype -> [N, 3, H, W, C] float32 contiguous."""
    return planes.permute(0, 1, 3, 4, 2).to(torch.float32, memory_format=torch.contiguous_format).contiguous()


class _DualSphereFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, planes_A, planes_B, points, box_warp, mode):
        ext = _extension.get()
        pts = points.detach().contiguous()
        cl_A = _channels_last(planes_A.detach())
        cl_B = _channels_last(planes_B.detach()) if planes_B is not None else cl_A.new_empty(0)
        features, ownership = ext.forward(cl_A, cl_B, pts, float(box_warp), mode)
        ctx.save_for_backward(pts)
        ctx.box_warp, ctx.mode = float(box_warp), mode
        ctx.shape_A, ctx.dtype_A = planes_A.shape, planes_A.dtype
        ctx.has_B = planes_B is not None
        ctx.mark_non_differentiable(ownership)
        return features, ownership

    @staticmethod
    def backward(ctx, grad_features, grad_ownership):
        (pts,) = ctx.saved_tensors
        want_A = ctx.needs_input_grad[0] and ctx.mode != _MODES['B']
        want_B = ctx.has_B and ctx.needs_input_grad[1] and ctx.mode != _MODES['A']
        grad_A = grad_B = None
        if grad_features is not None and (want_A or want_B):
            N, P, C, H, W = ctx.shape_A
            buf = lambda: torch.zeros((N, P, H, W, C), device=pts.device, dtype=torch.float32)
            empty = pts.new_empty(0)
            gA = buf() if want_A else empty
            gB = buf() if want_B else empty
            _extension.get().backward(grad_features.to(torch.float32).contiguous(), pts, gA, gB, ctx.box_warp,
                                      ctx.mode)
            to_planes = lambda g: g.permute(0, 1, 4, 2, 3).to(ctx.dtype_A).contiguous()
            grad_A = to_planes(gA) if want_A else None
            grad_B = to_planes(gB) if want_B else None
        if ctx.needs_input_grad[0] and grad_A is None:
            grad_A = torch.zeros(ctx.shape_A, device=pts.device, dtype=ctx.dtype_A)
        if ctx.has_B and ctx.needs_input_grad[1] and grad_B is None:
            grad_B = torch.zeros(ctx.shape_A, device=pts.device, dtype=ctx.dtype_A)
        return grad_A, grad_B, None, None, None


def dual_sphere_features(planes_A: torch.Tensor, planes_B: torch.Tensor | None, points: torch.Tensor,
                         box_warp: float, sphere: str = 'fused') -> tuple[torch.Tensor, torch.Tensor]:
    """planes [N, 3, C, H, W], points [N, M, 3] world units -> (features [N, M, C], ownership [N, M]).
    See spherehead.render.spherical.sample_dual_sphere for the definition; the CUDA kernel is
    used when it can run (module docstring), else that reference."""
    if sphere not in _MODES:
        raise ValueError(f"sphere must be 'A', 'B' or 'fused', got {sphere!r}")
    if planes_B is None and sphere == 'B':
        raise ValueError("this model has a single sphere (A); sphere='B' is not available")
    if not _use_kernel(planes_A, planes_B, points):
        return sample_dual_sphere(planes_A, planes_B, points, box_warp, sphere)
    mode = _MODES['A'] if planes_B is None else _MODES[sphere]
    features, ownership = _DualSphereFunction.apply(planes_A, planes_B, points, box_warp, mode)
    # The reference returns the planes' dtype for one sphere, the promoted dtype when fused.
    out_dtype = planes_A.dtype if mode != _MODES['fused'] else torch.promote_types(planes_A.dtype, points.dtype)
    return features.to(out_dtype), ownership

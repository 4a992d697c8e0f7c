"""Dual-sphere feature sampling: dispatch between the CUDA kernel and the PyTorch reference.

The kernel (dual_sphere_kernel.cu) computes, per point, both spheres' coordinates and
weights, the bilinear samples of the three planes of the chosen sphere(s) and their
(weight-fused) mean in one pass. Its backward adds the plane gradients with atomics and,
when the points need gradients (training: the camera-offset net moves the rays), a second
kernel gives d loss / d points analytically: the bilinear derivative w.r.t. the grid
coordinates, chained through (theta_n, phi_n, r_n), the fused weights wA, wB and the frame
maps to the points (_point_grad_mirror is that maths in PyTorch, tested against autograd).
The ownership output is not differentiable; the backward is not itself differentiable
(no double backward through the kernel). It is built on first use with
torch.utils.cpp_extension (ninja), cached under TORCH_EXTENSIONS_DIR (default
~/.cache/torch_extensions).

The reference, spherehead.ops.dual_sphere_reference.sample_dual_sphere, is used when:
- SPHEREHEAD_NO_CUDA_KERNELS=1 is set,
- the tensors are not on CUDA, or of a dtype the kernel does not take (points float32;
  planes float32, float16 or bfloat16, both spheres of one shape and dtype),
- the build failed (one warning per process).

Singular points: at a sphere's pole (a = b = 0 in its frame) phi_n is undefined and the
reference's autograd gives NaN point gradients; the kernel drops the terms of that sphere
that need the direction around the axis (d phi_n, and d theta_n w.r.t. a and b) and keeps
the rest, so its point gradients stay finite; at the origin that sphere's Jacobian is 0.
On the seam (b = 0, a < 0) nothing is singular: kernel and reference agree there.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.autograd.function import once_differentiable

from spherehead.ops.extension import ENV_DISABLE, LazyExtension, kernels_disabled  # noqa: F401 (re-exported)
from spherehead.ops.dual_sphere_reference import WEIGHT_EPS, sample_dual_sphere, spherical_from_frame, to_sphere_frame

_MODES = {'A': 0, 'B': 1, 'fused': 2}
_PLANE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_extension = LazyExtension('spherehead_dual_sphere', Path(__file__).with_name('dual_sphere_kernel.cu'), 'dual-sphere')


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
        ctx.want_points = ctx.needs_input_grad[2]
        # The point gradients read the planes again: keep the float32 channels-last copies.
        if ctx.want_points:
            ctx.save_for_backward(pts, cl_A, cl_B)
        else:
            ctx.save_for_backward(pts)
        ctx.box_warp, ctx.mode = float(box_warp), mode
        ctx.shape_A, ctx.dtype_A = planes_A.shape, planes_A.dtype
        ctx.has_B = planes_B is not None
        ctx.mark_non_differentiable(ownership)
        return features, ownership

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_features, grad_ownership):
        pts = ctx.saved_tensors[0]
        ext = _extension.get()
        want_A = ctx.needs_input_grad[0] and ctx.mode != _MODES['B']
        want_B = ctx.has_B and ctx.needs_input_grad[1] and ctx.mode != _MODES['A']
        grad_A = grad_B = grad_points = None
        gf = grad_features.to(torch.float32).contiguous() if grad_features is not None else None
        if gf is not None and (want_A or want_B):
            N, P, C, H, W = ctx.shape_A
            buf = lambda: torch.zeros((N, P, H, W, C), device=pts.device, dtype=torch.float32)
            empty = pts.new_empty(0)
            gA = buf() if want_A else empty
            gB = buf() if want_B else empty
            ext.backward(gf, pts, gA, gB, ctx.box_warp, ctx.mode)
            to_planes = lambda g: g.permute(0, 1, 4, 2, 3).to(ctx.dtype_A).contiguous()
            grad_A = to_planes(gA) if want_A else None
            grad_B = to_planes(gB) if want_B else None
        if ctx.want_points:
            if gf is None:
                grad_points = torch.zeros_like(pts)
            else:
                _, cl_A, cl_B = ctx.saved_tensors
                grad_points = ext.point_grad(cl_A, cl_B, gf, pts, ctx.box_warp, ctx.mode)
        if ctx.needs_input_grad[0] and grad_A is None:
            grad_A = torch.zeros(ctx.shape_A, device=pts.device, dtype=ctx.dtype_A)
        if ctx.has_B and ctx.needs_input_grad[1] and grad_B is None:
            grad_B = torch.zeros(ctx.shape_A, device=pts.device, dtype=ctx.dtype_A)
        return grad_A, grad_B, grad_points, None, None


def dual_sphere_features(planes_A: torch.Tensor, planes_B: torch.Tensor | None, points: torch.Tensor,
                         box_warp: float, sphere: str = 'fused') -> tuple[torch.Tensor, torch.Tensor]:
    """planes [N, 3, C, H, W], points [N, M, 3] world units -> (features [N, M, C], ownership [N, M]).
    See spherehead.ops.dual_sphere_reference.sample_dual_sphere for the definition; the CUDA kernel is
    used when it can run (module docstring); on CPU with autograd off, the fast CPU path
    (spherehead.ops.cpu_sampler; off with SPHEREHEAD_NO_FAST_CPU=1); else that reference."""
    if sphere not in _MODES:
        raise ValueError(f"sphere must be 'A', 'B' or 'fused', got {sphere!r}")
    if planes_B is None and sphere == 'B':
        raise ValueError("this model has a single sphere (A); sphere='B' is not available")
    if not _use_kernel(planes_A, planes_B, points):
        from spherehead.ops.cpu_sampler import fast_dual_sphere, use_fast_sampler
        if use_fast_sampler(planes_A, planes_B, points):
            return fast_dual_sphere(planes_A, planes_B, points, box_warp, sphere)
        return sample_dual_sphere(planes_A, planes_B, points, box_warp, sphere)
    mode = _MODES['A'] if planes_B is None else _MODES[sphere]
    features, ownership = _DualSphereFunction.apply(planes_A, planes_B, points, box_warp, mode)
    # The reference returns the planes' dtype for one sphere, the promoted dtype when fused.
    out_dtype = planes_A.dtype if mode != _MODES['fused'] else torch.promote_types(planes_A.dtype, points.dtype)
    return features.to(out_dtype), ownership


# ----------------------------------------------------------------------------- point-gradient mirror
# The kernel's point-gradient maths in PyTorch, formula for formula (dual_sphere_point_grad_kernel):
# tested against autograd through the reference on CPU (float64), and against the kernel on CUDA.

def _frame_jacobian(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[..., 3] frame components (a, b, c) -> d(theta_n, phi_n, r_n)/d(a, b, c), three [..., 3] rows.

    With rho = sqrt(a^2 + b^2), R = sqrt(rho^2 + c^2), u = (a, b) / rho:
    d r_n = 2/sqrt(3) (a, b, c)/R; d theta_n = 2/pi (c u / R^2, -rho / R^2); d phi_n = (-u_b, u_a, 0) / (pi rho).
    At rho = 0 (a pole) u is taken as 0 (phi_n undefined); at R = 0 all rows are 0."""
    a, b, c = v.unbind(-1)
    rho = (a * a + b * b).sqrt()
    R = (a * a + b * b + c * c).sqrt()
    inv_R = torch.where(R > 0, 1.0 / torch.where(R > 0, R, torch.ones_like(R)), torch.zeros_like(R))
    inv_rho = torch.where(rho > 0, 1.0 / torch.where(rho > 0, rho, torch.ones_like(rho)), torch.zeros_like(rho))
    ua, ub = a * inv_rho, b * inv_rho
    kr = (2.0 / math.sqrt(3.0)) * inv_R
    kt = (2.0 / math.pi) * (c * inv_R) * inv_R
    kp = inv_rho / math.pi
    d_r = torch.stack([kr * a, kr * b, kr * c], -1)
    d_t = torch.stack([kt * ua, kt * ub, -(2.0 / math.pi) * (rho * inv_R) * inv_R], -1)
    d_p = torch.stack([-kp * ub, kp * ua, torch.zeros_like(a)], -1)
    return d_t, d_p, d_r


def _weight_and_grad(t: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weight w = wt wp at (theta_n, phi_n) and dw/dtheta_n = -pi/2 sin(pi t) wp, dw/dphi_n = -pi/2 sin(pi p) wt."""
    wt = (1.0 + torch.cos(math.pi * t)) * 0.5
    wp = (1.0 + torch.cos(math.pi * p)) * 0.5
    return wt * wp, -0.5 * math.pi * torch.sin(math.pi * t) * wp, -0.5 * math.pi * torch.sin(math.pi * p) * wt


def _bilinear_and_grad(plane: torch.Tensor, gx: torch.Tensor, gy: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """plane [N, C, H, W]; grid coordinates gx (width axis), gy [N, M] -> (value, d/dgx, d/dgy), each [N, M, C].

    grid_sample's bilinear, zeros padding, align_corners=False: ix = ((gx + 1) W - 1) / 2, taps outside
    the plane read 0; d/dgx = W/2 ((v01 - v00) wy0 + (v11 - v10) wy1), d/dgy = H/2 ((v10 - v00) wx0 +
    (v11 - v01) wx1) with v_yx the taps (the right-hand derivative where ix or iy is a whole number,
    as torch's grid_sampler backward)."""
    N, C, H, W = plane.shape
    M = gx.shape[1]
    ix = ((gx + 1) * W - 1) / 2
    iy = ((gy + 1) * H - 1) / 2
    fx, fy = ix.floor(), iy.floor()
    wx1, wx0 = ix - fx, (fx + 1) - ix
    wy1, wy0 = iy - fy, (fy + 1) - iy
    x0, y0 = fx.long(), fy.long()
    flat = plane.reshape(N, C, H * W)

    def tap(x, y):
        ok = (x >= 0) & (x < W) & (y >= 0) & (y < H)
        idx = (y.clamp(0, H - 1) * W + x.clamp(0, W - 1))[:, None, :].expand(N, C, M)
        v = flat.gather(2, idx).transpose(1, 2)                         # [N, M, C]
        return torch.where(ok[..., None], v, torch.zeros_like(v))

    v00, v01, v10, v11 = tap(x0, y0), tap(x0 + 1, y0), tap(x0, y0 + 1), tap(x0 + 1, y0 + 1)
    wx0, wx1, wy0, wy1 = (w[..., None] for w in (wx0, wx1, wy0, wy1))
    value = v00 * (wx0 * wy0) + v01 * (wx1 * wy0) + v10 * (wx0 * wy1) + v11 * (wx1 * wy1)
    d_gx = (W / 2) * ((v01 - v00) * wy0 + (v11 - v10) * wy1)
    d_gy = (H / 2) * ((v10 - v00) * wx0 + (v11 - v01) * wx1)
    return value, d_gx, d_gy


def _sphere_partials(planes: torch.Tensor, t: torch.Tensor, p: torch.Tensor, r: torch.Tensor,
                     grad_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """planes [N, 3, C, H, W]; coordinates [N, M]; grad_features [N, M, C] ->
    (sum_c g dF/dtheta_n, sum_c g dF/dphi_n, sum_c g dF/dr_n, sum_c g F), each [N, M], F = sum of the 3 planes'
    samples (planes at (theta, phi), (theta, r), (phi, r))."""
    v0, x0, y0 = _bilinear_and_grad(planes[:, 0], t, p)
    v1, x1, y1 = _bilinear_and_grad(planes[:, 1], t, r)
    v2, x2, y2 = _bilinear_and_grad(planes[:, 2], p, r)
    g = grad_features
    return (g * (x0 + x1)).sum(-1), (g * (y0 + x2)).sum(-1), (g * (y1 + y2)).sum(-1), (g * (v0 + v1 + v2)).sum(-1)


def _point_grad_mirror(planes_A: torch.Tensor, planes_B: torch.Tensor | None, points: torch.Tensor,
                       box_warp: float, mode: str, grad_features: torch.Tensor) -> torch.Tensor:
    """d loss / d points [N, M, 3] of sample_dual_sphere's features, given d loss / d features [N, M, C],
    by the kernel's formulas (mode 'A', 'B' or 'fused'; planes_B None: one sphere, mode 'A')."""
    if planes_B is None:
        mode = 'A'
    q = points * (2.0 / box_warp)
    frames = {'A': to_sphere_frame(q, 'A'), 'B': to_sphere_frame(q, 'B')}
    used = ('A', 'B') if mode == 'fused' else (mode,)
    planes = {'A': planes_A, 'B': planes_B}
    coords, parts, d_coords = {}, {}, {}
    for s in ('A', 'B') if planes_B is not None else ('A',):
        coords[s] = spherical_from_frame(frames[s])
    for s in used:
        parts[s] = _sphere_partials(planes[s], *coords[s], grad_features)
    if mode == 'fused':
        (tA, pA, _), (tB, pB, _) = coords['A'], coords['B']
        wA, dwA_dt, dwA_dp = _weight_and_grad(tA, pA)
        wB, dwB_dt, dwB_dp = _weight_and_grad(tB, pB)
        D = wA + wB + WEIGHT_EPS
        fA, fB = parts['A'][3], parts['B'][3]
        # fused = (fA wA + fB wB) / D: d/dwA = (fA (wB + eps) - fB wB) / D^2, d/dwB likewise.
        dL_dwA = (fA * (wB + WEIGHT_EPS) - fB * wB) / (D * D)
        dL_dwB = (fB * (wA + WEIGHT_EPS) - fA * wA) / (D * D)
        for s, w, dL_dw, dw_dt, dw_dp in (('A', wA, dL_dwA, dwA_dt, dwA_dp), ('B', wB, dL_dwB, dwB_dt, dwB_dp)):
            st, sp, sr, _ = parts[s]
            k = w / D
            d_coords[s] = ((k * st + dL_dw * dw_dt) / 3, (k * sp + dL_dw * dw_dp) / 3, (k * sr) / 3)
    else:
        st, sp, sr, _ = parts[mode]
        d_coords[mode] = (st / 3, sp / 3, sr / 3)
    grad_q = torch.zeros_like(q)
    for s, (gt, gp, gr) in d_coords.items():
        d_t, d_p, d_r = _frame_jacobian(frames[s])
        ga, gb, gc = (gt[..., None] * d_t + gp[..., None] * d_p + gr[..., None] * d_r).unbind(-1)
        # A: (a, b, c) = (q_z, q_y, -q_x); B: (a, b, c) = (-q_z, -q_x, q_y).
        grad_q = grad_q + (torch.stack([-gc, gb, ga], -1) if s == 'A' else torch.stack([-gb, gc, -ga], -1))
    return grad_q * (2.0 / box_warp)

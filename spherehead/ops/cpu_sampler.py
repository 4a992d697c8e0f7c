"""Fast CPU inference path of the dual-sphere sampler: one gather-and-blend per point.

The reference (spherehead.ops.dual_sphere_reference.sample_dual_sphere) samples each sphere's three
planes with grid_sample (planes laid out [C, H, W]: a tap reads C values far apart) and
blends the spheres with broadcast arithmetic on [N, 3, M, C] temporaries. Here the 4
bilinear taps of each used plane, the fused sphere weight and the 1/3 plane mean fold into
one coefficient per tap, so a point's feature is

    f[m] = sum_k coef[m, k] * rows[idx[m, k]]      k < 24 (both spheres) or 12 (one sphere)

with ``rows`` the planes as channels-last rows (plane_rows). torch's embedding_bag
(mode 'sum', per_sample_weights) does that gather and weighted sum in one pass, without
temporaries. Same maths as the reference (same coordinate expressions, zero padding,
align_corners=False); only the float32 summation order differs (differences ~1e-6 of the
feature scale; tests/test_cpu_fast_path.py holds the tolerance).

No gradients: spherehead.ops.dual_sphere takes this path only on CPU, float32, while
autograd is off (torch.no_grad / torch.inference_mode), and not when SPHEREHEAD_NO_FAST_CPU=1
(or SPHEREHEAD_NO_CUDA_KERNELS=1) is set.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from spherehead.ops.extension import kernels_disabled
from spherehead.switches import switch_set
from spherehead.ops.dual_sphere_reference import WEIGHT_EPS

ENV_DISABLE_FAST_CPU = 'SPHEREHEAD_NO_FAST_CPU'
PAD = 3          # zero rows / columns framing each plane in plane_rows: 1 before, 2 after
MAX_ROWS = 2 ** 24   # plane rows are numbered in float32 on the way (exact below 2^24)


def fast_cpu_disabled() -> bool:
    """True when SPHEREHEAD_NO_FAST_CPU or SPHEREHEAD_NO_CUDA_KERNELS (every fast path) is set."""
    return switch_set(ENV_DISABLE_FAST_CPU) or kernels_disabled()


def fast_cpu_applies(*tensors: torch.Tensor | None) -> bool:
    """The fast CPU path may run: not disabled, autograd off, every given tensor on CPU in float32."""
    if torch.is_grad_enabled() or fast_cpu_disabled():
        return False
    return all(t is None or (t.device.type == 'cpu' and t.dtype == torch.float32) for t in tensors)


def use_fast_sampler(planes_A: torch.Tensor, planes_B: torch.Tensor | None, points: torch.Tensor) -> bool:
    """Whether fast_dual_sphere can replace the reference for these inputs (shapes as the reference takes)."""
    if not fast_cpu_applies(planes_A, planes_B, points):
        return False
    if points.dim() != 3 or points.shape[-1] != 3 or planes_A.dim() != 5 or planes_A.shape[1] != 3:
        return False
    if points.shape[0] != planes_A.shape[0] or (planes_B is not None and planes_B.shape != planes_A.shape):
        return False
    N, _, _, H, W = planes_A.shape
    return N * 3 * (1 if planes_B is None else 2) * (H + PAD) * (W + PAD) < MAX_ROWS


def plane_rows(planes: list[torch.Tensor]) -> torch.Tensor:
    """Plane stacks, each [N, 3, C, H, W] -> rows [N * 3 * len(planes) * (H + PAD) * (W + PAD), C],
    channels last, each plane framed by zeros (one row / column before, two after): row
    ((n * P + p) * (H + PAD) + y + 1) * (W + PAD) + x + 1 holds plane p's feature at pixel (y, x)
    of item n (p counts the planes of all stacks). The frame is grid_sample's zero padding:
    every tap of a clamped coordinate reads a real pixel or a zero, so the sampler needs no
    bounds masks."""
    N, P, C, H, W = planes[0].shape
    rows = planes[0].new_zeros((N, len(planes), P, H + PAD, W + PAD, C))
    for s, stack in enumerate(planes):
        rows[:, s, :, 1:H + 1, 1:W + 1] = stack.permute(0, 1, 3, 4, 2)
    return rows.reshape(-1, C)


def _sphere_angles(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, M, 3] box-normalised points -> (angles [4, N, M] = (theta_n A, phi_n A, theta_n B, phi_n B),
    radii [2, N, M] = (r_n A, r_n B)), the reference's expressions (spherical_from_frame) on the
    frames A = (q_z, q_y, -q_x) and B = (-q_z, -q_x, q_y), with one atan2 call for all four angles."""
    x, y, z = q.unbind(-1)
    zz, xx, yy = z * z, x * x, y * y
    rho2_A, rho2_B = zz + yy, zz + xx
    radii = torch.stack([rho2_A + xx, rho2_B + yy]).sqrt_().div_(math.sqrt(3.0)).mul_(2.0).sub_(1.0)
    num = torch.stack([rho2_A.sqrt(), y, rho2_B.sqrt(), -x])
    den = torch.stack([-x, z, y, -z])
    ang = torch.atan2(num, den).div_(math.pi)
    ang[0::2].mul_(2.0).sub_(1.0)                                         # theta_n = 2 atan2 / pi - 1
    return ang, radii


def fast_dual_sphere(planes_A: torch.Tensor, planes_B: torch.Tensor | None, points: torch.Tensor,
                     box_warp: float, sphere: str = 'fused') -> tuple[torch.Tensor, torch.Tensor]:
    """sample_dual_sphere's (features [N, M, C], ownership [N, M]) for CPU float32 inference;
    use_fast_sampler says when it applies (the dispatcher, spherehead.ops.dual_sphere, asks it).

    planes_A, planes_B: [N, 3, C, H, W] (planes_B None: one sphere); points: [N, M, 3] world
    units; sphere 'A', 'B' or 'fused'.
    """
    if sphere not in ('A', 'B', 'fused'):
        raise ValueError(f"sphere must be 'A', 'B' or 'fused', got {sphere!r}")
    if planes_B is None and sphere == 'B':
        raise ValueError("this model has a single sphere (A); sphere='B' is not available")
    N, M, _ = points.shape
    _, _, C, H, W = planes_A.shape
    stacks = 1 if planes_B is None else 2
    Hp, Wp = H + PAD, W + PAD
    if N * 3 * stacks * Hp * Wp >= MAX_ROWS:
        raise ValueError(f'planes {tuple(planes_A.shape)} x {stacks}: too many rows for the fast sampler '
                         f'(use the reference, spherehead.ops.dual_sphere_reference.sample_dual_sphere)')
    rows = plane_rows([planes_A] if planes_B is None else [planes_A, planes_B])

    ang, radii = _sphere_angles(points * (2.0 / box_warp))
    tA, pA, tB, pB = ang.unbind(0)
    rA, rB = radii.unbind(0)
    if planes_B is None:
        ownership = torch.ones_like(tA)
        mode = 'A'
    else:
        cs = torch.cos(ang * math.pi).add_(1.0).mul_(0.5)                 # (1 + cos(pi t)) / 2, [4, N, M]
        wA, wB = cs[0] * cs[1], cs[2] * cs[3]
        denom = wA + wB + WEIGHT_EPS
        ownership = wA / denom
        mode = sphere

    # The planes this mode reads: (stack index, grid x = width axis, grid y = height axis).
    if mode == 'fused':
        used = [(0, tA, pA), (0, tA, rA), (0, pA, rA), (1, tB, pB), (1, tB, rB), (1, pB, rB)]
    elif mode == 'A':
        used = [(0, tA, pA), (0, tA, rA), (0, pA, rA)]
    else:
        used = [(1, tB, pB), (1, tB, rB), (1, pB, rB)]
    P = len(used)
    # Below, tensors are [P, N*M] or [4, P, N*M]: long contiguous rows, so elementwise ops vectorise.
    # Pixel coordinates in the framed plane: grid_sample's (align_corners=False) ((g + 1) W - 1) / 2,
    # plus 1 for the frame, clamped to [0, W + 1] (beyond, both taps read the zero frame, as
    # zero padding reads nothing there): then both taps lie in the frame and no masks are needed.
    ix = torch.stack([u[1].reshape(-1) for u in used]).add_(1.0).mul_(W).sub_(1.0).div_(2.0).add_(1.0)
    iy = torch.stack([u[2].reshape(-1) for u in used]).add_(1.0).mul_(H).sub_(1.0).div_(2.0).add_(1.0)
    # (NaN, from NaN points, becomes 0: a tap in the frame; the NaN weights still reach the feature.)
    x0 = ix.nan_to_num_(nan=0.0).clamp_(0.0, W + 1.0).floor()
    y0 = iy.nan_to_num_(nan=0.0).clamp_(0.0, H + 1.0).floor()
    wx1, wy1 = ix.sub_(x0), iy.sub_(y0)
    wx0, wy0 = 1.0 - wx1, 1.0 - wy1
    if mode == 'fused':                                                   # fused weight and the 1/3 plane mean
        sA, sB = (ownership * (1.0 / 3.0)).reshape(1, -1), (wB / denom * (1.0 / 3.0)).reshape(1, -1)
        scale = torch.cat([sA.expand(3, -1), sB.expand(3, -1)])
        wy0.mul_(scale)
        wy1.mul_(scale)
    else:
        wy0.mul_(1.0 / 3.0)
        wy1.mul_(1.0 / 3.0)
    coef = torch.empty((4, P, N * M), dtype=wx0.dtype)                  # taps (y0x0, y0x1, y1x0, y1x1)
    torch.mul(wy0, wx0, out=coef[0])
    torch.mul(wy0, wx1, out=coef[1])
    torch.mul(wy1, wx0, out=coef[2])
    torch.mul(wy1, wx1, out=coef[3])
    # First tap's row: plane (stack s, plane j) of item n starts at ((n * stacks + s) * 3 + j) * Hp * Wp.
    plane_ids = torch.tensor([s * 3 + j % 3 for j, (s, *_rest) in enumerate(used)], dtype=torch.float32)
    base = (torch.arange(N, dtype=torch.float32)[:, None] * (3 * stacks) + plane_ids[None, :]) * (Hp * Wp)
    row0 = y0.mul_(Wp).add_(x0).add_(base.t()[:, :, None].expand(P, N, M).reshape(P, N * M))  # [P, N*M]

    # To embedding_bag's [N*M, 4P] layout. A GEMM with a 0/1 matrix is an exact transposing copy
    # (one product by 1 per output, the other terms +0) and about 3x faster here than the copy
    # torch uses for a transpose; the row numbers are whole floats below 2^24, exact in float32.
    taps = torch.tensor([0.0, 1.0, Wp, Wp + 1.0])                         # tap offsets from the first tap
    spread = torch.zeros(P, 4 * P)                                        # row0 of plane p -> its 4 taps
    for p in range(P):
        spread[p, p::P] = 1.0
    idx = torch.addmm(taps.repeat_interleave(P), row0.t(), spread).to(torch.int32)
    coef = coef.reshape(4 * P, N * M).t() @ torch.eye(4 * P)
    features = F.embedding_bag(idx, rows, mode='sum', per_sample_weights=coef)
    return features.reshape(N, M, C), ownership

"""SphereHead's dual-sphere feature sampling, the PyTorch reference: spherical coordinates, weight map, fusion.

World points p are normalised by the feature box, q = 2 p / box_warp, then expressed in
the frame of each sphere (column vectors):

- sphere A: qA = (q_z, q_y, -q_x)   polar axis along the ears (x), seam behind the head (-z)
- sphere B: qB = (-q_z, -q_x, q_y)  polar axis vertical (y), seam in front of the face (+z)

For frame components (a, b, c): r_n = 2|q|/sqrt(3) - 1, theta_n = 2 atan2(sqrt(a^2+b^2), c)/pi - 1,
phi_n = atan2(b, a)/pi, and the weight w = (1 + cos(pi theta_n))/2 * (1 + cos(pi phi_n))/2.
Each sphere owns planes sampled at (theta_n, phi_n), (theta_n, r_n), (phi_n, r_n).

This module is the PyTorch reference; beside it, spherehead.ops.dual_sphere holds the CUDA kernel
(and dispatches between the two) and spherehead.ops.cpu_sampler the fast CPU path.
spherehead.render.spherical gives the same coordinates and weights of world points to the renderer.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

WEIGHT_EPS = 1e-8  # added to wA + wB in the fused feature, as released


def to_sphere_frame(q: torch.Tensor, sphere: str) -> torch.Tensor:
    """[..., 3] box-normalised points -> [..., 3] components (a, b, c) in the frame of sphere 'A' or 'B'."""
    x, y, z = q.unbind(-1)
    if sphere == 'A':
        return torch.stack([z, y, -x], dim=-1)
    if sphere == 'B':
        return torch.stack([-z, -x, y], dim=-1)
    raise ValueError(f"sphere must be 'A' or 'B', got {sphere!r}")


def spherical_from_frame(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[..., 3] frame components (a, b, c) -> (theta_n, phi_n, r_n), each [...] in [-1, 1]."""
    a, b, c = v.unbind(-1)
    r_n = (a * a + b * b + c * c).sqrt() / math.sqrt(3.0) * 2.0 - 1.0
    theta_n = torch.atan2((a * a + b * b).sqrt(), c) / math.pi * 2.0 - 1.0
    phi_n = torch.atan2(b, a) / math.pi
    return theta_n, phi_n, r_n


def sphere_weight_map(theta_n: torch.Tensor, phi_n: torch.Tensor) -> torch.Tensor:
    """Weight of a sphere at normalised angles: 1 at the centre (0, 0), 0 at the seam and poles."""
    return (1.0 + torch.cos(math.pi * theta_n)) * 0.5 * ((1.0 + torch.cos(math.pi * phi_n)) * 0.5)


def sample_sphere(planes: torch.Tensor, theta_n: torch.Tensor, phi_n: torch.Tensor,
                  r_n: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of one sphere's planes.

    planes: [N, P, C, H, W] with P = 3 (plane 0 at (theta, phi), 1 at (theta, r), 2 at (phi, r));
    theta_n, phi_n, r_n: [N, M]. Returns [N, P, M, C]. Zero padding, align_corners=False;
    the first grid coordinate indexes the width axis.
    """
    N, P, C, H, W = planes.shape
    if P != 3:
        raise ValueError(f'a sphere has 3 planes, got {P}')
    M = theta_n.shape[1]
    grids = torch.stack([torch.stack([theta_n, phi_n], -1),
                         torch.stack([theta_n, r_n], -1),
                         torch.stack([phi_n, r_n], -1)], dim=1)          # [N, 3, M, 2]
    out = F.grid_sample(planes.reshape(N * P, C, H, W), grids.reshape(N * P, 1, M, 2).to(planes.dtype),
                        mode='bilinear', padding_mode='zeros', align_corners=False)  # [N*P, C, 1, M]
    return out.reshape(N, P, C, M).permute(0, 1, 3, 2)


def sample_dual_sphere(planes_A: torch.Tensor, planes_B: torch.Tensor | None, points: torch.Tensor,
                       box_warp: float, sphere: str = 'fused') -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder input features of SphereHead's sphere representation (reference implementation).

    planes_A, planes_B: [N, 3, C, H, W] (planes_B None for a single sphere); points: [N, M, 3]
    world units. sphere: 'A' (F1), 'B' (F2) or 'fused'.
    Returns (features [N, M, C] = mean over the 3 planes of the chosen/fused feature,
    ownership [N, M] = wA / (wA + wB + 1e-8), ones for a single sphere).
    """
    q = points * (2.0 / box_warp)
    tA, pA, rA = spherical_from_frame(to_sphere_frame(q, 'A'))
    if planes_B is None:
        if sphere == 'B':
            raise ValueError("this model has a single sphere (A); sphere='B' is not available")
        return sample_sphere(planes_A, tA, pA, rA).mean(1), torch.ones_like(tA)
    tB, pB, rB = spherical_from_frame(to_sphere_frame(q, 'B'))
    wA, wB = sphere_weight_map(tA, pA), sphere_weight_map(tB, pB)
    ownership = wA / (wA + wB + WEIGHT_EPS)
    if sphere == 'A':
        return sample_sphere(planes_A, tA, pA, rA).mean(1), ownership
    if sphere == 'B':
        return sample_sphere(planes_B, tB, pB, rB).mean(1), ownership
    if sphere != 'fused':
        raise ValueError(f"sphere must be 'A', 'B' or 'fused', got {sphere!r}")
    fA = sample_sphere(planes_A, tA, pA, rA)                              # [N, 3, M, C]
    fB = sample_sphere(planes_B, tB, pB, rB)
    wA_, wB_ = wA[:, None, :, None], wB[:, None, :, None]
    fused = (fA * wA_ + fB * wB_) / (wA_ + wB_ + WEIGHT_EPS)
    return fused.mean(1), ownership

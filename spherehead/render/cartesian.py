"""Feature sampling of the Cartesian baselines: EG3D's tri-plane and PanoHead's tri-grid.

Points are normalised by the box, q = 2 p / box_warp (the box is [-1, 1]^3).
- tri-plane (EG3D, as released): planes at (x, y), (x, z) and (z, x).
- tri-grid (PanoHead): three grids of depth D at (x, y | z), (x, z | y), (y, z | x),
  the last coordinate indexing depth.
Bilinear / trilinear, zero padding, align_corners=False.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

TRIPLANE_AXES = ((0, 1), (0, 2), (2, 0))
TRIGRID_AXES = ((0, 1, 2), (0, 2, 1), (1, 2, 0))


def _pick(q: torch.Tensor, axes: tuple[int, ...]) -> torch.Tensor:
    """q[..., axes] by slices: indexing with a list copies an index tensor from the host each call,
    which a CUDA graph capture refuses (the visualizer's graphed orbit of the baselines)."""
    return torch.stack([q[..., a] for a in axes], dim=-1)


def sample_triplane(planes: torch.Tensor, points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """planes [N, 3, C, H, W], points [N, M, 3] world units -> features [N, M, C] (mean over planes)."""
    N, P, C, H, W = planes.shape
    M = points.shape[1]
    q = points * (2.0 / box_warp)
    grids = torch.stack([_pick(q, ax) for ax in TRIPLANE_AXES], dim=1)       # [N, 3, M, 2]
    out = F.grid_sample(planes.reshape(N * P, C, H, W), grids.reshape(N * P, 1, M, 2).to(planes.dtype),
                        mode='bilinear', padding_mode='zeros', align_corners=False)
    return out.reshape(N, P, C, M).permute(0, 1, 3, 2).mean(1)


def sample_trigrid(grids: torch.Tensor, points: torch.Tensor, box_warp: float) -> torch.Tensor:
    """grids [N, 3, C, D, H, W], points [N, M, 3] world units -> features [N, M, C] (mean over grids)."""
    N, P, C, D, H, W = grids.shape
    M = points.shape[1]
    q = points * (2.0 / box_warp)
    coords = torch.stack([_pick(q, ax) for ax in TRIGRID_AXES], dim=1)       # [N, 3, M, 3]
    out = F.grid_sample(grids.reshape(N * P, C, D, H, W), coords.reshape(N * P, 1, 1, M, 3).to(grids.dtype),
                        mode='bilinear', padding_mode='zeros', align_corners=False)  # [N*P, C, 1, 1, M]
    return out.reshape(N, P, C, M).permute(0, 1, 3, 2).mean(1)

"""MIP-NeRF style ray marcher (midpoint quadrature), as in EG3D / PanoHead."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def march_rays(colors: torch.Tensor, densities: torch.Tensor, depths: torch.Tensor,
               white_back: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Composite samples along rays.

    colors [N, R, S, C], densities [N, R, S, 1] (raw, before softplus), depths [N, R, S, 1]
    (world units, sorted). Returns (composite colors [N, R, C], expected depth [N, R, 1]
    clamped to the sampled range, weights [N, R, S-1, 1] of the S-1 intervals).
    """
    deltas = depths[:, :, 1:] - depths[:, :, :-1]
    colors_mid = (colors[:, :, :-1] + colors[:, :, 1:]) / 2
    densities_mid = (densities[:, :, :-1] + densities[:, :, 1:]) / 2
    depths_mid = (depths[:, :, :-1] + depths[:, :, 1:]) / 2
    densities_mid = F.softplus(densities_mid - 1)        # the -1 bias initialises to near-empty space
    alpha = 1 - torch.exp(-densities_mid * deltas)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :, :1]), 1 - alpha + 1e-10], -2), -2)
    weights = alpha * transmittance[:, :, :-1]
    composite = torch.sum(weights * colors_mid, -2)
    weight_total = weights.sum(2)
    depth = torch.nan_to_num(torch.sum(weights * depths_mid, -2) / weight_total, float('inf'))
    depth = torch.clamp(depth, torch.min(depths), torch.max(depths))
    if white_back:
        composite = composite + 1 - weight_total
    return composite, depth, weights

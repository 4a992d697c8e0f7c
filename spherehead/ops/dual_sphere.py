"""Dual-sphere feature sampling: dispatch between the CUDA kernel and the PyTorch reference."""
from __future__ import annotations

import torch

from spherehead.render.spherical import sample_dual_sphere


def dual_sphere_features(planes_A: torch.Tensor, planes_B: torch.Tensor | None, points: torch.Tensor,
                         box_warp: float, sphere: str = 'fused') -> tuple[torch.Tensor, torch.Tensor]:
    """planes [N, 3, C, H, W], points [N, M, 3] world units -> (features [N, M, C], ownership [N, M]).
    See spherehead.render.spherical.sample_dual_sphere for the definition."""
    return sample_dual_sphere(planes_A, planes_B, points, box_warp, sphere)

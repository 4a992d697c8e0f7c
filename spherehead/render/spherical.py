"""SphereHead's spherical coordinates and sphere weights of world points, for the renderer.

The definitions (sphere frames, normalised (theta_n, phi_n, r_n), the weight map) and the
reference feature sampler are spherehead.ops.dual_sphere_reference, beside the CUDA kernel;
their names are re-exported here.
"""
from __future__ import annotations

import torch

from spherehead.ops.dual_sphere_reference import (WEIGHT_EPS, sample_dual_sphere, sample_sphere, sphere_weight_map,
                                                  spherical_from_frame, to_sphere_frame)

__all__ = ['WEIGHT_EPS', 'sample_dual_sphere', 'sample_sphere', 'sphere_weight_map', 'spherical_from_frame',
           'to_sphere_frame', 'spherical_coordinates', 'sphere_weights']


def spherical_coordinates(points: torch.Tensor, box_warp: float, sphere: str = 'A'
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[..., 3] world points (world units) -> (theta_n, phi_n, r_n) of sphere 'A' or 'B', each [...].

    theta_n = +-1 at the poles, phi_n = +-1 on the seam, r_n = -1 at the centre.
    """
    return spherical_from_frame(to_sphere_frame(points * (2.0 / box_warp), sphere))


def sphere_weights(points: torch.Tensor, box_warp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., 3] world points -> (wA, wB), each [...]."""
    tA, pA, _ = spherical_coordinates(points, box_warp, 'A')
    tB, pB, _ = spherical_coordinates(points, box_warp, 'B')
    return sphere_weight_map(tA, pA), sphere_weight_map(tB, pB)

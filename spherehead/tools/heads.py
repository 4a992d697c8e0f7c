"""Generated heads for the rendering tools (video, interpolate, mesh): a seed's latent as EG3D's
tools draw it, its ws, and the checks that a model has the sphere mode asked for.
"""
from __future__ import annotations

import click
import numpy as np
import torch


def check_sphere(G, sphere: str, option: str = '--sphere') -> None:
    """Refuse (exit 2, one line) a sphere mode the model lacks: A and B need spheres, B needs two."""
    if sphere == 'fused':
        return
    if not G.config.is_sphere:
        raise click.BadParameter(f'{sphere}: this model is a {G.config.representation}, it has no spheres; '
                                 'use --sphere fused', param_hint=option)
    if sphere == 'B' and G.config.num_spheres < 2:
        raise click.BadParameter('B: this model has a single sphere (A); use --sphere A or fused', param_hint=option)


def seed_latent(G, seed: int, device) -> torch.Tensor:
    """z [1, z_dim] of a seed: numpy RandomState(seed).randn, as EG3D's and our generate tool draw it."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float().to(device)


def seed_ws(G, seed: int, truncation_psi: float, device) -> torch.Tensor:
    """ws [1, num_ws, w_dim] of a seed, mapped with the frontal camera as conditioning (as EG3D's tools)."""
    import spherehead as sh
    with torch.no_grad():
        return G.mapping(seed_latent(G, seed, device), sh.camera.lookat(0, 0, device=device),
                         truncation_psi=truncation_psi)

"""Tiny generators saved to files, for the visualizer tests that need a second network (another
z_dim, another representation) beside random:tiny."""
from __future__ import annotations

from pathlib import Path


def micro_network(path: str | Path, **changes) -> str:
    """A tiny generator (32 px output unless changed) saved to ``path``; returns the path as a string."""
    import torch

    import spherehead as sh
    from spherehead.config import preset
    from spherehead.networks.generator import Generator
    cfg = preset('tiny', **{'img_resolution': 32, 'triplane_size': 16,
                            'rendering': dict(neural_rendering_resolution=16, depth_resolution=6,
                                              depth_resolution_importance=6), **changes})
    torch.manual_seed(3)
    sh.save_generator(Generator(cfg), path)
    return str(path)

"""Generated images for the metrics: latents from seeds, camera picks, rendering to uint8.

Everything is drawn on the CPU with numpy from the metric seed, and rendering uses the
deterministic ray samples (no jitter) with constant noise, so a metric gives the same
number on CPU and GPU up to float round-off, and the same number whichever other metrics
run beside it.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def latents(G, seeds: list[int] | np.ndarray) -> torch.Tensor:
    """[len(seeds), z_dim] float32; seed s gives the z of ``spherehead generate --seeds s`` (taken mod 2**32)."""
    return torch.from_numpy(np.concatenate([np.random.RandomState(int(s) % 2 ** 32).randn(1, G.z_dim)
                                            for s in seeds])).float()


def pick_indices(pool_size: int, num: int, seed: int, stream: int) -> np.ndarray:
    """[num] indices into a pool of ``pool_size`` camera labels, uniform with replacement.

    Item i uses its own generator seeded with (seed, stream, i), so the first k picks do not
    depend on ``num``.
    """
    return np.array([np.random.default_rng([seed, stream, i]).integers(pool_size) for i in range(num)], np.int64)


@torch.no_grad()
def render_uint8(G, z: torch.Tensor, c_cond: torch.Tensor, c_render: torch.Tensor,
                 resolution: int | None = None, device: str | torch.device = 'cpu') -> torch.Tensor:
    """Render heads: z [N, z_dim], conditioning cameras c_cond [N, 25] (or [1, 25]), rendering
    cameras c_render [N, 25] -> uint8 images [N, 3, R, R] on the CPU.

    Truncation psi 1 (the FID convention); the camera offset net, where the model has one,
    moves the rendering camera as in ``G(z, c)``. ``resolution`` resizes (area when shrinking,
    bilinear otherwise) so that generated and dataset images meet the feature network at one size.
    """
    z = z.to(device)
    c_cond = c_cond.to(device, torch.float32)
    c_render = c_render.to(device, torch.float32)
    ws = G.mapping(z, c_cond, truncation_psi=1.0)
    c = G.camera_offset(z, c_render.expand(z.shape[0], -1) if c_render.shape[0] == 1 else c_render)
    img = G.synthesis(ws, c, noise_mode='const', deterministic=True)['image'].float()
    if resolution is not None and img.shape[-1] != resolution:
        mode = 'area' if img.shape[-1] > resolution else 'bilinear'
        img = F.interpolate(img, size=(resolution, resolution), mode=mode,
                            **({} if mode == 'area' else {'align_corners': False}))
    return (img * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu()

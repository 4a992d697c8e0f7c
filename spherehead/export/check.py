"""Splats checked against the generator: the reference rasteriser renders them from a camera of the
dataset's convention, over the generator's own background, and the result is compared with the
generator's raw image (``image_raw``, deterministic ray samples) by PSNR.

The splat file holds the head only; the raw image also shows the 2D background net's picture
where rays leave the head, so the comparison composites the rasterised splats over exactly that
picture (``field.background_rgb``). Both images are taken in [0, 1] (raw images are in [-1, 1])
and clamped there, as a display would.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from spherehead import camera
from spherehead.export.field import background_rgb
from spherehead.export.rasterize import render_splats, splat_tensors
from spherehead.export.splat_ply import Splats

CHECK_YAWS = (0.0, 90.0, 180.0)


@dataclass
class ViewCheck:
    yaw: float                      # degrees (0 = front, 90 = the head's left, 180 = back)
    pitch: float
    psnr: float                     # dB, whole raw image, splats over the generator's background
    psnr_mask: float                # dB, the splats' alpha against the raw image's mask
    splat_image: torch.Tensor       # [3, h, w] in [0, 1]
    raw_image: torch.Tensor         # [3, h, w] in [0, 1]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1] (peak 1)."""
    mse = float(torch.mean((a.double() - b.double()) ** 2))
    return math.inf if mse == 0 else -10 * math.log10(mse)


def compare_views(G, ws: torch.Tensor, splats: Splats, yaws=CHECK_YAWS, pitch: float = 0.0, sphere: str = 'fused',
                  supersample: int = 4, radius: float = camera.DEFAULT_RADIUS,
                  fov_deg: float = camera.RELEASED_FOV_DEG) -> list[ViewCheck]:
    """Render ``splats`` and the generator's raw image of ws [1, num_ws, w_dim] at each yaw (degrees) and
    compare them. ``supersample``: the splats are rasterised at that many times the raw resolution and
    averaged down (a viewer's larger window, reduced)."""
    device = ws.device
    tensors = splat_tensors(splats, device)
    out = []
    with torch.no_grad():
        for yaw in yaws:
            c = camera.lookat(yaw, pitch, radius, fov_deg, device=device)
            result = G.synthesis(ws, c, sphere=sphere, noise_mode='const', deterministic=True)
            raw = result['image_raw'][0].float()
            res = raw.shape[-1]
            bg = (background_rgb(G, ws, res)[0].float() + 1) / 2
            color, alpha = render_splats(tensors, c, res, supersample=supersample, device=device)
            image = (color + (1 - alpha) * bg).clamp(0, 1)
            raw01 = ((raw + 1) / 2).clamp(0, 1)
            mask = result['image_mask'][0, 0].float()
            out.append(ViewCheck(float(yaw), float(pitch), psnr(image, raw01), psnr(alpha, mask),
                                 image.cpu(), raw01.cpu()))
    return out

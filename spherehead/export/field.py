"""The generator's field at arbitrary points, as the renderer sees it: raw density with the
renderer's box crop, the density activation of the ray marcher, colour features turned into RGB
as the raw image is, and the colour a ray that hits nothing gets (background).

Points are world units ([N, M, 3] or [M, 3] as documented per function); +x = the head's left,
+y = up, +z = the front.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

EMPTY = -1e3             # raw density of cropped space (the renderer's value)


def crop(G, points: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Raw density sigma [N, M, 1] at points [N, M, 3] with the renderer's box crop applied (EMPTY outside)."""
    from spherehead.render.importance import box_crop_mask
    r = G.config.rendering
    return sigma.masked_fill(box_crop_mask(points, r.box_crop, r.box_warp), EMPTY) if r.box_crop else sigma


def density_function(G, planes, sphere: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """points [M, 3] world units -> raw density [M] (before the activation) of one head, with the
    renderer's box crop (EMPTY outside it)."""
    def density(points: torch.Tensor) -> torch.Tensor:
        p = points[None]
        return crop(G, p, G.query(planes, p, sphere=sphere)['sigma'])[0, :, 0]
    return density


def activated_density(raw: torch.Tensor) -> torch.Tensor:
    """Raw density -> extinction per world unit, as the ray marcher turns it (softplus(raw - 1))."""
    return F.softplus(raw - 1)


def raw_rgb(G, features: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    """Decoder colour features [1, M, C] -> RGB [1, M, 3] in about [-1, 1], as the generator turns its
    feature image into image_raw (sigmoid range mapped to [-1, 1], then toRGB or the first 3 channels).

    toRGB is a 1x1 modulated convolution plus bias (affine), so compositing these colours with the
    volume-rendering weights gives the raw image of the composited features (background aside,
    see ``background_rgb``)."""
    if G.config.rendering.decoder_activation == 'sigmoid':
        features = features * 2 - 1
    if G.torgb is None:
        return features[..., :3]
    image = features.permute(0, 2, 1).unsqueeze(-1)                    # [1, C, M, 1]: toRGB is 1x1
    return G.torgb(image, ws[:, -1], fused_modconv=False)[..., 0].permute(0, 2, 1)


def background_rgb(G, ws: torch.Tensor, resolution: int, noise_mode: str = 'const') -> torch.Tensor:
    """[1, 3, res, res] in about [-1, 1]: what image_raw shows where a ray hits nothing (mask 0).

    The generator adds (1 - mask) * background features to the composited features before toRGB,
    and maps sigmoid features to [-1, 1] after compositing, so an empty ray's raw colour is
    toRGB(empty + background) with empty = 2 * (white_back) - 1 for sigmoid decoders. With it, the raw
    image is exactly sum_i w_i rgb_i + (1 - mask) * background_rgb (toRGB is affine).
    """
    cfg, r = G.config, G.config.rendering
    C = cfg.feature_channels
    empty = torch.full((1, C, resolution, resolution), 1.0 if r.white_back else 0.0, device=ws.device)
    if r.decoder_activation == 'sigmoid':
        empty = empty * 2 - 1
    if G.bcg_synthesis is not None:
        empty = empty + G._background(ws[:1], noise_mode, resolution, False)
    return G.torgb(empty, ws[:1, -1], fused_modconv=False) if G.torgb is not None else empty[:, :3]

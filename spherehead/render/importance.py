"""Importance renderer: stratified + importance samples along camera rays, box crop, ray marching.

The feature field is given as a function ``field(points [N, M, 3]) -> (features [N, M, C],
ownership [N, M] or None)`` and a decoder turning features into colour features and density,
so that one renderer serves spheres, tri-planes and tri-grids.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from spherehead.render.ray_marcher import march_rays

Field = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class RenderResult:
    features: torch.Tensor       # [N, R, C] composited decoder features
    depth: torch.Tensor          # [N, R, 1] expected depth (world units)
    opacity: torch.Tensor        # [N, R, 1] accumulated opacity (sum of weights)
    ownership: torch.Tensor | None  # [N, R, 1] volume-rendered wA / (wA + wB), None for Cartesian fields


def stratified_depths(N: int, R: int, ray_start: float, ray_end: float, samples: int, deterministic: bool,
                      device, disparity_space: bool = False) -> torch.Tensor:
    """[N, R, S, 1] depths: evenly spaced from ray_start to ray_end, each jittered by up to one
    spacing unless deterministic."""
    if disparity_space:
        t = torch.linspace(0, 1, samples, device=device).reshape(1, 1, samples, 1).repeat(N, R, 1, 1)
        if not deterministic:
            t = t + torch.rand_like(t) / (samples - 1)
        return 1.0 / (1.0 / ray_start * (1.0 - t) + 1.0 / ray_end * t)
    depths = torch.linspace(ray_start, ray_end, samples, device=device).reshape(1, 1, samples, 1).repeat(N, R, 1, 1)
    if not deterministic:
        depths = depths + torch.rand_like(depths) * ((ray_end - ray_start) / (samples - 1))
    return depths


def sample_pdf(bins: torch.Tensor, weights: torch.Tensor, n_samples: int, deterministic: bool,
               eps: float = 1e-5) -> torch.Tensor:
    """Inverse-CDF samples of a piecewise-constant pdf.

    bins [B, K+1] bin edges (only the first K+... edges that the cdf reaches are used, as released),
    weights [B, K]. Returns [B, n_samples]; deterministic uses u evenly spaced in [0, 1].
    """
    B, K = weights.shape
    weights = weights + eps
    pdf = weights / weights.sum(-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, -1)], -1)         # [B, K+1]
    if deterministic:
        u = torch.linspace(0, 1, n_samples, device=bins.device).expand(B, n_samples)
    else:
        u = torch.rand(B, n_samples, device=bins.device)
    u = u.contiguous()
    idx = torch.searchsorted(cdf, u, right=True)
    below = torch.clamp_min(idx - 1, 0)
    above = torch.clamp_max(idx, K)
    pair = torch.stack([below, above], -1).view(B, 2 * n_samples)
    cdf_g = torch.gather(cdf, 1, pair).view(B, n_samples, 2)
    bins_g = torch.gather(bins, 1, pair).view(B, n_samples, 2)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < eps, torch.ones_like(denom), denom)
    return bins_g[..., 0] + (u - cdf_g[..., 0]) / denom * (bins_g[..., 1] - bins_g[..., 0])


def importance_depths(depths: torch.Tensor, weights: torch.Tensor, n_samples: int, deterministic: bool) -> torch.Tensor:
    """[N, R, S, 1] coarse depths and [N, R, S-1, 1] marcher weights -> [N, R, n_samples, 1] fine depths.

    The weights are smoothed (max-pool then average-pool over neighbours, plus 0.01) before
    drawing, as in EG3D, so that empty rays still spread their samples.
    """
    with torch.no_grad():
        N, R, S, _ = depths.shape
        z = depths.reshape(N * R, S)
        w = weights.reshape(N * R, 1, -1).float()
        w = F.avg_pool1d(F.max_pool1d(w, 2, 1, padding=1), 2, 1).squeeze(1) + 0.01
        z_mid = 0.5 * (z[:, :-1] + z[:, 1:])
        fine = sample_pdf(z_mid, w[:, 1:-1], n_samples, deterministic)
    return fine.detach().reshape(N, R, n_samples, 1)


def merge_samples(order: torch.Tensor, colors: torch.Tensor, colors_f: torch.Tensor,
                  own: torch.Tensor | None, own_f: torch.Tensor | None) -> torch.Tensor:
    """The ray marcher's input channels (colors, then ownership if given) of the coarse and fine
    samples, in depth order: [N, R, S, C] + [N, R, S_f, C] (+ [N, R, S(_f), 1]) -> [N, R, S + S_f, C (+1)].

    ``order`` [N, R, S + S_f, 1]: torch.sort's indices of the concatenated depths. The same values
    as concatenating, gathering with the expanded order and appending the ownership channel,
    with one copy into a [N * R * (S + S_f), C (+1)] buffer and one row-wise index_select
    instead of several strided copies and a gather over C. Used with autograd off; training keeps
    the gathers (their backward is what the GPU training path was measured with).
    """
    N, R, S, C = colors.shape
    K = S + colors_f.shape[2]
    width = C + (own is not None)
    both = colors.new_empty((N, R, K, width))
    both[:, :, :S, :C] = colors
    both[:, :, S:, :C] = colors_f
    if own is not None:
        both[:, :, :S, C:] = own
        both[:, :, S:, C:] = own_f
    rows = order.reshape(N * R, K) + torch.arange(0, N * R * K, K, device=order.device).unsqueeze(1)
    return both.reshape(N * R * K, width).index_select(0, rows.reshape(-1)).reshape(N, R, K, width)


def box_crop_mask(points: torch.Tensor, margin: float, box_warp: float) -> torch.Tensor:
    """[N, M, 3] world points -> [N, M, 1] bool, True where |x| or |z| exceeds box_warp/2 - margin
    (released PanoHead / SphereHead crop: density there is set to -1000; y is not cropped)."""
    limit = box_warp / 2 - margin
    return ((points[..., 0].abs() > limit) | (points[..., 2].abs() > limit)).unsqueeze(-1)


class ImportanceRenderer:
    """Renders a feature field along rays. Stateless; options are plain arguments."""

    def __init__(self, ray_start: float, ray_end: float, box_warp: float, box_crop: float = 0.0,
                 white_back: bool = False, density_noise: float = 0.0, disparity_space_sampling: bool = False):
        self.ray_start, self.ray_end, self.box_warp = ray_start, ray_end, box_warp
        self.box_crop, self.white_back, self.density_noise = box_crop, white_back, density_noise
        self.disparity_space_sampling = disparity_space_sampling

    def _run(self, field: Field, decoder, points: torch.Tensor):
        """points [N, M, 3] -> (colors [N, M, C], sigma [N, M, 1], ownership [N, M, 1] or None)."""
        features, ownership = field(points)
        out = decoder(features)
        sigma = out['sigma']
        if self.density_noise > 0:
            sigma = sigma + torch.randn_like(sigma) * self.density_noise
        if self.box_crop:
            sigma = sigma.masked_fill(box_crop_mask(points, self.box_crop, self.box_warp), -1e3)
        return out['rgb'], sigma, (None if ownership is None else ownership.unsqueeze(-1))

    def __call__(self, field: Field, decoder, origins: torch.Tensor, directions: torch.Tensor,
                 depth_resolution: int, depth_resolution_importance: int, deterministic: bool = False) -> RenderResult:
        """origins, directions [N, R, 3] -> RenderResult (see its fields)."""
        N, R, _ = origins.shape
        depths = stratified_depths(N, R, self.ray_start, self.ray_end, depth_resolution, deterministic,
                                   origins.device, self.disparity_space_sampling)
        colors, sigma, own = self._march_inputs(field, decoder, origins, directions, depths)
        if depth_resolution_importance > 0:
            # The weights depend on sigma and depths only: march one colour channel, not all.
            _, _, weights = march_rays(colors[..., :1], sigma, depths)
            fine = importance_depths(depths, weights, depth_resolution_importance, deterministic)
            colors_f, sigma_f, own_f = self._march_inputs(field, decoder, origins, directions, fine)
            depths = torch.cat([depths, fine], dim=-2)
            order = torch.sort(depths, dim=-2).indices
            depths = torch.gather(depths, -2, order)
            sigma = torch.gather(torch.cat([sigma, sigma_f], -2), -2, order)
            same_dtype = all(t is None or t.dtype == colors.dtype for t in (colors_f, own, own_f))
            if not torch.is_grad_enabled() and same_dtype:
                channels = merge_samples(order, colors, colors_f, own, own_f)
                own = None if own is None else channels[..., -1:]
            else:
                colors = torch.gather(torch.cat([colors, colors_f], -2), -2,
                                      order.expand(-1, -1, -1, colors.shape[-1]))
                if own is not None:
                    own = torch.gather(torch.cat([own, own_f], -2), -2, order)
                channels = colors if own is None else torch.cat([colors, own], -1)
        else:
            channels = colors if own is None else torch.cat([colors, own], -1)
        composite, depth, weights = march_rays(channels, sigma, depths)
        opacity = weights.sum(2)
        ownership = None
        if own is not None:
            composite, own_sum = composite[..., :-1], composite[..., -1:]
            own_mid = 0.5 * (own[:, :, :-1] + own[:, :, 1:])
            # Normalise by opacity; empty rays fall back to the plain mean along the ray.
            ownership = (own_sum + 1e-4 * own_mid.mean(2)) / (opacity + 1e-4)
        if self.white_back:
            composite = composite + 1 - opacity
        return RenderResult(composite, depth, opacity, ownership)

    def _march_inputs(self, field, decoder, origins, directions, depths):
        N, R, S, _ = depths.shape
        points = (origins.unsqueeze(-2) + depths * directions.unsqueeze(-2)).reshape(N, R * S, 3)
        colors, sigma, own = self._run(field, decoder, points)
        colors = colors.reshape(N, R, S, -1)
        sigma = sigma.reshape(N, R, S, 1)
        own = None if own is None else own.reshape(N, R, S, 1)
        return colors, sigma, own

"""Gaussian splats made from the generator's own field: points near the surface importance-sampled
from the density, colour from the decoder, opacity from the density, scale from the spacing.

The method (all grids cover the feature box [-box_warp/2, box_warp/2]^3, world units):

1. Coarse pass: the density at the centres of a (res / coarse)^3 grid, turned into the opacity of a
   cell, alpha = 1 - exp(-sigma h) (sigma = softplus(raw - 1), the ray marcher's activation; h the
   cell side), with the renderer's box crop. A cell's weight is alpha times its visibility, the
   largest transmittance that reaches it from outside the box along the six axis directions
   (exclusive cumulative product of 1 - alpha). Cells of weight above ``shell_threshold``, dilated by
   one cell, form the shell around the visible surface.
2. Fine pass: the same on the res^3 grid, evaluated only inside the shell (elsewhere the coarse
   density stands in, which matters only as occlusion). The weight alpha * visibility is the
   volume-rendering weight a ray along the best axis gives the cell: largest on the visible
   surface, falling to zero inside the head and in empty space.
3. ``count`` cells are drawn with probability proportional to the weight by systematic resampling
   (each cell gets the floor or the ceiling of its expected number n), and each draw is placed
   uniformly inside its cell. A draw stands for a volume h^3 / n, so its spacing is s = h n^(-1/3)
   (at most the coarse cell side).
4. At each point: colour = the decoder's colour features turned into RGB as the raw image is
   (toRGB), opacity = 1 - exp(-sigma s) (the opacity of a slab of the field one spacing thick), and
   an isotropic Gaussian of standard deviation ``size`` * s (size 1/sqrt(2 pi): a layer of such
   Gaussians absorbs as the field does, to first order in sigma s).

Rendered by a 3DGS rasteriser with the generator's background behind it, this reproduces the raw
image (see spherehead/export/check.py and docs/export.md for the measured agreement).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from spherehead.export.field import activated_density, crop, density_function, raw_rgb
from spherehead.export.splat_ply import Splats


@dataclass
class SplatConfig:
    """How splats are sampled (see the module docstring)."""
    count: int = 300_000               # splats written
    resolution: int = 256              # fine cells per side of the box
    coarse: int = 4                    # fine cells per coarse cell side (coarse grid: resolution / coarse)
    sphere: str = 'fused'              # 'A', 'B' or 'fused'
    seed: int = 0                      # resampling offset and jitter inside the cells
    size: float = 1 / math.sqrt(2 * math.pi)   # Gaussian standard deviation / spacing
    shell_threshold: float = 1e-3      # coarse cells with a lower weight (before dilation) are not refined
    batch: int = 2 ** 18               # points per decoder call (bounds the memory of one query)

    def validate(self) -> 'SplatConfig':
        if self.count < 1:
            raise ValueError(f'count must be >= 1, got {self.count}')
        if self.coarse < 1 or self.resolution % self.coarse or self.resolution // self.coarse < 4:
            raise ValueError(f'resolution ({self.resolution}) must be a multiple of coarse ({self.coarse}) '
                             f'with at least 4 coarse cells per side')
        if not self.size > 0:
            raise ValueError(f'size must be > 0, got {self.size}')
        return self


def cell_centres(index: torch.Tensor, resolution: int, box: float) -> torch.Tensor:
    """Flat cell indices [M] (x-major: (ix * res + iy) * res + iz) -> centres [M, 3] world units."""
    r = resolution
    ijk = torch.stack([index // (r * r), (index // r) % r, index % r], dim=-1).to(torch.float32)
    return (ijk + 0.5) * (box / r) - box / 2


def visibility(alpha: torch.Tensor) -> torch.Tensor:
    """alpha [R, R, R] -> [R, R, R]: the largest transmittance reaching each cell from outside the grid
    along +-x, +-y, +-z (product of 1 - alpha over the cells in front of it, itself excluded)."""
    out = torch.zeros_like(alpha)
    clear = 1 - alpha
    for dim in range(3):
        for flip in (False, True):
            c = clear.flip(dim) if flip else clear
            t = torch.cumprod(c, dim=dim)
            t = torch.cat([torch.ones_like(t.narrow(dim, 0, 1)), t.narrow(dim, 0, t.shape[dim] - 1)], dim=dim)
            out = torch.maximum(out, t.flip(dim) if flip else t)
    return out


def systematic_resample(weights: torch.Tensor, count: int, generator: torch.Generator) -> torch.Tensor:
    """weights [M] >= 0 (not all 0) -> [count] indices, index i drawn floor or ceil of count w_i / sum w times."""
    cdf = torch.cumsum(weights.double(), 0)
    u = (torch.arange(count, dtype=torch.float64) + torch.rand(1, generator=generator, dtype=torch.float64)) / count
    idx = torch.searchsorted(cdf, u * cdf[-1], right=True)
    return idx.clamp_(max=len(weights) - 1)


class _Query:
    """The raw density at points, in batches, counting them on a progress bar."""

    def __init__(self, density, batch: int, bar):
        self.density, self.batch, self.bar = density, batch, bar

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(points), device=points.device)
        for s in range(0, len(points), self.batch):
            out[s:s + self.batch] = self.density(points[s:s + self.batch]).float()
            self.bar.update(len(points[s:s + self.batch]))
        return out


def make_splats(G, ws: torch.Tensor, cfg: SplatConfig, progress: bool = True) -> Splats:
    """Splats of the head ws [1, num_ws, w_dim] (see the module docstring)."""
    from tqdm import tqdm
    cfg.validate()
    device = ws.device
    box = G.config.rendering.box_warp
    res, k = cfg.resolution, cfg.coarse
    rc = res // k
    h, hc = box / res, box / rc
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.no_grad():
        planes = G.backbone_planes(ws, noise_mode='const')
    density = density_function(G, planes, cfg.sphere)
    with tqdm(total=rc ** 3, desc='splats', unit='pt', unit_scale=True, disable=not progress) as bar, \
            torch.no_grad():
        query = _Query(density, cfg.batch, bar)
        # 1. coarse: find the shell around the visible surface.
        sigma_c = activated_density(query(cell_centres(torch.arange(rc ** 3, device=device), rc, box)))
        sigma_c = sigma_c.reshape(rc, rc, rc)
        alpha_c = 1 - torch.exp(-sigma_c * hc)
        weight_c = alpha_c * visibility(alpha_c)
        shell_c = F.max_pool3d((weight_c > cfg.shell_threshold).float()[None, None], 3, 1, 1)[0, 0] > 0
        coarse_cells = torch.nonzero(shell_c.reshape(-1)).squeeze(1)
        if coarse_cells.numel() == 0:
            raise ValueError(f'the field is empty: no cell is visible and opaque above {cfg.shell_threshold:g}')
        # 2. fine: the density inside the shell; the coarse density stands in elsewhere (occlusion only).
        sub = torch.arange(k ** 3, device=device)
        offs = torch.stack([sub // (k * k), (sub // k) % k, sub % k], dim=-1)       # [k^3, 3]
        ci = torch.stack([coarse_cells // (rc * rc), (coarse_cells // rc) % rc, coarse_cells % rc], dim=-1)
        fi = (ci[:, None, :] * k + offs[None]).reshape(-1, 3)
        fine_cells = (fi[:, 0] * res + fi[:, 1]) * res + fi[:, 2]
        bar.total = rc ** 3 + len(fine_cells) + cfg.count
        bar.refresh()
        sigma = sigma_c.repeat_interleave(k, 0).repeat_interleave(k, 1).repeat_interleave(k, 2).reshape(-1)
        sigma[fine_cells] = activated_density(query(cell_centres(fine_cells, res, box)))
        alpha = (1 - torch.exp(-sigma * h)).reshape(res, res, res)
        del sigma
        weight = (alpha * visibility(alpha)).reshape(-1)[fine_cells]
        del alpha
        if not float(weight.sum()) > 0:
            raise ValueError('the field is empty: no fine cell is visible and opaque')
        # 3. draw cells by weight; a draw's spacing follows from the expected draws in its cell.
        pick = systematic_resample(weight, cfg.count, gen)
        expected = cfg.count * weight[pick].double() / weight.double().sum()
        spacing = (h * expected.pow(-1.0 / 3.0)).clamp(max=hc).float()
        jitter = torch.rand(cfg.count, 3, generator=gen) - 0.5
        positions = cell_centres(fine_cells[pick], res, box) + jitter.to(device) * h
        # 4. colour, opacity and scale at the points.
        rgb = torch.empty(cfg.count, 3, device=device)
        opacity = torch.empty(cfg.count, device=device)
        for s in range(0, cfg.count, cfg.batch):
            p = positions[s:s + cfg.batch]
            out = G.query(planes, p[None], sphere=cfg.sphere)
            raw = crop(G, p[None], out['sigma'])[0, :, 0]
            rgb[s:s + len(p)] = (raw_rgb(G, out['rgb'], ws)[0].float() + 1) / 2
            opacity[s:s + len(p)] = 1 - torch.exp(-activated_density(raw) * spacing[s:s + len(p)])
            bar.update(len(p))
    opacity = opacity.clamp(1e-6, 1 - 1e-6)
    scales = (cfg.size * spacing)[:, None].expand(-1, 3)
    rotations = torch.tensor([[1.0, 0.0, 0.0, 0.0]]).expand(cfg.count, -1)
    return Splats(positions=positions.cpu().numpy().astype(np.float32),
                  rgb=rgb.clamp(0, 1).cpu().numpy().astype(np.float32),
                  opacity=opacity.cpu().numpy().astype(np.float32),
                  scales=scales.cpu().numpy().astype(np.float32),
                  rotations=rotations.numpy().astype(np.float32).copy())

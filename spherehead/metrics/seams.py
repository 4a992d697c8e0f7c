"""Seam and pole score: does a sphere's seam or pole show in the rendered head?

A spherical tri-plane maps angles (theta_n, phi_n) onto its planes. Its seam (phi_n = +-1) is where
the planes' left and right edges meet, and its poles (theta_n = +-1) are where a whole row of the
planes collapses into one point; a single sphere draws a visible line along the seam and a pinched,
swirled patch at the poles, which the dual sphere exists to hide (DESIGN.md; sphere A's seam lies
behind the head, its poles at the ears; sphere B's seam runs down the face, its poles at the top of
the head and under the chin).

The score compares the rendered image across the seam with the image beside it:

- every rendered pixel has an expected surface point (``image_xyz``); from it, each sphere's
  (theta_n, phi_n) are known per pixel;
- **seam ratio** of sphere S: the mean colour difference |I(p) - I(p')| (mean over channels) of the
  pairs of neighbouring foreground pixels (p, p') that lie on the two sides of S's seam, divided by
  the same mean over the pairs of the same direction ``REF_OFFSET`` pixels further on either side
  (beside the seam, not crossing it): like is compared with like, so the image's own gradient
  cancels. Pixels near the poles (|theta_n| > 0.8) are left out, since there every pair
  "crosses" the seam;
- **pole ratio** of S: the mean difference of neighbouring pairs inside the polar caps
  (|theta_n| > 0.9) divided by the mean in the ring around them (0.7 < |theta_n| <= 0.85).

A ratio of 1 means the seam or pole is invisible (the image changes across it as it does beside
it); a sharp line along the seam gives a ratio well above 1. The same statistic computed at the
seam positions of a model that has no sphere (tri-plane, tri-grid) is the noise level of the
measure. Pairs are pooled over all views and seeds before dividing; a ratio with fewer than
``MIN_PAIRS`` pairs on either side is NaN. Depth gets the same ratios (``depth_seam``, ...).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from tqdm import tqdm

from spherehead import camera
from spherehead.render.spherical import spherical_coordinates

SEAM_BAND = 0.75            # |phi_n| above this on both pixels: a pair at the seam (not at phi_n = 0)
REF_OFFSET = 3              # reference pairs for the seam: this many pixels across, on either side
POLE_EXCLUDE = 0.8          # |theta_n| above this: too close to a pole for the seam statistic
POLE_CAP = 0.9              # |theta_n| above this: the polar cap
POLE_RING = (0.7, 0.85)     # reference ring around the cap
MASK_MIN = 0.9              # a pixel counts when its accumulated opacity is at least this
MIN_PAIRS = 20
# Views that look at every seam and pole: front (B's seam), sides (A's poles), back (A's seam),
# from above (B's upper pole). (yaw, pitch) in degrees.
VIEWS = ((0.0, 0.0), (90.0, 0.0), (180.0, 0.0), (270.0, 0.0), (0.0, 60.0))


class SeamStats:
    """Pooled sums of neighbour differences on and beside each sphere's seam and poles."""

    KEYS = ('seam', 'seam_ref', 'pole', 'pole_ref')

    def __init__(self, spheres=('A', 'B')):
        self.spheres = tuple(spheres)
        self.sums = {(s, q, k): 0.0 for s in self.spheres for q in ('image', 'depth') for k in self.KEYS}
        self.counts = {(s, k): 0 for s in self.spheres for k in self.KEYS}

    def add(self, image: torch.Tensor, depth: torch.Tensor, xyz: torch.Tensor, mask: torch.Tensor,
            box_warp: float) -> None:
        """image [N, C, H, W], depth [N, 1, H, W] (world units), xyz [N, 3, H, W] expected surface
        points (world units), mask [N, 1, H, W] opacity in [0, 1]; all at one resolution."""
        image, depth, xyz, mask = (t.detach().float().cpu() for t in (image, depth, xyz, mask))
        fg = mask[:, 0] >= MASK_MIN                                   # [N, H, W]
        points = xyz.permute(0, 2, 3, 1)                              # [N, H, W, 3]
        for s in self.spheres:
            theta, phi, _ = spherical_coordinates(points, box_warp, s)   # [N, H, W] each
            for dim in (1, 2):                                        # vertical and horizontal neighbours
                a, b = _pairs(fg, dim)
                ok = a & b
                ta, tb = _pairs(theta, dim)
                pa, pb = _pairs(phi, dim)
                di = _pairs_diff(image, dim)                          # [N, H', W'] mean |dI| over channels
                dd = _pairs_diff(depth, dim)
                away = (ta.abs() <= POLE_EXCLUDE) & (tb.abs() <= POLE_EXCLUDE)
                crossing = ok & away & ((pa - pb).abs() > 1.0) & (pa.abs() > SEAM_BAND) & (pb.abs() > SEAM_BAND)
                plain = ok & away & ((pa - pb).abs() <= 1.0)
                beside = plain & (_shift(crossing, dim, REF_OFFSET) | _shift(crossing, dim, -REF_OFFSET))
                cap = ok & (ta.abs() > POLE_CAP) & (tb.abs() > POLE_CAP)
                ring = ok & _between(ta.abs(), *POLE_RING) & _between(tb.abs(), *POLE_RING)
                for key, sel in (('seam', crossing), ('seam_ref', beside), ('pole', cap), ('pole_ref', ring)):
                    self.sums[(s, 'image', key)] += float(di[sel].sum())
                    self.sums[(s, 'depth', key)] += float(dd[sel].sum())
                    self.counts[(s, key)] += int(sel.sum())

    def ratios(self) -> dict:
        """{sphere: {'seam', 'pole', 'depth_seam', 'depth_pole': ratio or NaN, 'seam_pairs', 'pole_pairs': count}}."""
        out = {}
        for s in self.spheres:
            r = {}
            for q, prefix in (('image', ''), ('depth', 'depth_')):
                for what in ('seam', 'pole'):
                    n, n_ref = self.counts[(s, what)], self.counts[(s, what + '_ref')]
                    if n < MIN_PAIRS or n_ref < MIN_PAIRS:
                        r[prefix + what] = math.nan
                        continue
                    mean, mean_ref = self.sums[(s, q, what)] / n, self.sums[(s, q, what + '_ref')] / n_ref
                    r[prefix + what] = mean / mean_ref if mean_ref > 0 else math.nan
            r['seam_pairs'], r['pole_pairs'] = self.counts[(s, 'seam')], self.counts[(s, 'pole')]
            out[s] = r
        return out


def _pairs(t: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbouring entries of t [N, H, W] along dim 1 (rows) or 2 (columns)."""
    n = t.shape[dim]
    return t.narrow(dim, 0, n - 1), t.narrow(dim, 1, n - 1)


def _pairs_diff(img: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean absolute difference over channels of neighbours of img [N, C, H, W] -> [N, H', W']."""
    n = img.shape[dim + 1]
    return (img.narrow(dim + 1, 1, n - 1) - img.narrow(dim + 1, 0, n - 1)).abs().mean(dim=1)


def _shift(t: torch.Tensor, dim: int, k: int) -> torch.Tensor:
    """t [N, H, W] moved by k entries along dim (1 or 2), filled with False: entry i of the result is t[i - k]."""
    out = torch.zeros_like(t)
    n = t.shape[dim]
    if abs(k) < n:
        if k >= 0:
            out.narrow(dim, k, n - k).copy_(t.narrow(dim, 0, n - k))
        else:
            out.narrow(dim, 0, n + k).copy_(t.narrow(dim, -k, n + k))
    return out


def _between(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    return (t > lo) & (t <= hi)


@torch.no_grad()
def seam_pole_scores(G, num: int, seed: int = 0, spheres_rendered: tuple[str, ...] = ('fused',),
                     device: str | torch.device = 'cpu', batch_size: int = 8, truncation_psi: float = 0.7,
                     progress: bool = True) -> dict:
    """Seam and pole ratios of generator G over seeds seed .. seed + num - 1 at ``VIEWS``.

    For each rendering mode in ``spheres_rendered`` ('fused' for every model; 'A' and 'B' for
    dual-sphere models) returns ``{mode: SeamStats.ratios()}``, measured at the seams and poles of
    both spheres A and B (for a model without spheres they are the control positions). The raw
    image (neural rendering, [-1, 1]) is compared; conditioning is the frontal camera.
    """
    from spherehead.metrics.sampling import latents
    box = G.config.rendering.box_warp
    stats = {m: SeamStats() for m in spheres_rendered}
    c_front = camera.lookat(0.0, 0.0).to(device)
    bar = tqdm(total=num, desc='seam/pole', unit='seed', disable=not progress, leave=False)
    for start in range(0, num, batch_size):
        seeds = np.arange(start, min(start + batch_size, num)) + seed
        z = latents(G, seeds).to(device)
        ws = G.mapping(z, c_front.expand(len(seeds), -1), truncation_psi=truncation_psi)
        for yaw, pitch in VIEWS:
            c = camera.lookat(yaw, pitch).to(device).expand(len(seeds), -1)
            for mode in spheres_rendered:
                out = G.synthesis(ws, c, sphere=mode, noise_mode='const', deterministic=True)
                stats[mode].add(out['image_raw'], out['image_depth'], out['image_xyz'], out['image_mask'], box)
        bar.update(len(seeds))
    bar.close()
    return {m: s.ratios() for m, s in stats.items()}

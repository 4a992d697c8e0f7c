"""``mirror_score``: how much a head's back view looks like its mirrored front view.

A tri-plane stores one feature per (x, y) for the front and the back of the head alike, so
its typical artifact is a back view that repeats the face, mirrored left-right (a camera at
yaw 180 sees +x on the other side of the image). The score compares the detail of the two:

1. render each seed at yaw 0 and yaw 180 (pitch 0, conditioned on the frontal camera), at
   most 128 px, with the foreground masks;
2. flip the front view left-right; keep only the high frequencies of both grey images (grey
   minus a Gaussian blur of sigma = size / 32), so that shading and colour, which front and
   back share, do not count;
3. Pearson correlation of the two detail images over the pixels inside both foregrounds,
   eroded by 3 sigmas so that the silhouette's edge (the same from the front and the back)
   does not count either;
4. score = the mean correlation over the seeds.

1: the back view is the mirrored front; 0: their details are unrelated. On the synthetic
heads (a true back of the head) it is 0.000; docs/metrics.md has the figures.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from spherehead import camera
from spherehead.metrics.sampling import latents

MAX_SIZE = 128


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """x [N, 1, H, W] blurred with a separable Gaussian (reflect padding)."""
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode='reflect'), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode='reflect'), k.view(1, 1, -1, 1))


def detail(images: torch.Tensor) -> torch.Tensor:
    """images [N, 3, H, W] in [-1, 1] -> high-pass grey [N, 1, H, W] (grey minus its blur, sigma = H / 32)."""
    grey = images.float().mean(1, keepdim=True)
    return grey - _gaussian_blur(grey, images.shape[-1] / 32)


def _prepare(images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(detail [N, 1, S, S], eroded foreground [N, 1, S, S] bool) at S = min(size, 128).

    The foreground (mask > 0.5) is eroded by 3 blur sigmas, so that the silhouette's edge,
    which the high-pass keeps and which front and back views share, does not count.
    """
    size = min(images.shape[-1], MAX_SIZE)
    if images.shape[-1] != size:
        images = F.interpolate(images.float(), size=(size, size), mode='area')
    fg = (F.interpolate(masks.float(), size=(size, size), mode='bilinear', align_corners=False) > 0.5).float()
    r = max(1, int(math.ceil(3 * size / 32)))
    fg = -F.max_pool2d(-F.pad(fg, (r, r, r, r), value=0.0), 2 * r + 1, stride=1)
    return detail(images), fg > 0.5


def correlations(front: torch.Tensor, back: torch.Tensor, front_mask: torch.Tensor, back_mask: torch.Tensor,
                 shift: int = 0) -> torch.Tensor:
    """[N] correlation of mirrored front detail i with back detail (i + shift) mod N (shift != 0:
    pairs of different heads, a chance level).

    front, back: [N, 3, H, W] in [-1, 1]; masks [N, 1, h, w] in [0, 1] (any size; resized).
    Pairs whose common foreground has fewer than 16 pixels give 0.
    """
    fd, fm = _prepare(front.flip(-1), front_mask.flip(-1))
    bd, bm = _prepare(back, back_mask)
    bd, bm = bd.roll(-shift, 0), bm.roll(-shift, 0)
    m = (fm & bm).float()
    n = m.sum((1, 2, 3)).clamp(min=1)
    mean_f = (fd * m).sum((1, 2, 3)) / n
    mean_b = (bd * m).sum((1, 2, 3)) / n
    a = (fd - mean_f[:, None, None, None]) * m
    b = (bd - mean_b[:, None, None, None]) * m
    corr = (a * b).sum((1, 2, 3)) / ((a * a).sum((1, 2, 3)).sqrt() * (b * b).sum((1, 2, 3)).sqrt() + 1e-12)
    return torch.where(m.sum((1, 2, 3)) >= 16, corr, torch.zeros_like(corr))


def score_from_views(front, back, front_mask, back_mask) -> float:
    """The mirror score of N heads given their front and back views (see the module docstring)."""
    return float(correlations(front, back, front_mask, back_mask, 0).mean())


@torch.no_grad()
def render_front_back(G, num: int, seed: int = 0, device: str | torch.device = 'cpu', batch_size: int = 8,
                      progress: bool = True):
    """Front and back views of seeds ``seed .. seed + num - 1``: (front, back [N, 3, H, W] in [-1, 1],
    front_mask, back_mask [N, 1, h, w]) on the CPU, at most 128 px."""
    cond = camera.lookat(0.0, 0.0, device=device)
    out = {k: [] for k in ('front', 'back', 'front_mask', 'back_mask')}
    bar = tqdm(total=num, desc='mirror_score', unit='seed', disable=not progress, leave=False)
    for start in range(0, num, batch_size):
        seeds = np.arange(start, min(start + batch_size, num)) + seed
        z = latents(G, seeds).to(device)
        ws = G.mapping(z, cond, truncation_psi=1.0)
        for name, yaw in (('front', 0.0), ('back', 180.0)):
            c = G.camera_offset(z, camera.lookat(yaw, 0.0, device=device).expand(len(seeds), -1))
            r = G.synthesis(ws, c, noise_mode='const', deterministic=True)
            img = r['image'].float()
            if img.shape[-1] > MAX_SIZE:
                img = F.interpolate(img, size=(MAX_SIZE, MAX_SIZE), mode='area')
            out[name].append(img.clamp(-1, 1).cpu())
            out[name + '_mask'].append(r['image_mask'].float().cpu())
        bar.update(len(seeds))
    bar.close()
    return tuple(torch.cat(out[k]) for k in ('front', 'back', 'front_mask', 'back_mask'))


def mirror_score(G, num: int, seed: int = 0, device: str | torch.device = 'cpu', batch_size: int = 8,
                 progress: bool = True) -> float:
    """The mirror score of ``num`` seeds of generator G."""
    return score_from_views(*render_front_back(G, num, seed, device, batch_size, progress))

"""A reference 3D Gaussian Splatting rasteriser in PyTorch: what a standard splat viewer draws.

It follows the forward pass of the 3DGS CUDA rasteriser (graphdeco-inria/diff-gaussian-rasterization,
read for its rules; this is our own code): EWA projection of each Gaussian's 3D covariance with the
camera's Jacobian (the point's x/z and y/z clamped to 1.3 tan(fov/2) inside the Jacobian), a
low-pass of 0.3 px^2 added to the 2D covariance, a screen extent of 3 standard deviations on
16 x 16 px tiles, Gaussians closer than 0.2 culled, depth order per tile (stable: ties in file
order), per pixel alpha = min(0.99, opacity exp(-d^T conic d / 2)) skipped below 1/255, front-to-back
compositing that stops before transmittance would fall below 1e-4, colour = max(rgb, 0).

Colour is view-independent (spherical-harmonic degree 0); splats with non-zero higher-degree
coefficients are refused. It is a checking tool (CPU, seconds for a 256 px image of a few hundred
thousand splats), not a viewer.

Cameras are EG3D labels (``spherehead.camera.lookat``): cam2world with OpenCV axes and intrinsics
normalised by the image size; pixel (row i, column j) is centred at normalised (u, v) =
((j + 0.5) / W, (i + 0.5) / H), as the generator's rays are.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from spherehead.export.splat_ply import Splats

TILE = 16                 # px per tile side
LOW_PASS = 0.3            # px^2 added to each projected covariance (the viewers' anti-aliasing floor)
ALPHA_MAX = 0.99
ALPHA_MIN = 1.0 / 255.0
T_MIN = 1e-4              # compositing stops before transmittance drops below this
NEAR = 0.2                # world units: closer Gaussians are culled
JACOBIAN_CLAMP = 1.3      # x/z and y/z clamped to this times tan(fov/2) in the Jacobian


def quaternion_matrix(q: torch.Tensor) -> torch.Tensor:
    """[P, 4] quaternions (w, x, y, z), normalised here -> [P, 3, 3] rotation matrices."""
    q = q / q.norm(dim=1, keepdim=True).clamp_min(1e-30)
    w, x, y, z = q.unbind(1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], dim=1).reshape(-1, 3, 3)


def covariance_3d(scales: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """scales [P, 3] (standard deviations, world units), rotations [P, 4] (w, x, y, z) -> [P, 3, 3]
    world covariance R diag(s^2) R^T."""
    m = quaternion_matrix(rotations) * scales[:, None, :]          # R diag(s)
    return m @ m.transpose(1, 2)


@dataclass
class Projected:
    """Per-Gaussian screen data. xy [P, 2] px (pixel centres at integers, x = column), conic [P, 3]
    (a, b, c of the inverse 2D covariance), depth [P] (camera z, world units), radius [P] px,
    tiles [P, 4] (x0, y0, x1, y1; x1, y1 exclusive), visible [P] bool, opacity [P], rgb [P, 3]."""
    xy: torch.Tensor
    conic: torch.Tensor
    depth: torch.Tensor
    radius: torch.Tensor
    tiles: torch.Tensor
    visible: torch.Tensor
    opacity: torch.Tensor
    rgb: torch.Tensor


def splat_tensors(splats: Splats, device='cpu', dtype=torch.float32) -> dict[str, torch.Tensor]:
    """Splats (numpy) -> tensors positions, rgb, opacity, scales, rotations on ``device``."""
    if splats.sh_rest is not None and np.any(splats.sh_rest != 0):
        raise ValueError('the reference rasteriser draws view-independent colour only (SH degree 0); '
                         'these splats have non-zero higher-degree coefficients')
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype, device=device)  # noqa: E731
    return {'positions': t(splats.positions), 'rgb': t(splats.rgb), 'opacity': t(splats.opacity),
            'scales': t(splats.scales), 'rotations': t(splats.rotations)}


def project(s: dict[str, torch.Tensor], c: torch.Tensor, width: int, height: int) -> Projected:
    """Project splat tensors (see ``splat_tensors``) with the camera label c [25] (or [1, 25])
    onto a width x height image."""
    c = c.reshape(-1)[:25].to(s['positions'])
    cam2world, K = c[:16].reshape(4, 4), c[16:25].reshape(3, 3)
    R, t = cam2world[:3, :3], cam2world[:3, 3]
    fx, fy = K[0, 0] * width, K[1, 1] * height
    cx, cy = K[0, 2] * width, K[1, 2] * height
    p = (s['positions'] - t) @ R                                    # camera frame: R^T (p - t), rows
    z = p[:, 2]
    in_front = z > NEAR
    zs = torch.where(in_front, z, torch.ones_like(z))
    xy = torch.stack([fx * p[:, 0] / zs + cx - 0.5, fy * p[:, 1] / zs + cy - 0.5], dim=1)
    # EWA: J W Sigma W^T J^T, J of the perspective map at the (clamped) point.
    lim_x, lim_y = JACOBIAN_CLAMP * width / (2 * fx), JACOBIAN_CLAMP * height / (2 * fy)
    tx = (p[:, 0] / zs).clamp(-lim_x, lim_x) * zs
    ty = (p[:, 1] / zs).clamp(-lim_y, lim_y) * zs
    zero = torch.zeros_like(zs)
    J = torch.stack([fx / zs, zero, -fx * tx / zs ** 2, zero, fy / zs, -fy * ty / zs ** 2], 1).reshape(-1, 2, 3)
    M = J @ R.T                                                     # world -> screen Jacobian
    cov = M @ covariance_3d(s['scales'], s['rotations']) @ M.transpose(1, 2)
    a, b, cc = cov[:, 0, 0] + LOW_PASS, cov[:, 0, 1], cov[:, 1, 1] + LOW_PASS
    det = a * cc - b * b
    ok = in_front & (det != 0)
    det_safe = torch.where(ok, det, torch.ones_like(det))
    conic = torch.stack([cc / det_safe, -b / det_safe, a / det_safe], dim=1)
    mid = 0.5 * (a + cc)
    lam = mid + torch.sqrt(torch.clamp(mid * mid - det, min=0.1))
    radius = torch.ceil(3 * torch.sqrt(lam))
    gx, gy = (width + TILE - 1) // TILE, (height + TILE - 1) // TILE
    x0 = torch.clamp(torch.floor((xy[:, 0] - radius) / TILE), 0, gx)
    y0 = torch.clamp(torch.floor((xy[:, 1] - radius) / TILE), 0, gy)
    x1 = torch.clamp(torch.floor((xy[:, 0] + radius + TILE - 1) / TILE), 0, gx)
    y1 = torch.clamp(torch.floor((xy[:, 1] + radius + TILE - 1) / TILE), 0, gy)
    tiles = torch.stack([x0, y0, x1, y1], dim=1).long()
    visible = ok & ((x1 - x0) * (y1 - y0) > 0)
    return Projected(xy, conic, z, radius, tiles, visible, s['opacity'], s['rgb'].clamp_min(0))


def rasterize(proj: Projected, width: int, height: int, band: int = TILE) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite the projected Gaussians -> (colour [3, H, W] without background, transmittance [H, W]).

    The viewer's image over a background colour b is colour + transmittance * b.

    Evaluated as a list of (pixel, Gaussian) pairs rather than per tile: a Gaussian is paired with the
    pixels of its touched tiles where its alpha can reach 1/255 (inside the ellipse
    d^T conic d <= 2 ln(255 opacity)); the others are skipped by the rules anyway, so the result is
    the same. Pairs are sorted per pixel front to back and composited with a segmented cumulative
    sum of log(1 - alpha) (float64). Rows are done ``band`` at a time to bound memory.
    """
    device, dtype = proj.xy.device, proj.xy.dtype
    color = torch.zeros(3, height * width, device=device, dtype=dtype)
    log_t = torch.zeros(height * width, device=device, dtype=torch.float64)
    reach = torch.log(255.0 * proj.opacity.clamp_min(1e-30))           # 2 ln(255 o) / 2
    ids = torch.nonzero(proj.visible & (reach > 0)).squeeze(1)
    if ids.numel():
        ids = ids[torch.sort(proj.depth[ids], stable=True).indices]      # front to back; ties in file order
        con = proj.conic[ids]
        det = con[:, 0] * con[:, 2] - con[:, 1] ** 2                   # covariance = inverse of the conic
        ext = torch.sqrt(2 * reach[ids])
        half_x, half_y = ext * torch.sqrt(con[:, 2] / det), ext * torch.sqrt(con[:, 0] / det)
        xy = proj.xy[ids]
        x0, y0, x1, y1 = (proj.tiles[ids] * TILE).unbind(1)            # touched tiles in px (x1, y1 exclusive)
        px0 = torch.maximum(torch.ceil(xy[:, 0] - half_x).long(), x0)
        px1 = torch.minimum(torch.floor(xy[:, 0] + half_x).long(), torch.clamp(x1, max=width) - 1)
        py0 = torch.maximum(torch.ceil(xy[:, 1] - half_y).long(), y0)
        py1 = torch.minimum(torch.floor(xy[:, 1] + half_y).long(), torch.clamp(y1, max=height) - 1)
        opacity, rgb = proj.opacity[ids], proj.rgb[ids]
        for r0 in range(0, height, band):
            r1 = min(r0 + band, height)
            a0, a1 = torch.clamp(py0, min=r0), torch.clamp(py1, max=r1 - 1)
            nx, ny = (px1 - px0 + 1).clamp_min(0), (a1 - a0 + 1).clamp_min(0)
            sel = torch.nonzero(nx * ny > 0).squeeze(1)                # still front to back
            if sel.numel() == 0:
                continue
            counts = (nx * ny)[sel]
            owner = torch.repeat_interleave(sel, counts)
            local = torch.arange(len(owner), device=device) - torch.repeat_interleave(
                torch.cumsum(counts, 0) - counts, counts)
            row, col = local // nx[owner], local % nx[owner]
            px, py = px0[owner] + col, a0[owner] + row
            dx, dy = xy[owner, 0] - px.to(dtype), xy[owner, 1] - py.to(dtype)
            c = con[owner]
            power = -0.5 * (c[:, 0] * dx * dx + c[:, 2] * dy * dy) - c[:, 1] * dx * dy
            alpha = torch.clamp(opacity[owner] * torch.exp(power), max=ALPHA_MAX)
            ok = (power <= 0) & (alpha >= ALPHA_MIN)
            pix, owner, alpha = (py * width + px)[ok], owner[ok], alpha[ok]
            order = torch.sort(pix, stable=True).indices                # per pixel, still front to back
            pix, owner, alpha = pix[order], owner[order], alpha[order]
            la = torch.log1p(-alpha.double())
            total = torch.cumsum(la, 0)
            first = torch.ones_like(pix, dtype=torch.bool)
            first[1:] = pix[1:] != pix[:-1]
            start = torch.nonzero(first).squeeze(1)
            seg_len = torch.diff(torch.cat([start, start.new_tensor([len(pix)])]))
            base = torch.repeat_interleave(total[start] - la[start], seg_len)   # sum before each pixel's run
            after = total - base                                                  # log T after this pair
            keep = after >= math.log(T_MIN)                                       # a prefix of each run
            weight = (alpha * torch.exp(after - la).to(dtype)).where(keep, torch.zeros_like(alpha))
            color.index_add_(1, pix, (rgb[owner] * weight[:, None]).T)
            log_t.index_add_(0, pix, la.where(keep, torch.zeros_like(la)))
    return color.reshape(3, height, width), torch.exp(log_t).to(dtype).reshape(height, width)


def render_splats(splats: Splats | dict, c: torch.Tensor, resolution: int, supersample: int = 1,
                  device='cpu') -> tuple[torch.Tensor, torch.Tensor]:
    """Render splats from the camera label c [1, 25] at resolution x resolution.

    supersample k > 1 renders at k x resolution and averages k x k blocks (the view a viewer shows at
    a k times larger window, reduced). Returns (colour [3, res, res] without background, in about
    [0, 1]; alpha [res, res] = 1 - transmittance). A background image b [3, res, res] composites as
    colour + (1 - alpha) * b."""
    s = splats if isinstance(splats, dict) else splat_tensors(splats, device)
    size = resolution * supersample
    with torch.no_grad():
        color, trans = rasterize(project(s, c, size, size), size, size)
    if supersample > 1:
        pool = torch.nn.functional.avg_pool2d
        color = pool(color[None], supersample)[0]
        trans = pool(trans[None, None], supersample)[0, 0]
    return color, 1 - trans

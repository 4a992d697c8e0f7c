"""Camera rays from 25-number labels (EG3D convention, OpenCV camera axes)."""
from __future__ import annotations

import torch

from spherehead.camera import split_label


def pixel_uv(resolution: int, device=None) -> torch.Tensor:
    """[R*R, 2] normalised pixel centres (u = column, v = row) in (0, 1), row-major order."""
    centres = (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) / resolution
    v, u = torch.meshgrid(centres, centres, indexing='ij')
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=-1)


def camera_rays(c: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through the pixel centres of an R x R image.

    c: [N, 25] labels. Returns (origins [N, R*R, 3] world units, unit directions [N, R*R, 3]);
    ray k belongs to pixel (row k // R, column k % R).
    """
    cam2world, intr = split_label(c.float())
    N = c.shape[0]
    fx, fy = intr[:, 0, 0, None], intr[:, 1, 1, None]
    cx, cy, sk = intr[:, 0, 2, None], intr[:, 1, 2, None], intr[:, 0, 1, None]
    uv = pixel_uv(resolution, c.device)
    u, v = uv[None, :, 0], uv[None, :, 1]
    y_cam = (v - cy) / fy
    x_cam = (u - cx + cy * sk / fy - sk * v / fy) / fx
    cam_points = torch.stack([x_cam.expand(N, -1), y_cam.expand(N, -1),
                              torch.ones_like(x_cam).expand(N, -1), torch.ones_like(x_cam).expand(N, -1)], dim=1)
    world_points = torch.bmm(cam2world, cam_points).permute(0, 2, 1)[..., :3]      # [N, M, 3]
    origins = cam2world[:, None, :3, 3].expand_as(world_points)
    directions = torch.nn.functional.normalize(world_points - origins, dim=2)
    return origins.contiguous(), directions

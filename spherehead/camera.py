"""Camera labels in the EG3D / PanoHead convention.

A label ``c`` is 25 floats: the 4x4 cam2world matrix (row-major, OpenCV camera axes:
x right, y down, z forward) followed by the 3x3 intrinsics normalised by the image
size. World axes: front of the head = +z, up = +y, the head's left = +x.
Angles are in degrees at this interface.
"""
from __future__ import annotations

import math

import numpy as np
import torch

RELEASED_FOCAL = 4.2647          # normalised focal length of the released FFHQ / WildHead labels
RELEASED_FOV_DEG = 18.837        # the "FOV" the EG3D tools quote for that focal (a rounding of it)
DEFAULT_RADIUS = 2.7             # cameras sit on a sphere of this radius around the origin
MIRROR_ENTRIES = (1, 2, 3, 4, 8)  # label entries negated by a horizontal flip (mirror across x)


def fov_to_focal(fov_deg: float) -> float:
    """Normalised focal length for a field of view in degrees, as the EG3D tools compute it.

    The released FOV of 18.837 deg maps to the released focal 4.2647 exactly, since that
    FOV is itself a rounding of the focal (the formula alone gives 4.2634).
    """
    if abs(fov_deg - RELEASED_FOV_DEG) < 1e-6:
        return RELEASED_FOCAL
    return 1.0 / (1.414 * math.tan(math.radians(fov_deg) / 2.0))


def intrinsics(focal: float = RELEASED_FOCAL, cx: float = 0.5, cy: float = 0.5) -> np.ndarray:
    """[3, 3] normalised intrinsics."""
    return np.array([[focal, 0.0, cx], [0.0, focal, cy], [0.0, 0.0, 1.0]], dtype=np.float64)


def camera_position(yaw_deg: float, pitch_deg: float, radius: float = DEFAULT_RADIUS) -> np.ndarray:
    """[3] world position of a camera on the sphere of ``radius`` around the origin.

    yaw 0 = in front (+z), 90 = at the head's left (+x), 180 = behind; pitch +90 = above (+y).
    """
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    return radius * np.array([math.cos(pitch) * math.sin(yaw), math.sin(pitch), math.cos(pitch) * math.cos(yaw)])


def lookat_matrix(position: np.ndarray, target: np.ndarray = np.zeros(3)) -> np.ndarray:
    """[4, 4] cam2world (OpenCV axes) of a camera at ``position`` looking at ``target`` with world up +y.

    At the poles (looking straight up or down) the up vector is replaced by -z / +z so the
    image stays upright in the sense of the nearby views.
    """
    position = np.asarray(position, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - position
    forward /= np.linalg.norm(forward)
    up_world = np.array([0.0, 1.0, 0.0])
    if abs(forward @ up_world) > 1 - 1e-9:
        up_world = np.array([0.0, 0.0, -1.0 if forward[1] < 0 else 1.0])
    right = np.cross(forward, up_world)
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, down, forward, position
    return m


def make_label(cam2world: np.ndarray, intr: np.ndarray | None = None) -> np.ndarray:
    """[25] label from a [4, 4] cam2world and [3, 3] normalised intrinsics."""
    intr = intrinsics() if intr is None else intr
    return np.concatenate([np.asarray(cam2world, np.float64).reshape(16), np.asarray(intr, np.float64).reshape(9)])


def lookat(yaw_deg: float = 0.0, pitch_deg: float = 0.0, radius: float = DEFAULT_RADIUS,
           fov_deg: float = RELEASED_FOV_DEG, target=(0.0, 0.0, 0.0),
           device: str | torch.device = 'cpu') -> torch.Tensor:
    """[1, 25] float32 label of a camera orbiting the head and looking at ``target`` (world units)."""
    target = np.asarray(target, dtype=np.float64)
    m = lookat_matrix(camera_position(yaw_deg, pitch_deg, radius) + target, target)
    label = make_label(m, intrinsics(fov_to_focal(fov_deg)))
    return torch.tensor(label, dtype=torch.float32, device=device).unsqueeze(0)


def mirror_label(c):
    """Label of the horizontally mirrored image (mirror across x). [..., 25] tensor or array."""
    out = c.clone() if isinstance(c, torch.Tensor) else np.array(c, dtype=np.float64, copy=True)
    for i in MIRROR_ENTRIES:
        out[..., i] = -out[..., i]
    return out


def label_to_yaw_pitch(c) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Camera yaw and pitch in degrees and distance (world units) for labels [..., 25].

    Inverse of ``camera_position``: yaw in (-180, 180], 0 = front, +90 = at +x.
    """
    c = c.detach().cpu().numpy() if isinstance(c, torch.Tensor) else np.asarray(c, dtype=np.float64)
    pos = c[..., [3, 7, 11]]
    radius = np.linalg.norm(pos, axis=-1)
    yaw = np.degrees(np.arctan2(pos[..., 0], pos[..., 2]))
    pitch = np.degrees(np.arctan2(pos[..., 1], np.hypot(pos[..., 0], pos[..., 2])))
    return yaw, pitch, radius


def split_label(c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, 25] labels -> ([N, 4, 4] cam2world, [N, 3, 3] normalised intrinsics)."""
    return c[:, :16].reshape(-1, 4, 4), c[:, 16:25].reshape(-1, 3, 3)

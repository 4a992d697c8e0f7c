"""The crop and the camera label of a photo, in the EG3D / PanoHead conventions.

Facts this follows (EG3D's in-the-wild preprocessing, with Deep3DFaceRecon):

- the crop is a square centred on where the face model's origin projects, 700 / 300 = 2.333 model units
  (decimetres) wide, not rotated (the roll stays in their camera matrix);
- world units are 0.27 x the face model's, and the camera is moved by (0, 0.006, 0.161) world units
  afterwards, so the face model's origin sits at (0, 0.006, 0.161) in the world and the world origin
  (the point our cameras look at) is 0.596 dm behind it, near the middle of the head.

Our cameras sit at radius 2.7 looking at the world origin with focal 4.2647, so the square they see at the
origin is 2 * 2.7 * 0.5 / 4.2647 = 0.6331 world units = 2.345 dm wide (0.5 % wider than EG3D's 2.333). The
crop is that square, at the head's scale, around the projected world origin (``crop_from_pose``), turned
by the head's roll so that the label needs none (``spherehead.camera.lookat`` has no roll).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spherehead import camera
from spherehead.photo.pose import HeadPose

WORLD_PER_DM = 0.27                                        # world units per face-model unit (EG3D)
MODEL_ORIGIN_IN_WORLD = np.array([0.0, 0.006, 0.161])      # where the face model's origin lies in the world
WORLD_ORIGIN_DM = -MODEL_ORIGIN_IN_WORLD / WORLD_PER_DM     # the world origin in the face model's frame (dm)
CROP_SIDE_WORLD = 2 * camera.DEFAULT_RADIUS * 0.5 / camera.RELEASED_FOCAL   # 0.6331: the view's width at the origin
CROP_SIDE_DM = CROP_SIDE_WORLD / WORLD_PER_DM                # 2.345


@dataclass
class CropBox:
    """A square in the photo: centre (x, y) in photo pixels, side in pixels, angle in degrees (the crop's
    x axis points along (cos angle, sin angle) in the photo, y down; positive = turned clockwise on screen)."""
    center: np.ndarray
    side: float
    angle: float

    def corners(self) -> np.ndarray:
        """[4, 2] photo pixels: top-left, top-right, bottom-right, bottom-left of the crop."""
        a = math.radians(self.angle)
        ex, ey = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
        h = self.side / 2
        return np.stack([self.center + h * (sx * ex + sy * ey) for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1))])

    def affine(self, size: int) -> np.ndarray:
        """[2, 3] map from a size x size output's pixel coordinates to photo pixel coordinates."""
        from spherehead.photo.models import square_affine
        return square_affine(self.center, self.side, math.radians(self.angle), size)

    def to_dict(self) -> dict:
        return {'center': [round(float(v), 3) for v in self.center], 'side': round(float(self.side), 3),
                'angle': round(float(self.angle), 3)}


def project_label(label: np.ndarray, points_world: np.ndarray) -> np.ndarray:
    """[N, 2] normalised image coordinates (0..1, x right, y down) of world points [N, 3] seen by a label's
    perspective camera (cam2world + normalised intrinsics)."""
    c2w, intr = label[:16].reshape(4, 4), label[16:25].reshape(3, 3)
    cam = (np.asarray(points_world, np.float64) - c2w[:3, 3]) @ c2w[:3, :3]      # world -> camera (OpenCV)
    uvw = cam @ intr.T
    return uvw[:, :2] / uvw[:, 2:3]


def crop_from_pose(pose: HeadPose) -> CropBox:
    """The crop for ``pose``: the square of CROP_SIDE_DM at the head's scale around the projected world origin,
    turned by the roll.

    This frames the face as EG3D's crop does (the face measured at its own scale, as if it were at the camera's
    distance): a standard face's eyes are 0.265 of the crop apart (EG3D: 0.266). The label's perspective
    camera, 2.7 from the origin, sees the face (~0.2 world units in front of the origin) about 8 % larger;
    EG3D's labels carry the same offset (their cameras are moved to 2.7 from (0, 0, 0.175) after the fit)
    and released models are trained with it."""
    return CropBox(pose.project(WORLD_ORIGIN_DM), pose.scale * CROP_SIDE_DM, pose.roll)


def centre_square(width: int, height: int) -> CropBox:
    """The largest square in the middle of a photo (for photos without a face, with a yaw given)."""
    side = float(min(width, height))
    return CropBox(np.array([width / 2, height / 2]), side, 0.0)


def label_from_angles(yaw: float, pitch: float) -> np.ndarray:
    """[25] label: cam2world of a camera at radius 2.7 looking at the origin from (yaw, pitch) degrees, OpenCV
    axes, then the released intrinsics (focal 4.2647, principal point 0.5)."""
    m = camera.lookat_matrix(camera.camera_position(yaw, pitch, camera.DEFAULT_RADIUS))
    return camera.make_label(m, camera.intrinsics())

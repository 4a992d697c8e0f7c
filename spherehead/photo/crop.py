"""The crop and the camera label of a photo, in the EG3D / PanoHead conventions.

Facts this follows (EG3D's in-the-wild preprocessing, with Deep3DFaceRecon):

- the crop is a square centred on where the face model's origin projects, 700 / 300 = 2.333 model units
  (decimetres) wide, not rotated (the roll stays in their camera matrix);
- world units are 0.27 x the face model's, and the camera is moved by (0, 0.006, 0.161) world units
  afterwards, so the face model's origin sits at (0, 0.006, 0.161) in the world and the world origin
  (the point our cameras look at) is 0.596 dm behind it, near the middle of the head.

Our cameras sit at radius 2.7 looking at the world origin with focal 4.2647, so the square they see at the
origin is 2 * 2.7 * 0.5 / 4.2647 = 0.6331 world units = 2.345 dm wide (0.5 % wider than EG3D's 2.333). The
crop is fitted so that the face's landmarks land where the label's perspective camera sees them
(``crop_from_pose``): about that square around the projected world origin, turned by the head's roll so
that the label needs none (``spherehead.camera.lookat`` has no roll).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from spherehead import camera
from spherehead.photo.pose import STANDARD_5, HeadPose

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


def _similarity_2d(src: np.ndarray, dst: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Least-squares ``dst ~ s R(angle) src + t`` for 2-D points [N, 2]: (s, angle in radians, t [2])."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    zs, zd = a[:, 0] + 1j * a[:, 1], b[:, 0] + 1j * b[:, 1]
    k = (np.conj(zs) * zd).sum() / (np.abs(zs) ** 2).sum()                      # complex scale-rotation
    s, angle = abs(k), float(np.angle(k))
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return float(s), angle, mu_d - s * rot @ mu_s


def crop_from_pose(pose: HeadPose) -> CropBox:
    """The crop that the label of ``pose`` describes.

    The label's camera (radius 2.7, focal 4.2647, looking at the origin) sees the five standard landmarks of
    the posed head at some image positions; the crop is the square (centre, side, turn) of the photo that puts
    the same landmarks, as the pose fit places them in the photo, at those positions (least squares). Under
    a weak-perspective photo this is the square of side CROP_SIDE_DM around the projected world origin,
    except that it is ~8 % tighter: the face lies ~0.2 world units in front of the origin, where the label's
    perspective camera magnifies it by 2.7 / 2.5."""
    label = label_from_angles(pose.yaw, pose.pitch)
    uv = project_label(label, WORLD_PER_DM * STANDARD_5 + MODEL_ORIGIN_IN_WORLD)
    photo = np.stack([pose.project(p) for p in STANDARD_5])
    scale, angle, offset = _similarity_2d(uv, photo)                   # crop [0, 1] coordinates -> photo px
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return CropBox(rot @ np.array([0.5, 0.5]) * scale + offset, scale, math.degrees(angle))


def centre_square(width: int, height: int) -> CropBox:
    """The largest square in the middle of a photo (for photos without a face, with a yaw given)."""
    side = float(min(width, height))
    return CropBox(np.array([width / 2, height / 2]), side, 0.0)


def label_from_angles(yaw: float, pitch: float) -> np.ndarray:
    """[25] label: cam2world of a camera at radius 2.7 looking at the origin from (yaw, pitch) degrees, OpenCV
    axes, then the released intrinsics (focal 4.2647, principal point 0.5)."""
    m = camera.lookat_matrix(camera.camera_position(yaw, pitch, camera.DEFAULT_RADIUS))
    return camera.make_label(m, camera.intrinsics())

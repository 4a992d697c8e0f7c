"""Head pose from face landmarks, in the EG3D / Deep3DFaceRecon frame.

The frame of the released FFHQ / PanoHead labels is the Basel Face Model's as Deep3DFaceRecon uses it
(units: decimetres; x = the head's left, y = up, z = out of the face). Its five standard landmarks
(``STANDARD_5``, facts from Deep3DFaceRecon's ``load_lm3d``: the eye centres, the nose tip and the mouth
corners of the mean face) fix where "frontal" is. We take the same five points from the face mesh's 3D
landmarks and fit a similarity transform (rotation, scale, translation) onto them; the rotation is the
head pose.

Angles, in degrees, say where the camera is as seen from the head (``spherehead.camera`` conventions):
yaw 0 = in front, +90 = at the head's left (+x); pitch +90 = above; roll = how far the head's up axis
leans in the photo, positive = its top towards the photo's right (clockwise on screen).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Face mesh (MediaPipe, 468 points) indices; "right"/"left" are the subject's own sides.
EYE_CORNERS = ((33, 133), (362, 263))       # (outer, inner) of the right eye, (inner, outer) of the left eye
NOSE_TIP = 1
MOUTH_CORNERS = (61, 291)                   # right, left

# The five standard landmarks (dm, BFM frame): right eye centre, left eye centre, nose tip, right and left
# mouth corner (the subject's sides; x = the head's left), as Deep3DFaceRecon gives them ...
_STANDARD_5_AS_GIVEN = np.array([[-0.3115, 0.2904, 0.1338],
                                 [0.3098, 0.2897, 0.1318],
                                 [0.0033, -0.0462, 0.5524],
                                 [-0.2522, -0.3813, 0.2241],
                                 [0.2485, -0.3813, 0.2224]])
# ... made exactly symmetric (averaged with its mirror image; they differ by under 2 mm), so that a mirrored
# photo gets exactly the opposite yaw and roll (with the given points the yaw would be biased by ~0.3 deg).
MIRROR_5 = [1, 0, 2, 4, 3]
# The pose is fitted to the eyes and the nose tip only: the mouth corners move with the expression (the broad
# smile of skimage's astronaut lifts them 1.5 cm above the standard face, which tilts a five-point fit's pitch
# by 7 degrees). Deep3DFaceRecon, which made the released labels, models expressions and is not misled so.
RIGID_5 = [0, 1, 2]
STANDARD_5 = (_STANDARD_5_AS_GIVEN + _STANDARD_5_AS_GIVEN[MIRROR_5] * np.array([-1.0, 1.0, 1.0])) / 2


def five_points(mesh: np.ndarray) -> np.ndarray:
    """[5, 3] from a face mesh [468, 3]: the STANDARD_5 points (eye centre = mean of its two corners)."""
    return np.stack([mesh[list(EYE_CORNERS[0])].mean(0), mesh[list(EYE_CORNERS[1])].mean(0), mesh[NOSE_TIP],
                     mesh[MOUTH_CORNERS[0]], mesh[MOUTH_CORNERS[1]]])


def umeyama(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ s R src + t`` for point sets [N, 3] (Umeyama 1991): (s, R [3, 3], t [3])."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2] = -1
    rot = u @ np.diag(sign) @ vt
    scale = float((d * sign).sum() / (a ** 2).sum() * len(src))
    return scale, rot, mu_d - scale * rot @ mu_s


@dataclass
class HeadPose:
    """A head in a photo. rotation: [3, 3] from the BFM frame to the camera frame (x right, y up, z towards
    the viewer); scale: photo pixels per decimetre; translation: [3] where the BFM origin lands (photo px,
    y up, so the photo row is -translation[1]); yaw, pitch, roll in degrees (module doc)."""
    rotation: np.ndarray
    scale: float
    translation: np.ndarray
    yaw: float
    pitch: float
    roll: float
    fit_error: float                       # RMS distance of the 5 points after the fit, in dm

    def project(self, point_bfm) -> np.ndarray:
        """[2] photo pixel (x right, y down) of a point given in the BFM frame (dm)."""
        p = self.scale * self.rotation @ np.asarray(point_bfm, dtype=np.float64) + self.translation
        return np.array([p[0], -p[1]])


def angles(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a head rotation [3, 3] (BFM frame -> camera frame, y up)."""
    view = rotation.T @ np.array([0.0, 0.0, 1.0])          # the direction to the camera, in the head's frame
    yaw = math.degrees(math.atan2(view[0], view[2]))
    pitch = math.degrees(math.atan2(view[1], math.hypot(view[0], view[2])))
    up = rotation[:, 1]                                     # the head's up axis, in the camera frame
    roll = math.degrees(math.atan2(up[0], up[1]))
    return yaw, pitch, roll


def pose_from_points(points: np.ndarray) -> HeadPose:
    """HeadPose from the five points [5, 3] (STANDARD_5 order) in photo pixels, x right, y up, z towards the
    viewer: the similarity transform that best maps the rigid ones of STANDARD_5 onto them (fit_error: the RMS
    distance of all five after it, in dm; large for a broad smile or an open mouth)."""
    scale, rot, trans = umeyama(STANDARD_5[RIGID_5], points[RIGID_5])
    err = float(np.sqrt((((scale * STANDARD_5 @ rot.T + trans) - points) ** 2).sum(1).mean())) / scale
    return HeadPose(rot, scale, trans, *angles(rot), fit_error=err)


def mesh_to_points(mesh: np.ndarray) -> np.ndarray:
    """The five points [5, 3] of a face mesh [468, 3] (photo pixels, y down, z larger = farther), turned to
    x right, y up, z towards the viewer."""
    return five_points(mesh) * np.array([1.0, -1.0, -1.0])


def pose_from_mesh(mesh: np.ndarray) -> HeadPose:
    """HeadPose from one face mesh [468, 3] (photo pixels, y down, z larger = farther)."""
    return pose_from_points(mesh_to_points(mesh))


def pose_from_angles(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """[3, 3] head rotation (BFM -> camera, y up) for the given angles (inverse of ``angles``)."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    # camera direction in the head frame, then a camera basis with the head's up projected to screen-up
    view = np.array([math.cos(p) * math.sin(y), math.sin(p), math.cos(p) * math.cos(y)])
    right = np.cross(np.array([0.0, 1.0, 0.0]), view)
    right /= np.linalg.norm(right)
    up = np.cross(view, right)
    world_to_cam = np.stack([right, up, view])              # rows: camera axes in the head frame
    c, s = math.cos(r), math.sin(r)
    spin = np.array([[c, s, 0], [-s, c, 0], [0, 0, 1.0]])    # screen rotation so the head's top leans right
    return spin @ world_to_cam

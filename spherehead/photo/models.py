"""The three shipped photo models, run with PyTorch: face detector, face mesh, person segmenter.

All three are MediaPipe models (Apache-2.0) taken unchanged from the mediapipe 0.10.21 wheel
(see ``spherehead/assets/MEDIAPIPE_MODELS.md``); ``spherehead.photo.tflite`` runs them.

Coordinates: photo pixels, x right, y down, continuous (the centre of pixel (row i, column j) is
(j + 0.5, i + 0.5)). Images are uint8 ``[H, W, 3]`` RGB arrays.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spherehead.errors import UserError
from spherehead.photo.tflite import Runner, load_model

ASSETS = Path(__file__).resolve().parents[1] / 'assets'
DETECTOR_FILE = 'mediapipe_face_detection_short_range.tflite'
MESH_FILE = 'mediapipe_face_landmark.tflite'
SEGMENTER_FILE = 'mediapipe_selfie_segmentation.tflite'

DETECTOR_SIZE = 128            # BlazeFace short-range input, [-1, 1] RGB
DETECTOR_STRIDES = (8, 16, 16, 16)
DETECTOR_MIN_SCORE = 0.5
DETECTOR_NMS_IOU = 0.3
MESH_SIZE = 192                # face mesh input, [0, 1] RGB
MESH_ROI_SCALE = 1.5           # the face mesh's input square is 1.5x the face box (MediaPipe's value)
MESH_POINTS = 468
SEGMENTER_SIZE = 256           # selfie segmentation input, [0, 1] RGB


@lru_cache(maxsize=None)
def _runner(filename: str) -> Runner:
    try:
        data = (ASSETS / filename).read_bytes()
    except OSError:
        raise UserError(f'the shipped model spherehead/assets/{filename} is missing; reinstall spherehead '
                        f'(git checkout restores it)') from None
    return Runner(load_model(data, filename))


# ----------------------------------------------------------------------------- warping

def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [1, 3, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255.0


def warp(image: torch.Tensor, affine: np.ndarray, size: int, mode: str = 'bilinear') -> torch.Tensor:
    """Sample a ``size`` x ``size`` image through an affine map.

    image: [1, C, H, W] float. affine: [2, 3] mapping output pixel coordinates (continuous, pixel centres at
    +0.5) to source pixel coordinates. Outside the source is 0. When one output pixel covers several source
    pixels the source is first shrunk with an anti-aliased resize, so the result does not alias.
    Returns [1, C, size, size].
    """
    a = np.asarray(affine, dtype=np.float64)
    step = math.sqrt(abs(np.linalg.det(a[:, :2])))          # source pixels per output pixel
    h, w = image.shape[2], image.shape[3]
    if step > 1.5:
        f = 1.0 / step
        nh, nw = max(1, round(h * f)), max(1, round(w * f))
        image = F.interpolate(image, size=(nh, nw), mode='bilinear', antialias=True, align_corners=False)
        scale = np.diag([nw / w, nh / h])
        a = np.concatenate([scale @ a[:, :2], (scale @ a[:, 2:])], axis=1)
        h, w = nh, nw
    u = torch.arange(size, dtype=torch.float64) + 0.5
    gy, gx = torch.meshgrid(u, u, indexing='ij')
    sx = a[0, 0] * gx + a[0, 1] * gy + a[0, 2]
    sy = a[1, 0] * gx + a[1, 1] * gy + a[1, 2]
    grid = torch.stack([2 * sx / w - 1, 2 * sy / h - 1], dim=-1)[None].float()
    out = F.grid_sample(image, grid, mode=mode, padding_mode='zeros', align_corners=False)
    return out.clamp(0, 1) if mode == 'bicubic' else out


def square_affine(center, side: float, angle: float, size: int) -> np.ndarray:
    """[2, 3] map from a ``size`` x ``size`` output to a square of ``side`` photo pixels centred at ``center``,
    rotated by ``angle`` radians (the output's x axis points along (cos angle, sin angle) in the photo)."""
    k = side / size
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]]) * k
    offset = np.asarray(center, dtype=np.float64) - rot @ np.array([size / 2, size / 2])
    return np.concatenate([rot, offset[:, None]], axis=1)


# ----------------------------------------------------------------------------- face detection

@dataclass
class Detection:
    """One face found by the detector. box: [4] x0, y0, x1, y1; keypoints: [6, 2] (the subject's right eye,
    left eye, nose tip, mouth centre, right ear tragion, left ear tragion), photo pixels; score in [0, 1]."""
    box: np.ndarray
    keypoints: np.ndarray
    score: float

    @property
    def area(self) -> float:
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))


@lru_cache(maxsize=None)
def _anchors() -> np.ndarray:
    """[896, 2] anchor centres of the short-range detector in [0, 1] input coordinates (all of size 1).

    SSD anchors as MediaPipe builds them: layers of equal stride share one grid, two anchors per layer
    and cell, row-major over the grid."""
    out = []
    i = 0
    while i < len(DETECTOR_STRIDES):
        stride, n = DETECTOR_STRIDES[i], 0
        while i < len(DETECTOR_STRIDES) and DETECTOR_STRIDES[i] == stride:
            n += 2
            i += 1
        cells = DETECTOR_SIZE // stride
        for y in range(cells):
            for x in range(cells):
                out += [((x + 0.5) / cells, (y + 0.5) / cells)] * n
    return np.array(out, dtype=np.float64)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box a [4] against boxes b [N, 4]."""
    x0, y0 = np.maximum(a[0], b[:, 0]), np.maximum(a[1], b[:, 1])
    x1, y1 = np.minimum(a[2], b[:, 2]), np.minimum(a[3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: (r[..., 2] - r[..., 0]) * (r[..., 3] - r[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-12)


def detect_faces(image: np.ndarray, min_score: float = DETECTOR_MIN_SCORE) -> list[Detection]:
    """Faces in an RGB photo uint8 [H, W, 3], largest first.

    The photo is padded to a square (centred) and shrunk to 128 x 128, so this finds faces that fill a
    fair part of the photo (the short-range model: faces within about 2 m of the camera)."""
    h, w = image.shape[:2]
    side = float(max(h, w))
    affine = square_affine((w / 2, h / 2), side, 0.0, DETECTOR_SIZE)
    x = warp(to_tensor(image), affine, DETECTOR_SIZE) * 2 - 1               # [1, 3, 128, 128] in [-1, 1]
    raw, logits = _runner(DETECTOR_FILE)(x.permute(0, 2, 3, 1))
    raw = raw[0].double().numpy() / DETECTOR_SIZE                          # [896, 16] in input units
    scores = 1 / (1 + np.exp(-np.clip(logits[0, :, 0].double().numpy(), -100, 100)))
    anchors = _anchors()
    keep = np.nonzero(scores >= min_score)[0]
    if len(keep) == 0:
        return []
    raw, scores, anchors = raw[keep], scores[keep], anchors[keep]
    cx, cy = raw[:, 0] + anchors[:, 0], raw[:, 1] + anchors[:, 1]
    boxes = np.stack([cx - raw[:, 2] / 2, cy - raw[:, 3] / 2, cx + raw[:, 2] / 2, cy + raw[:, 3] / 2], axis=1)
    kps = raw[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
    # weighted non-maximum suppression (MediaPipe's): overlapping boxes are averaged by score
    order = np.argsort(-scores)
    found = []
    while len(order):
        ious = _iou(boxes[order[0]], boxes[order])
        group = order[ious > DETECTOR_NMS_IOU]
        wts = scores[group][:, None]
        box = (boxes[group] * wts).sum(0) / wts.sum()
        kp = (kps[group] * wts[:, :, None]).sum(0) / wts.sum()
        found.append((box, kp, float(scores[order[0]])))
        order = order[ious <= DETECTOR_NMS_IOU]
    # input units [0, 1] of the padded square -> photo pixels
    to_photo = lambda p: p * side + np.array([(w - side) / 2, (h - side) / 2])  # noqa: E731
    dets = [Detection(np.concatenate([to_photo(b[:2]), to_photo(b[2:])]), to_photo(k), s) for b, k, s in found]
    return sorted(dets, key=lambda d: -d.area)


# ----------------------------------------------------------------------------- face mesh

@dataclass
class MeshRoi:
    """The square the face mesh looks at: centre (photo px), side (px), angle (radians, eye line)."""
    center: np.ndarray
    side: float
    angle: float


def roi_from_detection(det: Detection) -> MeshRoi:
    """MediaPipe's rule: the detection box centre, its longer side x 1.5, rotated so the eyes are level."""
    (x0, y0, x1, y1), eyes = det.box, det.keypoints[:2]
    d = eyes[1] - eyes[0]
    return MeshRoi(np.array([(x0 + x1) / 2, (y0 + y1) / 2]), max(x1 - x0, y1 - y0) * MESH_ROI_SCALE,
                   math.atan2(d[1], d[0]))


def roi_from_landmarks(points: np.ndarray) -> MeshRoi:
    """A second look, from a first mesh [468, 3]: the landmarks' box in the eye-aligned frame, x 1.5."""
    from spherehead.photo.pose import EYE_CORNERS
    right, left = points[list(EYE_CORNERS[0]), :2].mean(0), points[list(EYE_CORNERS[1]), :2].mean(0)
    angle = math.atan2(left[1] - right[1], left[0] - right[0])
    c, s = math.cos(angle), math.sin(angle)
    local = points[:, :2] @ np.array([[c, -s], [s, c]])                 # rotate by -angle
    lo, hi = local.min(0), local.max(0)
    centre = np.array([[c, -s], [s, c]]) @ ((lo + hi) / 2)
    return MeshRoi(centre, float(max(hi - lo)) * MESH_ROI_SCALE, angle)


def face_mesh(image: np.ndarray, roi: MeshRoi, source: torch.Tensor | None = None) -> tuple[np.ndarray, float]:
    """468 face landmarks [468, 3] in photo pixels (x right, y down, z: depth in pixels, larger = farther from
    the camera, 0 near the face's centre) and the model's face presence probability."""
    affine = square_affine(roi.center, roi.side, roi.angle, MESH_SIZE)
    x = warp(to_tensor(image) if source is None else source, affine, MESH_SIZE)
    raw, flag = _runner(MESH_FILE)(x.permute(0, 2, 3, 1))
    pts = raw.reshape(MESH_POINTS, 3).double().numpy()
    xy = (affine[:, :2] @ pts[:, :2].T).T + affine[:, 2]
    z = pts[:, 2] * (roi.side / MESH_SIZE)
    return np.concatenate([xy, z[:, None]], axis=1), float(torch.sigmoid(flag.reshape(())).item())


# ----------------------------------------------------------------------------- segmentation

def segment_person(crop: np.ndarray) -> np.ndarray:
    """Foreground probability of a square portrait crop uint8 [R, R, 3] -> float32 [R, R] in [0, 1]."""
    r = crop.shape[0]
    x = to_tensor(crop)
    x = F.interpolate(x, size=(SEGMENTER_SIZE, SEGMENTER_SIZE), mode='bilinear', antialias=True, align_corners=False)
    (prob,) = _runner(SEGMENTER_FILE)(x.permute(0, 2, 3, 1))
    prob = F.interpolate(prob.permute(0, 3, 1, 2), size=(r, r), mode='bilinear', align_corners=False)
    return prob[0, 0].clamp(0, 1).numpy()

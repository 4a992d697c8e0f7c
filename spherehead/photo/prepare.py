"""One photo -> crop, camera label, mask and preview; many photos -> a dataset folder.

``prepare_photo`` does the work for one decoded photo; ``read_photo`` decodes a file (EXIF orientation
applied); ``PhotoDatasetWriter`` writes the results as a dataset that ``train.py --data`` and
``spherehead invert --data`` read (``docs/photos.md``).
"""
from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from spherehead.errors import UserError
from spherehead.photo import models
from spherehead.photo.crop import CropBox, centre_square, crop_from_pose, label_from_angles
from spherehead.photo.pose import MIRROR_5, HeadPose, mesh_to_points, pose_from_points

PHOTO_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')
MIN_FACE_PRESENCE = 0.5          # the face mesh's own "this is a face" probability


class PhotoRefused(UserError):
    """This photo cannot be prepared (no face, unreadable); the others go on."""


@dataclass
class PrepareOptions:
    """resolution: side of the written crops (px). yaw / pitch: the camera (degrees) for photos in which no
    face is found (a back-of-head photo); None refuses them. masks / previews: also write those."""
    resolution: int = 512
    yaw: float | None = None
    pitch: float = 0.0
    masks: bool = True
    previews: bool = True


@dataclass
class PhotoResult:
    """What ``prepare_photo`` made of one photo.

    image: uint8 [R, R, 3] crop; mask: uint8 [R, R] (0 = background, 255 = person) or None; label: [25];
    yaw / pitch / roll in degrees; pose_from: 'face' (estimated) or 'given' (--yaw); faces: how many the
    detector found (the largest is used); landmarks: [468, 3] photo pixels or None; box: the crop in the photo.
    """
    image: np.ndarray
    mask: np.ndarray | None
    label: np.ndarray
    yaw: float
    pitch: float
    roll: float
    pose_from: str
    faces: int
    box: CropBox
    score: float | None = None
    landmarks: np.ndarray | None = None
    detection: models.Detection | None = None
    fit_error: float | None = None
    preview: np.ndarray | None = None

    def report(self) -> dict:
        """The per-photo record written to prepare.json."""
        r = {'yaw': round(self.yaw, 3), 'pitch': round(self.pitch, 3), 'roll': round(self.roll, 3),
             'pose_from': self.pose_from, 'faces_found': self.faces, 'crop': self.box.to_dict()}
        if self.score is not None:
            r['detector_score'] = round(self.score, 4)
        if self.fit_error is not None:
            r['landmark_fit_rms_dm'] = round(self.fit_error, 4)
        return r


def read_photo(path: str) -> np.ndarray:
    """Decode a photo file to uint8 [H, W, 3] RGB, turned upright by its EXIF orientation.

    Raises PhotoRefused (one line) for an unreadable or truncated file."""
    from PIL import Image, ImageOps, UnidentifiedImageError
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except OSError as e:
        raise PhotoRefused(f'{path}: cannot read ({e.strerror or e}); check the path and its permissions') from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            arr = np.array(im.convert('RGB'))
    except UnidentifiedImageError:
        raise PhotoRefused(f'{path}: not an image Pillow can read; re-export it as JPEG or PNG') from None
    except Exception as e:  # noqa: BLE001 - decoders raise many types for corrupt data
        raise PhotoRefused(f'{path}: unreadable or truncated image ({type(e).__name__}: {e}); re-export it '
                           f'as JPEG or PNG') from None
    if arr.shape[0] < 16 or arr.shape[1] < 16:
        raise PhotoRefused(f'{path}: {arr.shape[1]}x{arr.shape[0]} pixels is too small to find a face; use a '
                           f'larger photo')
    return arr


def _mirror_detection(det: models.Detection, width: int) -> models.Detection:
    """The detection as it is in the mirrored photo (x -> width - x, the subject's sides swapped)."""
    x0, y0, x1, y1 = det.box
    kp = det.keypoints.copy()
    kp[:, 0] = width - kp[:, 0]
    return models.Detection(np.array([width - x1, y0, width - x0, y1]), kp[[1, 0, 2, 3, 5, 4]], det.score)


def _symmetric_detection(photo: np.ndarray, dets: list[models.Detection]) -> models.Detection:
    """The largest face, averaged with the same face found in the mirrored photo (mapped back), so that a
    mirrored photo gives exactly the mirrored detection."""
    width = photo.shape[1]
    det = dets[0]
    back = [_mirror_detection(d, width) for d in models.detect_faces(np.ascontiguousarray(photo[:, ::-1]))]
    ious = [float(models._iou(det.box, b.box[None])[0]) for b in back]
    if not back or max(ious) < 0.3:
        return det
    other = back[int(np.argmax(ious))]
    return models.Detection((det.box + other.box) / 2, (det.keypoints + other.keypoints) / 2,
                            min(det.score, other.score))


def estimate_pose(photo: np.ndarray, det: models.Detection) -> tuple[HeadPose, np.ndarray, float]:
    """Head pose of a detected face, its landmarks [468, 3] and the mesh's face presence probability.

    The five landmarks are measured in the photo and in its mirror image (mapped back) and averaged; with
    a symmetric detection (``_symmetric_detection``) a mirrored photo then gives exactly the mirrored pose
    (yaw and roll change sign, pitch stays)."""
    width = photo.shape[1]
    src = models.to_tensor(photo)
    mesh, presence = models.face_mesh(photo, models.roi_from_detection(det), source=src)
    mesh_m, presence_m = models.face_mesh(photo, models.roi_from_detection(_mirror_detection(det, width)),
                                          source=torch.flip(src, dims=[3]))
    mesh_m[:, 0] = width - mesh_m[:, 0]                             # back to the photo's x
    five_m = mesh_to_points(mesh_m)[MIRROR_5]                       # the mirror's right eye is the left one
    pose = pose_from_points((mesh_to_points(mesh) + five_m) / 2)
    return pose, mesh, min(presence, presence_m)


def prepare_photo(photo: np.ndarray, options: PrepareOptions, name: str = 'photo') -> PhotoResult:
    """Crop, label, mask and preview of one photo uint8 [H, W, 3]. Raises PhotoRefused when no face is found
    and no yaw is given."""
    h, w = photo.shape[:2]
    dets = models.detect_faces(photo)
    res = options.resolution
    if dets:
        det = _symmetric_detection(photo, dets)
        pose, mesh, presence = estimate_pose(photo, det)
        if presence < MIN_FACE_PRESENCE:
            dets = []
    if dets:
        box = crop_from_pose(pose)
        result = PhotoResult(image=np.zeros(0), mask=None, label=label_from_angles(pose.yaw, pose.pitch),
                             yaw=pose.yaw, pitch=pose.pitch, roll=pose.roll, pose_from='face', faces=len(dets),
                             box=box, score=det.score, landmarks=mesh, detection=det, fit_error=pose.fit_error)
    elif options.yaw is not None:
        box = centre_square(w, h)
        result = PhotoResult(image=np.zeros(0), mask=None, label=label_from_angles(options.yaw, options.pitch),
                             yaw=options.yaw, pitch=options.pitch, roll=0.0, pose_from='given', faces=0, box=box)
    else:
        raise PhotoRefused(f'{name}: no face found; use a photo where the face is visible and fills a fair part '
                           f'of it, or give --yaw DEG (e.g. --yaw 180 for the back of the head)')
    crop = models.warp(models.to_tensor(photo), box.affine(res), res, mode='bicubic')
    result.image = (crop[0].permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    if options.masks:
        result.mask = (models.segment_person(result.image) * 255 + 0.5).astype(np.uint8)
    if options.previews:
        from spherehead.photo.preview import draw_preview
        result.preview = draw_preview(photo, result, name)
    return result


def unique_stem(path: str, taken: set[str]) -> str:
    """The photo's file name without extension, made unique among ``taken`` with _2, _3, ... (added to taken)."""
    stem = os.path.splitext(os.path.basename(path))[0].lstrip('.')     # '.png' -> '' (no hidden files)
    stem = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in stem) or 'photo'
    name, k = stem, 2
    while name.lower() in taken:
        name, k = f'{stem}_{k}', k + 1
    taken.add(name.lower())
    return name


class PhotoDatasetWriter:
    """Collects PhotoResults into a dataset folder (written whole at the end, or not at all).

    Layout: ``<stem>.png`` crops, ``dataset.json`` labels, ``masks/<stem>.png``, ``previews/<stem>.png`` and
    ``prepare.json`` (per photo: source, yaw/pitch/roll, where the pose came from, faces found, crop box)."""

    def __init__(self, out: str, overwrite: bool = False):
        from spherehead.data.writer import DatasetWriter
        self._writer = DatasetWriter(out, overwrite=overwrite)
        self._taken: set[str] = set()
        self.records: dict[str, dict] = {}

    def add(self, source: str, result: PhotoResult) -> str:
        from spherehead.data.storage import encode_png
        stem = unique_stem(source, self._taken)
        rel = f'{stem}.png'
        mask = encode_png(result.mask) if result.mask is not None else None
        self._writer.add(rel, encode_png(result.image), result.label, mask_png=mask)
        if result.preview is not None:
            self._writer.add_file(f'previews/{rel}', encode_png(result.preview))
        self.records[rel] = {'source': os.path.abspath(source), **result.report()}
        return rel

    @property
    def count(self) -> int:
        return len(self._writer.names)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            info = {'camera': 'radius 2.7 looking at the origin, focal 4.2647, principal point 0.5 (docs/photos.md)',
                    'photos': self.records}
            self._writer.add_file('prepare.json', json.dumps(info, indent=1).encode('utf-8'))
        return self._writer.__exit__(exc_type, exc, tb)

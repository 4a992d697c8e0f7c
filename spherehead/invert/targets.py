"""What to invert: images with their 25-number camera labels (EG3D / PanoHead convention).

Two sources:
- a dataset (folder or zip with ``dataset.json``, as ``spherehead prepare`` and
  ``spherehead dataset`` write it): every image, or the entries chosen by index;
- one image with its label: ``--label`` as 25 numbers in a string (spaces or commas), or a
  file: ``.json`` (a list of 25 numbers, ``{"label": [...]}``, or a dataset.json whose entry
  of the same file name is used), ``.npy`` (25 numbers) or text (25 numbers). Without
  ``--label``, the ``dataset.json`` of the image's folder (or of up to two folders above) is
  looked up for its relative path.

Images must be square (a label describes a square crop); a square image of another size than
the generator's output is resized (Lanczos), as the released projectors do. The label must
hold a rotation in its 4x4 cam2world and a positive focal length.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from spherehead.data.labels import LABEL_DIM, LABEL_FILE
from spherehead.errors import UserError

LABEL_HELP = ('25 numbers: the 4x4 cam2world (row-major, OpenCV axes) then the 3x3 normalised intrinsics, '
              'e.g. from dataset.json of `spherehead prepare`')


@dataclass
class Target:
    """One image to invert. ``load()`` -> uint8 [H, W, 3]; label float64 [25]."""
    name: str                      # output folder name (unique among the targets of a run)
    source: str                    # where it came from, for messages
    label: np.ndarray
    load: Callable[[], np.ndarray]


def parse_label_values(values, where: str) -> np.ndarray:
    """A sequence or string of 25 numbers -> float64 [25], checked to be a camera (UserError naming ``where``)."""
    if isinstance(values, str):
        values = [v for v in re.split(r'[\s,;\[\]]+', values.strip()) if v]
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise UserError(f'{where}: the label holds something that is not a number; give {LABEL_HELP}') from None
    if arr.size != LABEL_DIM:
        raise UserError(f'{where}: the label has {arr.size} numbers, expected {LABEL_DIM} ({LABEL_HELP})')
    if not np.all(np.isfinite(arr)):
        raise UserError(f'{where}: the label holds NaN or infinity; give {LABEL_HELP}')
    check_camera(arr, where)
    return arr


def check_camera(label: np.ndarray, where: str) -> None:
    """Refuse a label whose cam2world has no rotation in it or whose focal length is not positive."""
    m = label[:16].reshape(4, 4)
    R = m[:3, :3]
    if np.abs(R.T @ R - np.eye(3)).max() > 1e-2 or abs(np.linalg.det(R) - 1) > 1e-2:
        raise UserError(f'{where}: the label\'s 4x4 cam2world does not hold a rotation (its first 3x3 block is not '
                        f'orthonormal with determinant 1); give {LABEL_HELP}')
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-4):
        raise UserError(f'{where}: the label\'s cam2world has last row {m[3].tolist()}, not [0, 0, 0, 1]; '
                        f'give {LABEL_HELP}')
    intr = label[16:].reshape(3, 3)
    if intr[0, 0] <= 0 or intr[1, 1] <= 0:
        raise UserError(f'{where}: the label\'s focal lengths ({intr[0, 0]:g}, {intr[1, 1]:g}) must be positive; '
                        f'give {LABEL_HELP}')


def read_label_arg(text: str, image_name: str) -> np.ndarray:
    """--label: 25 numbers, or a file holding them (see the module doc). ``image_name`` picks the
    entry of a dataset.json."""
    path = Path(text)
    looks_like_numbers = bool(re.fullmatch(r'[\s,;\[\]0-9eE.+-]+', text)) and len(text.split()) > 1
    if not looks_like_numbers and path.is_file():
        return _label_from_file(path, image_name)
    if not looks_like_numbers and (path.suffix.lower() in ('.json', '.npy', '.txt') or os.sep in text):
        raise UserError(f'--label {text}: no such file; give the label file or {LABEL_HELP}')
    return parse_label_values(text, '--label')


def _label_from_file(path: Path, image_name: str) -> np.ndarray:
    where = str(path)
    try:
        if path.suffix.lower() == '.npy':
            return parse_label_values(np.load(path, allow_pickle=False), where)
        text = path.read_text(encoding='utf-8')
    except (ValueError, UnicodeDecodeError, OSError) as e:
        raise UserError(f'{where}: cannot read a label from it ({" ".join(str(e).split())}); give {LABEL_HELP}') from None
    if path.suffix.lower() != '.json':
        return parse_label_values(text, where)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f'{where}: not valid JSON ({e}); give {LABEL_HELP}') from None
    if isinstance(obj, dict) and 'labels' in obj:
        label = _entry_for(obj, image_name, where)
        if label is None:
            raise UserError(f'{where}: no entry for "{image_name}" in its labels; add it or give the label itself')
        return label
    if isinstance(obj, dict) and 'label' in obj:
        obj = obj['label']
    return parse_label_values(obj, where)


def _entry_for(obj: dict, image_name: str, where: str) -> np.ndarray | None:
    """The label of ``image_name`` (matched by relative path, else by file name) in a dataset.json object."""
    from spherehead.data.errors import DatasetError
    from spherehead.data.labels import parse_labels
    try:
        names, labels = parse_labels(obj, where)
    except DatasetError as e:
        raise UserError(str(e)) from None
    if image_name in names:
        return parse_label_values(labels[names.index(image_name)], f'{where}: "{image_name}"')
    base = [i for i, n in enumerate(names) if n.rsplit('/', 1)[-1] == image_name.rsplit('/', 1)[-1]]
    if len(base) == 1:
        return parse_label_values(labels[base[0]], f'{where}: "{names[base[0]]}"')
    return None


def _label_in_enclosing_dataset(path: Path, levels: int = 3) -> np.ndarray | None:
    """The label of an image from the dataset.json of its folder or of one up to ``levels`` folders
    above (a dataset with sub-folders), matched by the path relative to that folder."""
    for root in [path.parent, *list(path.parent.parents)[:levels - 1]]:
        labels = root / LABEL_FILE
        if not labels.is_file():
            continue
        try:
            obj = json.loads(labels.read_text(encoding='utf-8'))
        except (json.JSONDecodeError, UnicodeDecodeError, OSError):
            continue
        found = _entry_for(obj, path.relative_to(root).as_posix(), str(labels))
        if found is not None:
            return found
    return None


def image_target(image: str | os.PathLike, label: str | None) -> Target:
    """One image file and its label (--label value, or the dataset.json beside the image)."""
    path = Path(image)
    if not path.is_file():
        raise UserError(f'{path}: no such image file; check the path')
    if label is None:
        found = _label_in_enclosing_dataset(path)
        if found is None:
            raise UserError(f'{path}: no camera label; pass --label "{LABEL_DIM} numbers" or --label FILE '
                            f'(.json, .npy, .txt), or put the image in a dataset folder with {LABEL_FILE} '
                            f'(`spherehead prepare` writes one)')
        arr = found
    else:
        arr = read_label_arg(label, path.name)

    def load() -> np.ndarray:
        from spherehead.data.errors import DatasetError
        from spherehead.data.storage import decode_image
        try:
            return decode_image(path.read_bytes(), str(path), channels=3)
        except DatasetError as e:
            raise UserError(str(e)) from None
    return Target(name=safe_name(path.stem), source=str(path), label=arr, load=load)


def dataset_targets(path: str | os.PathLike, indices: list[int] | None = None) -> list[Target]:
    """The images of a dataset (folder or zip with dataset.json), all or those at ``indices`` (rows of dataset.json)."""
    from spherehead.data.errors import DatasetError
    from spherehead.data.labels import read_labels
    from spherehead.data.storage import Storage, decode_image
    try:
        storage = Storage(os.fspath(path))
        names, labels = read_labels(storage)
    except DatasetError as e:
        raise UserError(str(e)) from None
    if indices is None:
        indices = list(range(len(names)))
    bad = [i for i in indices if i >= len(names)]
    if bad:
        raise UserError(f'{path}: index {bad[0]} is out of range; the dataset has {len(names)} images '
                        f'(indices 0..{len(names) - 1})')
    targets, used = [], set()
    for i in indices:
        name = names[i]
        where = storage.describe(name)
        label = parse_label_values(labels[i], f'{path}: label of "{name}"')
        out = safe_name(name.rsplit('.', 1)[0].replace('/', '_'))
        if out in used:
            out = f'{out}-{i}'
        used.add(out)

        def load(name=name, where=where) -> np.ndarray:
            try:
                return decode_image(storage.read(name), where, channels=3)
            except DatasetError as e:
                raise UserError(str(e)) from None
        targets.append(Target(name=out, source=where, label=label, load=load))
    return targets


def safe_name(text: str) -> str:
    """A file-system-safe folder name: letters, digits, '-', '_' and '.' kept, anything else '_'."""
    out = re.sub(r'[^A-Za-z0-9._-]', '_', text).strip('.') or 'image'
    return out[:120]


def check_image(img: np.ndarray, where: str) -> None:
    """Refuse images that cannot be inverted: not square (a label describes a square crop) or under 16 px."""
    h, w = img.shape[:2]
    if h != w:
        raise UserError(f'{where}: the image is {w}x{h}, not square; the camera label describes a square crop: '
                        f'crop it with `spherehead prepare` (or to a square around the head) and give its label')
    if h < 16:
        raise UserError(f'{where}: the image is {w}x{h}, too small to invert; give a crop of at least 16x16')


def prepare_image(img: np.ndarray, resolution: int, where: str) -> tuple[np.ndarray, bool]:
    """uint8 [H, W, 3] -> uint8 [R, R, 3] at the generator's resolution; (image, resized). See check_image."""
    check_image(img, where)
    h = img.shape[0]
    if h == resolution:
        return img, False
    from PIL import Image
    return np.asarray(Image.fromarray(img).resize((resolution, resolution), Image.LANCZOS)), True

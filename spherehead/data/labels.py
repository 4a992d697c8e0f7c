"""dataset.json: the EG3D / PanoHead label file.

Format: ``{"labels": [[relpath, [25 numbers]], ...]}``. The numbers may also be given as
strings (``["0.99", ...]``) or as one whitespace/comma separated string. ``relpath`` uses
'/' separators and is relative to the dataset root (folder or zip).
"""
from __future__ import annotations

import json

import numpy as np

from spherehead.data.errors import DatasetError
from spherehead.data.storage import Storage

LABEL_DIM = 25
LABEL_FILE = 'dataset.json'


def _parse_label(value, where: str) -> np.ndarray:
    if isinstance(value, str):
        value = value.replace(',', ' ').split()
    if not isinstance(value, (list, tuple)):
        raise DatasetError(f'{where}: label must be a list of {LABEL_DIM} numbers, got {type(value).__name__}; '
                           f'fix dataset.json')
    if len(value) != LABEL_DIM:
        raise DatasetError(f'{where}: label has {len(value)} numbers, expected {LABEL_DIM} '
                           f'(4x4 cam2world + 3x3 normalised intrinsics); fix dataset.json')
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(f'{where}: label holds a value that is not a number; fix dataset.json') from None
    if not np.all(np.isfinite(arr)):
        raise DatasetError(f'{where}: label holds NaN or infinity; fix dataset.json')
    return arr


def parse_labels(obj, source: str) -> tuple[list[str], np.ndarray]:
    """Decoded dataset.json content -> (relpaths, float32 [N, 25] labels). Raises DatasetError."""
    if not isinstance(obj, dict) or 'labels' not in obj:
        raise DatasetError(f'{source}: no "labels" key; expected {{"labels": [[relpath, [25 numbers]], ...]}}')
    entries = obj['labels']
    if isinstance(entries, dict):         # tolerate {relpath: label}
        entries = list(entries.items())
    if not isinstance(entries, list) or len(entries) == 0:
        raise DatasetError(f'{source}: "labels" is empty or not a list; expected [[relpath, [25 numbers]], ...]')
    names: list[str] = []
    labels = np.empty((len(entries), LABEL_DIM), dtype=np.float32)
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], str):
            raise DatasetError(f'{source}: entry {i} is not [relpath, label]; fix dataset.json')
        name = entry[0].replace('\\', '/')
        if name.startswith('./'):
            name = name[2:]
        if name in seen:
            raise DatasetError(f'{source}: "{name}" is listed twice; remove the duplicate entry')
        seen.add(name)
        names.append(name)
        labels[i] = _parse_label(entry[1], f'{source}: label of "{name}" (entry {i})')
    return names, labels


def read_labels(storage: Storage, check_files: bool = True) -> tuple[list[str], np.ndarray]:
    """Read and validate ``dataset.json`` of a dataset. Returns (relpaths, float32 [N, 25])."""
    where = storage.describe(LABEL_FILE)
    if not storage.exists(LABEL_FILE):
        raise DatasetError(f'{where}: missing; a dataset needs dataset.json with {{"labels": [[relpath, '
                           f'[25 numbers]], ...]}} (make one with `spherehead dataset synth` or see docs/datasets.md)')
    raw = storage.read(LABEL_FILE)
    try:
        obj = json.loads(raw.decode('utf-8'))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f'{where}: not valid JSON ({e}); fix or regenerate the file') from None
    names, labels = parse_labels(obj, where)
    if check_files:
        for name in names:
            if not storage.exists(name):
                raise DatasetError(f'{where}: "{name}" has no image at {storage.describe(name)}; '
                                   f'add the image or remove its entry')
    return names, labels


def labels_json(names: list[str], labels: np.ndarray) -> bytes:
    """(relpaths, [N, 25]) -> dataset.json bytes."""
    entries = [[n, [float(v) for v in np.asarray(lab, dtype=np.float64)]] for n, lab in zip(names, labels)]
    return json.dumps({'labels': entries}).encode('utf-8')

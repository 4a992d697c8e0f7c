"""Writes a dataset in our layout, to a zip (``--out x.zip``) or a folder (any other path).

    dataset.json                       {"labels": [[relpath, [25 numbers]], ...]}
    00000/img00000000.png ...          images, 1000 per sub-folder (EG3D's naming)
    masks/00000/img00000000.png        foreground masks, 8-bit 0/255        (if written)
    parsing/00000/img00000000.png      parsing class ids, 8-bit 0..19       (if written)

PNGs are stored uncompressed in the zip (they are compressed already), so readers can
seek into it cheaply.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile

import numpy as np

from spherehead.data.errors import DatasetError
from spherehead.data.labels import LABEL_FILE, labels_json


def image_relpath(index: int) -> str:
    """EG3D naming: ``00000/img00000000.png``."""
    return f'{index // 1000:05d}/img{index:08d}.png'


# Archive names a dataset cannot be written as: only .zip is an archive here; any other name is a folder.
UNSUPPORTED_ARCHIVES = ('.tar.gz', '.tar.bz2', '.tar.xz', '.tar.zst', '.tar', '.tgz', '.tbz2', '.txz', '.gz', '.bz2',
                        '.xz', '.zst', '.7z', '.rar', '.lz4')


def archive_problem(out: str) -> str | None:
    """Why ``out`` cannot be a dataset output (an archive type other than .zip), else None."""
    name = os.path.basename(os.fspath(out).rstrip('/\\')).lower()
    ext = next((e for e in UNSUPPORTED_ARCHIVES if name.endswith(e)), None)
    if ext is None:
        return None
    stem = os.fspath(out).rstrip('/\\')[:-len(ext)]
    return (f'{out}: {ext} archives are not written; name it {stem}.zip (a zip archive) or {stem} (a folder)')


class DatasetWriter:
    """Context manager collecting files and labels; the output appears complete or not at all."""

    def __init__(self, out: str, overwrite: bool = False):
        self.out = os.fspath(out)
        self.is_zip = self.out.lower().endswith('.zip')
        problem = archive_problem(self.out)
        if problem:
            raise DatasetError(problem)
        if os.path.exists(self.out) and not overwrite:
            if not (os.path.isdir(self.out) and not os.listdir(self.out)):
                raise DatasetError(f'{self.out}: already exists; pass --overwrite to replace it, choose another '
                                   '--out or delete it')
        parent = os.path.dirname(os.path.abspath(self.out))
        os.makedirs(parent, exist_ok=True)
        self._tmp = tempfile.mkdtemp(prefix='.spherehead-', dir=parent) if not self.is_zip else None
        self._tmp_zip = os.path.join(parent, f'.{os.path.basename(self.out)}.partial') if self.is_zip else None
        self._zip = zipfile.ZipFile(self._tmp_zip, 'w', zipfile.ZIP_STORED) if self.is_zip else None
        self.names: list[str] = []
        self.labels: list[np.ndarray] = []

    def add_file(self, relpath: str, data: bytes) -> None:
        if self._zip is not None:
            self._zip.writestr(relpath, data)
        else:
            path = os.path.join(self._tmp, relpath)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'wb') as f:
                f.write(data)

    def add(self, relpath: str, image_png: bytes, label: np.ndarray,
            mask_png: bytes | None = None, parsing_png: bytes | None = None) -> None:
        """One sample: image at ``relpath``, maps at masks/ and parsing/ with the .png name."""
        self.add_file(relpath, image_png)
        stem = os.path.splitext(relpath)[0] + '.png'
        if mask_png is not None:
            self.add_file('masks/' + stem, mask_png)
        if parsing_png is not None:
            self.add_file('parsing/' + stem, parsing_png)
        self.names.append(relpath)
        self.labels.append(np.asarray(label, dtype=np.float64))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.add_file(LABEL_FILE, labels_json(self.names, np.stack(self.labels) if self.labels
                                                  else np.zeros((0, 25))))
        if self._zip is not None:
            self._zip.close()
            if exc_type is None:
                os.replace(self._tmp_zip, self.out)
            else:
                os.remove(self._tmp_zip)
        else:
            if exc_type is None:
                if os.path.isdir(self.out):
                    shutil.rmtree(self.out)       # empty (checked in __init__) or --overwrite
                elif os.path.exists(self.out):
                    os.remove(self.out)
                os.replace(self._tmp, self.out)
            else:
                shutil.rmtree(self._tmp, ignore_errors=True)
        return False

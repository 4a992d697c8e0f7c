"""Byte-level access to a dataset stored as a folder or a zip, and image decoding.

A :class:`Storage` lists relative paths (always with '/' separators) and reads their bytes.
A zip is opened lazily and re-opened after a fork, so one object can be handed to
DataLoader worker processes.
"""
from __future__ import annotations

import io
import os
import zipfile

import numpy as np

from spherehead.data.errors import DatasetError

IMAGE_EXTS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp')
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


class Storage:
    """A folder or a ``.zip`` of files addressed by relative path.

    ``prefix`` restricts the view to a sub-folder ('' = the whole container): e.g. the
    parsing maps stored under ``parsing/`` inside a dataset zip.
    """

    def __init__(self, path: str, prefix: str = ''):
        self.path = os.fspath(path)
        self.prefix = prefix.strip('/') + '/' if prefix.strip('/') else ''
        if os.path.isdir(self.path):
            self.kind = 'dir'
        elif os.path.isfile(self.path) and zipfile.is_zipfile(self.path):
            self.kind = 'zip'
        elif os.path.isfile(self.path):
            raise DatasetError(f'{self.path}: not a folder and not a readable zip file; '
                               f'give a folder or a .zip holding images and dataset.json')
        else:
            raise DatasetError(f'{self.path}: no such folder or zip file; check the path')
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid: int | None = None
        self._names: list[str] | None = None
        self._set: set[str] | None = None

    def __repr__(self) -> str:
        return f'Storage({self.path!r}, prefix={self.prefix!r})'

    def __getstate__(self):
        state = dict(self.__dict__)
        state['_zip'] = None        # never pickle an open file: each worker opens its own
        state['_zip_pid'] = None
        return state

    def describe(self, name: str) -> str:
        """Human-readable location of ``name`` for error messages."""
        if self.kind == 'zip':
            return f'{self.path}:{self.prefix}{name}'
        return os.path.join(self.path, self.prefix, name)

    def _zipfile(self) -> zipfile.ZipFile:
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip = zipfile.ZipFile(self.path)
            self._zip_pid = os.getpid()
        return self._zip

    def close(self) -> None:
        if self._zip is not None and self._zip_pid == os.getpid():
            self._zip.close()
        self._zip = None

    def names(self) -> list[str]:
        """Sorted relative paths of all files under the prefix."""
        if self._names is None:
            if self.kind == 'zip':
                all_names = [n for n in self._zipfile().namelist() if not n.endswith('/')]
            else:
                root = os.path.join(self.path, self.prefix) if self.prefix else self.path
                all_names = []
                for dirpath, _dirs, files in os.walk(root):
                    rel = os.path.relpath(dirpath, self.path)
                    for f in files:
                        all_names.append(f if rel == '.' else f'{rel}/{f}'.replace(os.sep, '/'))
            n = len(self.prefix)
            self._names = sorted(x[n:] for x in all_names if x.startswith(self.prefix))
        return self._names

    def has_prefix(self, prefix: str) -> bool:
        """Whether any file lies under ``prefix/`` (e.g. 'parsing')."""
        p = prefix.strip('/') + '/'
        return any(n.startswith(p) for n in self.names())

    def exists(self, name: str) -> bool:
        if self.kind == 'zip':
            return name in self._name_set()
        return os.path.isfile(os.path.join(self.path, self.prefix, name))

    def _name_set(self) -> set[str]:
        if self._set is None:
            self._set = set(self.names())
        return self._set

    def read(self, name: str) -> bytes:
        try:
            if self.kind == 'zip':
                return self._zipfile().read(self.prefix + name)
            with open(os.path.join(self.path, self.prefix, name), 'rb') as f:
                return f.read()
        except KeyError:
            raise DatasetError(f'{self.describe(name)}: file not found; fix the name in dataset.json '
                               f'or add the file') from None
        except (OSError, zipfile.BadZipFile, EOFError) as e:
            raise DatasetError(f'{self.describe(name)}: cannot read ({e}); re-copy or re-pack the dataset') from None


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG header without decoding, or None if not a PNG."""
    if len(data) >= 24 and data[:8] == PNG_SIGNATURE and data[12:16] == b'IHDR':
        return int.from_bytes(data[16:20], 'big'), int.from_bytes(data[20:24], 'big')
    return None


def _pyspng():
    """The pyspng module (fast PNG decoding), or None where it is not installed (Pillow decodes then)."""
    try:
        import pyspng
        return pyspng
    except ImportError:
        return None


def decode_image(data: bytes, where: str, channels: int = 3) -> np.ndarray:
    """Decode PNG (pyspng) or other formats (Pillow) to uint8 [H, W, channels] (channels 3) or [H, W] (channels 1).

    Raises DatasetError naming ``where`` for unreadable or truncated files.
    """
    try:
        if data[:8] == PNG_SIGNATURE and _pyspng() is not None:
            arr = _pyspng().load(data)
            if arr.dtype == np.uint16:
                arr = (arr >> 8).astype(np.uint8)
        else:
            from PIL import Image
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                arr = np.array(im.convert('RGB' if channels == 3 else 'L'))   # writable (torch.from_numpy)
    except Exception as e:  # decoders raise many types for corrupt data
        reason = 'not a recognised image format' if type(e).__name__ == 'UnidentifiedImageError' else \
            f'{type(e).__name__}: {e}'
        raise DatasetError(f'{where}: unreadable or truncated image ({reason}); '
                           f're-export the file or remove it from dataset.json') from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if channels == 3:
        if arr.shape[2] in (1, 2):
            arr = np.repeat(arr[:, :, :1], 3, axis=2)
        arr = arr[:, :, :3]
        return np.ascontiguousarray(arr)
    return np.ascontiguousarray(arr[:, :, 0])


def encode_png(arr: np.ndarray, compress_level: int = 3) -> bytes:
    """uint8 [H, W, 3] or [H, W] -> PNG bytes."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format='png', compress_level=compress_level)
    return buf.getvalue()

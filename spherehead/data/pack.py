"""``spherehead dataset pack``: a folder (or zip) of images + dataset.json (+ maps) -> a training dataset at one resolution.

Images are resized with Lanczos, masks and parsing maps with nearest neighbour only.
Relative names are kept (with the extension changed to .png); the output layout is the
one of spherehead.data.writer (maps under masks/ and parsing/).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from spherehead.data.errors import DatasetError
from spherehead.data.labels import read_labels
from spherehead.data.storage import Storage, decode_image, encode_png
from spherehead.parsing_classes import NUM_PARSING_CLASSES


@dataclass
class PackOptions:
    """Options of ``spherehead dataset pack``."""
    source: str = ''
    out: str = ''
    resolution: int = 512
    parsing: str | None = None     # folder/zip of parsing maps; None: SOURCE/parsing if present
    masks: str | None = None       # folder/zip of masks; None: SOURCE/masks if present
    overwrite: bool = False


def _resize(arr: np.ndarray, r: int, nearest: bool) -> np.ndarray:
    from PIL import Image
    if arr.shape[0] == r and arr.shape[1] == r:
        return arr
    return np.asarray(Image.fromarray(arr).resize((r, r), Image.NEAREST if nearest else Image.LANCZOS))


def _map_storage(spec: str | None, source: Storage, subdir: str) -> Storage | None:
    if spec:
        return Storage(spec)
    if source.has_prefix(subdir):
        return Storage(source.path, prefix=subdir)
    return None


def pack_dataset(options: PackOptions, progress: bool = True) -> dict:
    """Pack ``options.source`` into ``options.out``. Returns counts."""
    from tqdm import tqdm

    from spherehead.data.writer import DatasetWriter
    o = options
    if o.resolution < 8:
        raise DatasetError(f'pack: --resolution must be >= 8 (got {o.resolution})')
    src = Storage(o.source)
    names, labels = read_labels(src)
    maps = {'masks': _map_storage(o.masks, src, 'masks'), 'parsing': _map_storage(o.parsing, src, 'parsing')}
    with DatasetWriter(o.out, overwrite=o.overwrite) as writer:
        for name, label in tqdm(list(zip(names, labels)), desc='pack', unit='img', disable=not progress):
            where = src.describe(name)
            img = decode_image(src.read(name), where, channels=3)
            if img.shape[0] != img.shape[1]:
                raise DatasetError(f'{where}: image is {img.shape[1]}x{img.shape[0]}, not square; crop it square '
                                   f'first (the labels assume square crops)')
            out_name = os.path.splitext(name)[0] + '.png'
            encoded = {}
            for what, st in maps.items():
                if st is None:
                    continue
                mwhere = st.describe(out_name)
                if not st.exists(out_name):
                    raise DatasetError(f'{mwhere}: {what} map missing for image "{name}"; add it or pack '
                                       f'without {what}')
                m = decode_image(st.read(out_name), mwhere, channels=1)
                if m.shape != img.shape[:2]:
                    raise DatasetError(f'{mwhere}: {what} map is {m.shape[1]}x{m.shape[0]} but its image is '
                                       f'{img.shape[1]}x{img.shape[0]}; export maps at the image size')
                if what == 'parsing' and int(m.max()) >= NUM_PARSING_CLASSES:
                    raise DatasetError(f'{mwhere}: parsing id {int(m.max())} out of range '
                                       f'0..{NUM_PARSING_CLASSES - 1}; remap to the class table in docs/datasets.md')
                encoded[what] = encode_png(_resize(m, o.resolution, nearest=True))
            writer.add(out_name, encode_png(_resize(img, o.resolution, nearest=False)),
                       np.asarray(label, np.float64), mask_png=encoded.get('masks'),
                       parsing_png=encoded.get('parsing'))
    return {'count': len(names), 'masks': maps['masks'] is not None, 'parsing': maps['parsing'] is not None}

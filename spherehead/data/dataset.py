"""The training dataset: EG3D / PanoHead format, as a folder or zip, for torch DataLoaders.

Layout read (the synthetic generator and ``spherehead dataset pack`` write the same)::

    <root>/dataset.json                 {"labels": [[relpath, [25 numbers]], ...]}
    <root>/<relpath>                    images (PNG via pyspng, JPEG etc. via Pillow)
    <root>/masks/<relpath as .png>      optional foreground masks, 8-bit, 0 = background
    <root>/parsing/<relpath as .png>    optional parsing maps, 8-bit class ids (spherehead.parsing_classes)

``<root>`` is a folder or a zip. Masks and parsing maps may instead live in their own folder
or zip with the same relative names (``DatasetOptions.masks`` / ``.parsing``).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import torch

from spherehead.camera import label_to_yaw_pitch, mirror_label
from spherehead.data.errors import DatasetError
from spherehead.data.labels import read_labels
from spherehead.data.rebalance import RebalanceReport, rebalance
from spherehead.data.storage import Storage, decode_image
from spherehead.parsing_classes import CLASS_ID, NUM_PARSING_CLASSES

MASKS_DIR = 'masks'
PARSING_DIR = 'parsing'

# Parsing ids swapped by a horizontal flip (left <-> right of the head).
_FLIP_PAIRS = (('left_eye', 'right_eye'), ('left_brow', 'right_brow'), ('left_ear', 'right_ear'))
FLIP_PARSING_LUT = np.arange(256, dtype=np.uint8)
for _a, _b in _FLIP_PAIRS:
    FLIP_PARSING_LUT[CLASS_ID[_a]], FLIP_PARSING_LUT[CLASS_ID[_b]] = CLASS_ID[_b], CLASS_ID[_a]


@dataclass
class DatasetOptions:
    """Options of :class:`HeadDataset` (JSON-serialisable; the training config embeds it)."""
    path: str = ''                       # folder or .zip with dataset.json
    resolution: int | None = None        # None: use the images' own (all must match); else resize to R x R
    masks: str | bool = 'auto'           # 'auto': <root>/masks if present; path: separate folder/zip; False: off
    parsing: str | bool = 'auto'         # same for parsing maps
    xflip: bool = False                  # add mirrored copies (label mirrored, left/right parsing ids swapped)
    yaw_range: tuple[float, float] | None = None   # keep samples with yaw in [lo, hi] degrees (yaw in (-180, 180])
    front_only_deg: float | None = None  # keep |yaw| < this (training phase I), e.g. 45
    rebalance: bool = False              # duplicate samples of rare yaw bins (see spherehead.data.rebalance)
    rebalance_constant: int = 2000       # the constant of the duplication rule (paper: 2000)
    rebalance_bins: int = 36             # yaw bins over 360 degrees
    rebalance_max_dup: int | None = None  # optional cap on the duplication count
    max_size: int | None = None          # keep only the first N samples (after filtering, before re-balancing)

    def to_dict(self) -> dict:
        return asdict(self)


def _map_name(name: str) -> str:
    """Relative path of the mask / parsing map belonging to image ``name`` (PNG)."""
    stem, _ext = os.path.splitext(name)
    return stem + '.png'


class HeadDataset(torch.utils.data.Dataset):
    """EG3D / PanoHead dataset of head images with camera labels.

    Item ``i`` is a dict:
        image   [3, H, W] uint8
        label   [25] float32 (mirrored when the item is a flipped copy)
        mask    [1, H, W] uint8 0..255 (when masks are present)
        parsing [1, H, W] uint8 class ids 0..19 (when parsing maps are present)
        index   int, the row in dataset.json
        flipped bool

    Labels are parsed once at construction; images are decoded per item. A zip is opened
    lazily in each worker process, so the dataset is safe with ``num_workers > 0``.
    """

    def __init__(self, options: DatasetOptions | str, **overrides):
        if isinstance(options, (str, os.PathLike)):
            options = DatasetOptions(path=os.fspath(options))
        if overrides:
            options = DatasetOptions(**{**asdict(options), **overrides})
        self.options = options
        self.storage = Storage(options.path)
        self.names, self.labels = read_labels(self.storage)           # [N], float32 [N, 25]
        self.yaw, self.pitch, self.radius = (a.astype(np.float32) for a in label_to_yaw_pitch(self.labels))
        self.masks = self._open_maps(options.masks, MASKS_DIR, 'masks')
        self.parsing = self._open_maps(options.parsing, PARSING_DIR, 'parsing')

        keep = np.ones(len(self.names), dtype=bool)
        if options.yaw_range is not None:
            lo, hi = options.yaw_range
            keep &= (self.yaw >= lo) & (self.yaw <= hi)
        if options.front_only_deg is not None:
            keep &= np.abs(self.yaw) < options.front_only_deg
        base = np.nonzero(keep)[0]
        if options.max_size is not None:
            base = base[:options.max_size]
        if len(base) == 0:
            raise DatasetError(f'{options.path}: no samples left after the yaw filter '
                               f'(yaw_range={options.yaw_range}, front_only_deg={options.front_only_deg}); '
                               f'widen the range')
        self.rebalance_report: RebalanceReport | None = None
        if options.rebalance:
            order, self.rebalance_report = rebalance(self.yaw[base], options.rebalance_bins,
                                                     options.rebalance_constant, options.rebalance_max_dup)
            base = base[order]
        self._raw_idx = base.astype(np.int64)
        self._flip = np.zeros(len(base), dtype=bool)
        if options.xflip:
            self._raw_idx = np.concatenate([self._raw_idx, self._raw_idx])
            self._flip = np.concatenate([self._flip, np.ones(len(base), dtype=bool)])

        first = self._load_image(int(self._raw_idx[0]))
        self.resolution = options.resolution or first.shape[1]
        self.image_shape = (3, self.resolution, self.resolution)
        self.label_dim = self.labels.shape[1]

    # ------------------------------------------------------------------ maps
    def _open_maps(self, spec, subdir: str, what: str) -> Storage | None:
        if spec is False or spec is None:
            return None
        if spec == 'auto' or spec is True:
            if self.storage.has_prefix(subdir):
                maps = Storage(self.options.path, prefix=subdir)
            elif spec is True:
                raise DatasetError(f'{self.options.path}: no {subdir}/ folder with {what}; '
                                   f'add it or give the {what} folder/zip explicitly')
            else:
                return None
        else:
            maps = Storage(spec)
        missing = [n for n in self.names if not maps.exists(_map_name(n))]
        if missing:
            raise DatasetError(f'{maps.describe(_map_name(missing[0]))}: {what} map missing for image "{missing[0]}" '
                               f'({len(missing)} of {len(self.names)} missing); add the maps or turn {what} off')
        return maps

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return len(self._raw_idx)

    @property
    def has_masks(self) -> bool:
        return self.masks is not None

    @property
    def has_parsing(self) -> bool:
        return self.parsing is not None

    def _resize(self, arr: np.ndarray, nearest: bool) -> np.ndarray:
        from PIL import Image
        r = self.resolution
        return np.array(Image.fromarray(arr).resize((r, r), Image.NEAREST if nearest else Image.LANCZOS))

    def _check_size(self, arr: np.ndarray, where: str, nearest: bool) -> np.ndarray:
        h, w = arr.shape[:2]
        want = getattr(self, 'resolution', None)
        if want is None or (h == want and w == want):
            if h != w:
                raise DatasetError(f'{where}: image is {w}x{h}, not square; crop it square '
                                   f'(labels assume square crops) and repack')
            return arr
        if self.options.resolution is not None:
            return self._resize(arr, nearest)
        raise DatasetError(f'{where}: {w}x{h} but the dataset is {want}x{want} (mixed resolutions); '
                           f'repack with `spherehead dataset pack --resolution {want}` or set a resolution')

    def _load_image(self, raw: int) -> np.ndarray:
        name = self.names[raw]
        where = self.storage.describe(name)
        img = decode_image(self.storage.read(name), where, channels=3)
        return self._check_size(img, where, nearest=False).transpose(2, 0, 1)

    def _load_map(self, maps: Storage, raw: int, what: str) -> np.ndarray:
        name = _map_name(self.names[raw])
        where = maps.describe(name)
        arr = decode_image(maps.read(name), where, channels=1)
        if what == 'parsing':
            top = int(arr.max())
            if top >= NUM_PARSING_CLASSES:
                raise DatasetError(f'{where}: parsing id {top} out of range 0..{NUM_PARSING_CLASSES - 1}; '
                                   f'remap the map to the class table in docs/datasets.md')
        return self._check_size(arr, where, nearest=True)[None]

    def __getitem__(self, idx: int) -> dict:
        raw = int(self._raw_idx[idx])
        flip = bool(self._flip[idx])
        image = self._load_image(raw)
        label = self.labels[raw]
        item = {}
        if flip:
            image = image[:, :, ::-1]
            label = mirror_label(label)
        item['image'] = torch.from_numpy(np.ascontiguousarray(image))
        item['label'] = torch.from_numpy(np.asarray(label, dtype=np.float32).copy())
        if self.masks is not None:
            m = self._load_map(self.masks, raw, 'masks')
            item['mask'] = torch.from_numpy(np.ascontiguousarray(m[:, :, ::-1] if flip else m))
        if self.parsing is not None:
            p = self._load_map(self.parsing, raw, 'parsing')
            if flip:
                p = FLIP_PARSING_LUT[p[:, :, ::-1]]
            item['parsing'] = torch.from_numpy(np.ascontiguousarray(p))
        item['index'] = raw
        item['flipped'] = flip
        return item

    def get_label(self, idx: int) -> torch.Tensor:
        """[25] float32 label of item ``idx`` without decoding its image."""
        raw = int(self._raw_idx[idx])
        lab = self.labels[raw]
        if self._flip[idx]:
            lab = mirror_label(lab)
        return torch.from_numpy(np.asarray(lab, dtype=np.float32).copy())

    def item_yaw(self) -> np.ndarray:
        """[len(self)] yaw in degrees of every item (flipped copies have the negated yaw)."""
        yaw = self.yaw[self._raw_idx]
        return np.where(self._flip, -yaw, yaw)

    def summary(self) -> list[str]:
        """Lines describing the dataset as configured (counts, resolution, maps, filters, re-balancing)."""
        o = self.options
        lines = [f'{o.path}: {len(self.names)} images in dataset.json, {len(self)} items '
                 f'at {self.resolution}x{self.resolution}; masks: {"yes" if self.has_masks else "no"}, '
                 f'parsing: {"yes" if self.has_parsing else "no"}, xflip: {o.xflip}']
        if o.yaw_range is not None or o.front_only_deg is not None:
            lines.append(f'yaw filter: range={o.yaw_range}, front_only |yaw| < {o.front_only_deg}')
        if self.rebalance_report is not None:
            lines += self.rebalance_report.lines()
        return lines

    def close(self) -> None:
        for s in (self.storage, self.masks, self.parsing):
            if s is not None:
                s.close()

"""Feature statistics of dataset images and of generated images (float64 mean and covariance).

``dataset_stats`` runs the feature network once over every dataset image and accumulates
per yaw group (so view-binned metrics cost no second pass); ``generator_stats`` renders
``num`` heads at camera labels picked from a pool and accumulates their features. Mean and
covariance follow the StyleGAN / EG3D metric code: float64 sums, covariance divided by N.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from spherehead.metrics.inception import FeatureNetwork
from spherehead.metrics.sampling import latents, pick_indices, render_uint8


@dataclass
class FeatureStats:
    """Running float64 sums of features [*, D]; optionally every feature row (float32) for KID."""
    capture_all: bool = False
    num: int = 0
    raw_sum: np.ndarray | None = None      # [D]
    raw_outer: np.ndarray | None = None    # [D, D]
    rows: list = field(default_factory=list)

    def append(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float32)
        if x.ndim != 2:
            raise ValueError(f'FeatureStats.append: need [N, D] features, got {x.shape}')
        if self.raw_sum is None:
            self.raw_sum = np.zeros(x.shape[1], np.float64)
            self.raw_outer = np.zeros((x.shape[1], x.shape[1]), np.float64)
        x64 = x.astype(np.float64)
        self.raw_sum += x64.sum(0)
        self.raw_outer += x64.T @ x64
        self.num += x.shape[0]
        if self.capture_all:
            self.rows.append(x)

    def merge(self, other: 'FeatureStats') -> 'FeatureStats':
        """A new FeatureStats holding both sets (rows kept when both captured them)."""
        out = FeatureStats(capture_all=self.capture_all and other.capture_all)
        for s in (self, other):
            if s.num:
                if out.raw_sum is None:
                    out.raw_sum, out.raw_outer = s.raw_sum.copy(), s.raw_outer.copy()
                else:
                    out.raw_sum += s.raw_sum
                    out.raw_outer += s.raw_outer
                out.num += s.num
                if out.capture_all:
                    out.rows += s.rows
        return out

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """([D] mean, [D, D] covariance) in float64."""
        if self.num < 2:
            raise ValueError(f'FeatureStats: need at least 2 items for a covariance, have {self.num}')
        mean = self.raw_sum / self.num
        return mean, self.raw_outer / self.num - np.outer(mean, mean)

    def all(self) -> np.ndarray:
        """[N, D] float32 features (capture_all only)."""
        if not self.capture_all:
            raise ValueError('FeatureStats: rows were not captured')
        return np.concatenate(self.rows) if self.rows else np.zeros((0, 0), np.float32)

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        out = {f'{prefix}num': np.array(self.num), f'{prefix}sum': self.raw_sum, f'{prefix}outer': self.raw_outer}
        if self.capture_all:
            out[f'{prefix}rows'] = self.all()
        return out

    @staticmethod
    def from_arrays(a, prefix: str) -> 'FeatureStats':
        rows = f'{prefix}rows' in a
        num = int(a[f'{prefix}num'])
        if num == 0:
            return FeatureStats(capture_all=rows)
        s = FeatureStats(capture_all=rows, num=num, raw_sum=a[f'{prefix}sum'], raw_outer=a[f'{prefix}outer'])
        if rows:
            s.rows = [a[f'{prefix}rows']]
        return s


def _dataset_cache_key(dataset, net: FeatureNetwork, group_key: str, capture_all: bool) -> str:
    path = Path(dataset.options.path).resolve()
    labels = path / 'dataset.json' if path.is_dir() else path
    st = labels.stat()
    text = json.dumps([str(path), st.st_size, int(st.st_mtime), dataset.resolution, len(dataset),
                       net.identity, group_key, capture_all])
    return hashlib.sha1(text.encode()).hexdigest()[:16]


@torch.no_grad()
def dataset_stats(dataset, net: FeatureNetwork, groups: np.ndarray, num_groups: int, capture_all: bool = False,
                  batch_size: int = 32, progress: bool = True, cache_dir: str | os.PathLike | None = None,
                  group_key: str = '') -> list[FeatureStats]:
    """Features of every item of ``dataset`` (a HeadDataset) accumulated per group.

    groups: [len(dataset)] int group id of each item in [0, num_groups). ``cache_dir`` keeps
    the result in ``<cache_dir>/dataset-<key>.npz``, keyed by the dataset file (path, size,
    time), its resolution and length, the feature network file and ``group_key``.
    """
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f'dataset-{_dataset_cache_key(dataset, net, group_key, capture_all)}.npz'
        if cache.is_file():
            with np.load(cache) as a:
                return [FeatureStats.from_arrays(a, f'g{k}_') for k in range(num_groups)]
    stats = [FeatureStats(capture_all=capture_all) for _ in range(num_groups)]
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    bar = tqdm(total=len(dataset), desc='dataset features', unit='img', disable=not progress, leave=False)
    start = 0
    for batch in loader:
        images = batch['image']
        feats = net(images).numpy()
        g = groups[start:start + len(images)]
        for k in range(num_groups):
            if (g == k).any():
                stats[k].append(feats[g == k])
        start += len(images)
        bar.update(len(images))
    bar.close()
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for k, s in enumerate(stats):
            if s.num == 0:   # a placeholder, so that the group loads back empty
                arrays.update({f'g{k}_num': np.array(0), f'g{k}_sum': np.zeros(0), f'g{k}_outer': np.zeros((0, 0))})
                if capture_all:
                    arrays[f'g{k}_rows'] = np.zeros((0, 0), np.float32)
            else:
                arrays.update(s.to_arrays(f'g{k}_'))
        tmp = cache.with_name(cache.name + '.tmp.npz')
        np.savez(tmp, **arrays)
        os.replace(tmp, cache)
    return stats


@torch.no_grad()
def generator_stats(G, net: FeatureNetwork, label_pool: torch.Tensor, num: int, seed: int, stream: int,
                    cond_label: torch.Tensor | None = None, resolution: int | None = None, capture_all: bool = False,
                    batch_size: int = 8, device: str | torch.device = 'cpu', progress: bool = True,
                    desc: str = 'generated') -> FeatureStats:
    """Features of ``num`` generated heads, each rendered at a label picked from ``label_pool`` [P, 25].

    Item i has the latent of seed ``seed + i`` and label ``pick_indices(P, num, seed, stream)[i]``.
    The generator is conditioned on the same label, or on ``cond_label`` [1, 25] for all items
    when given (fid3d).
    """
    stats = FeatureStats(capture_all=capture_all)
    picks = pick_indices(len(label_pool), num, seed, stream)
    bar = tqdm(total=num, desc=desc, unit='img', disable=not progress, leave=False)
    for start in range(0, num, batch_size):
        idx = np.arange(start, min(start + batch_size, num))
        z = latents(G, seed + idx)
        c = label_pool[picks[idx]]
        images = render_uint8(G, z, c if cond_label is None else cond_label, c, resolution, device)
        stats.append(net(images).numpy())
        bar.update(len(idx))
    bar.close()
    return stats

"""The metric registry and ``compute_metrics``, the one entry point of the CLI and of training snapshots.

Names (see docs/metrics.md):

  fid50k_full   FID of 50k generated images against every dataset image (StyleGAN / EG3D protocol)
  kid50k_full   KID, same images
  fid_front     FID per view bin: dataset images with |yaw| < 45, generated at poses of those images
  fid_side      ... 45 <= |yaw| < 135
  fid_back      ... |yaw| >= 135
  fid3d         FID with the generator conditioned on a frontal camera and rendered at dataset poses
  ff_rate       fraction of seeds whose back views (yaw 150-210) show a face (face classifier)
  mirror_score  how much the back view repeats the mirrored front view (1 = exactly, 0 = unrelated)

The FID / KID metrics need a dataset and the Inception network file; ff_rate and
mirror_score need neither. ``num`` sets the number of generated images (seeds for ff_rate
and mirror_score) of every metric; without it each metric uses its default.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from spherehead.errors import UserError

STREAM_FULL = 0          # picks of fid50k_full, kid50k_full and fid3d (same latents and cameras)
STREAM_BIN = (1, 2, 3)   # picks of fid_front, fid_side, fid_back


@dataclass(frozen=True)
class MetricSpec:
    name: str
    default_num: int
    needs_data: bool
    description: str


_SPECS = (
    MetricSpec('fid50k_full', 50000, True, 'FID, generated at dataset poses vs all dataset images'),
    MetricSpec('kid50k_full', 50000, True, 'KID, generated at dataset poses vs all dataset images'),
    MetricSpec('fid_front', 10000, True, 'FID of the front view bin (|yaw| < 45)'),
    MetricSpec('fid_side', 10000, True, 'FID of the side view bin (45 <= |yaw| < 135)'),
    MetricSpec('fid_back', 10000, True, 'FID of the back view bin (|yaw| >= 135)'),
    MetricSpec('fid3d', 50000, True, 'FID, conditioned on a frontal camera, rendered at dataset poses'),
    MetricSpec('ff_rate', 1000, False, 'fraction of seeds whose back views (yaw 150-210) show a face'),
    MetricSpec('mirror_score', 1000, False, 'correlation of back view and mirrored front view details'),
)
SPECS: dict[str, MetricSpec] = {s.name: s for s in _SPECS}
METRICS: tuple[str, ...] = tuple(SPECS)


def parse_metrics(metrics: str | list[str] | tuple[str, ...]) -> list[str]:
    """'fid50k_full,ff_rate' or a list -> list of known names, in order, without repeats (UserError otherwise)."""
    names = metrics.split(',') if isinstance(metrics, str) else list(metrics)
    out = []
    for name in (n.strip() for n in names):
        if not name or name == 'none':
            continue
        if name not in SPECS:
            raise UserError(f'unknown metric {name!r}; choose from {", ".join(METRICS)}')
        if name not in out:
            out.append(name)
    return out


def needs_dataset(metrics: list[str]) -> bool:
    return any(SPECS[m].needs_data for m in metrics)


def _metrics_dataset(dataset, what: str = 'metrics'):
    """A HeadDataset of every image of ``dataset`` (options or path) as it is on disk: no mirroring,
    re-balancing, yaw filter or size cap (the "_full" convention), no masks or parsing maps."""
    from spherehead.data import DatasetError, DatasetOptions, HeadDataset
    if dataset is None or dataset == '':
        raise UserError(f'{what}: these metrics compare against a dataset; give one (--data DATASET)')
    opts = DatasetOptions(path=os.fspath(dataset)) if isinstance(dataset, (str, os.PathLike)) else dataset
    opts = DatasetOptions(**{**asdict(opts), 'xflip': False, 'rebalance': False, 'yaw_range': None,
                             'front_only_deg': None, 'max_size': None, 'masks': False, 'parsing': False})
    try:
        return HeadDataset(opts)
    except DatasetError as e:
        raise UserError(str(e)) from None


def validate_metrics(metrics: str | list[str], inception: str | None = None, dataset=None) -> list[str]:
    """Check a metric list before any work (train.py does this before training).

    Raises UserError for an unknown name, for FID / KID metrics without an Inception file
    (``inception`` or $SPHEREHEAD_INCEPTION) or, when ``dataset`` is given, for a dataset that
    does not open or has fewer than 2 images in a requested view bin. Returns the parsed names.
    """
    from spherehead.metrics.inception import load_feature_network
    from spherehead.metrics.views import VIEW_NAMES, bin_description, view_groups
    names = parse_metrics(metrics)
    if needs_dataset(names):
        load_feature_network(inception)    # loads it once: a broken file fails here, not at the first snapshot
        if dataset is not None:
            ds = _metrics_dataset(dataset)
            counts = np.bincount(view_groups(ds.item_yaw()), minlength=3)
            for k, view in enumerate(VIEW_NAMES):
                if f'fid_{view}' in names and counts[k] < 2:
                    raise UserError(f'{ds.options.path}: fid_{view} needs dataset images in the {bin_description(k)} '
                                    f'bin, the dataset has {counts[k]}; drop fid_{view} from the metrics')
            ds.close()
    return names


class _Context:
    """What the metrics of one ``compute_metrics`` call share: the dataset's features per view
    bin (one pass) and generated features per (stream, num, conditioning)."""

    def __init__(self, G, dataset, net, device, seed, progress, batch_size, cache_dir, keep_rows):
        self.G, self.dataset, self.net = G, dataset, net
        self.device, self.seed, self.progress = device, seed, progress
        self.batch_size, self.cache_dir, self.keep_rows = batch_size, cache_dir, keep_rows
        self._real = None
        self._gen = {}
        if dataset is not None:
            from spherehead.metrics.views import view_groups
            self.labels = torch.from_numpy(np.asarray(dataset.labels, np.float32))   # items == rows (see _metrics_dataset)
            self.groups = view_groups(dataset.item_yaw())

    def real(self, group: int | None = None):
        from spherehead.metrics.stats import dataset_stats
        if self._real is None:
            self._real = dataset_stats(self.dataset, self.net, self.groups, 3, capture_all=self.keep_rows,
                                       batch_size=max(self.batch_size, 32), progress=self.progress,
                                       cache_dir=self.cache_dir, group_key='views:0-45-135')
        if group is not None:
            return self._real[group]
        return self._real[0].merge(self._real[1]).merge(self._real[2])

    def generated(self, stream: int, num: int, group: int | None = None, frontal_condition: bool = False):
        from spherehead.metrics.fid3d import frontal_condition as frontal
        from spherehead.metrics.stats import generator_stats
        key = (stream, num, group, frontal_condition)
        if key not in self._gen:
            pool = self.labels if group is None else self.labels[torch.from_numpy(self.groups == group)]
            self._gen[key] = generator_stats(
                self.G, self.net, pool, num, self.seed, stream, cond_label=frontal() if frontal_condition else None,
                resolution=self.dataset.resolution, capture_all=self.keep_rows and stream == STREAM_FULL and group is None,
                batch_size=self.batch_size, device=self.device, progress=self.progress,
                desc=f'generated (stream {stream}{", frontal" if frontal_condition else ""})')
        return self._gen[key]


def _fid(real, gen) -> float:
    from spherehead.metrics.distance import frechet_distance
    return frechet_distance(*gen.mean_cov(), *real.mean_cov())


def _bin_fid(k: int) -> Callable:
    def run(ctx: _Context, num: int) -> float:
        from spherehead.metrics.views import bin_description
        real = ctx.real(k)
        if real.num < 2:
            raise UserError(f'{ctx.dataset.options.path}: {real.num} dataset images in the {bin_description(k)} bin; '
                            f'its FID needs at least 2')
        return _fid(real, ctx.generated(STREAM_BIN[k], num, group=k))
    return run


def _kid(ctx: _Context, num: int) -> float:
    from spherehead.metrics.distance import kernel_inception_distance
    return kernel_inception_distance(ctx.real().all(), ctx.generated(STREAM_FULL, num).all(), seed=ctx.seed)


def _ff(ctx: _Context, num: int) -> float:
    from spherehead.metrics.ff_rate import ff_rate
    return ff_rate(ctx.G, num, ctx.seed, ctx.device, ctx.batch_size, ctx.progress)[0]


def _mirror(ctx: _Context, num: int) -> float:
    from spherehead.metrics.mirror import mirror_score
    return mirror_score(ctx.G, num, ctx.seed, ctx.device, ctx.batch_size, ctx.progress)


_RUN: dict[str, Callable[[_Context, int], float]] = {
    'fid50k_full': lambda ctx, num: _fid(ctx.real(), ctx.generated(STREAM_FULL, num)),
    'kid50k_full': _kid,
    'fid_front': _bin_fid(0),
    'fid_side': _bin_fid(1),
    'fid_back': _bin_fid(2),
    'fid3d': lambda ctx, num: _fid(ctx.real(), ctx.generated(STREAM_FULL, num, frontal_condition=True)),
    'ff_rate': _ff,
    'mirror_score': _mirror,
}


def compute_metrics(G, dataset, metrics: str | list[str], num: int | None = None, device: str | torch.device = 'cpu',
                    inception: str | None = None, seed: int = 0, progress: bool = True, batch_size: int = 8,
                    cache_dir: str | os.PathLike | None = None, feature_net=None) -> dict[str, float]:
    """Compute ``metrics`` for generator G; returns {name: value} in the order asked.

    dataset: a DatasetOptions or a path (needed by the FID / KID metrics; every image is used,
    without mirroring or re-balancing). num: generated images (seeds for ff_rate and
    mirror_score) per metric; None = each metric's default (50k for fid50k_full). inception:
    the feature network file (else $SPHEREHEAD_INCEPTION). seed: first latent seed; camera
    picks and KID subsets derive from it. cache_dir: keep dataset features there between calls
    (training snapshots). feature_net: another feature network for the FID / KID metrics (same call
    convention as the Inception one, e.g. ``spherehead.metrics.vgg16.VGGFeatureNetwork``: the values
    are then Fréchet distances on its features, not FID). The generator is used in eval mode without
    gradients and left as it was.
    """
    names = parse_metrics(metrics)
    if num is not None and num < 2:
        raise UserError(f'num={num}: the metrics need at least 2 generated images')
    ds = net = None
    if needs_dataset(names):
        from spherehead.metrics.inception import load_feature_network
        net = feature_net if feature_net is not None else load_feature_network(inception, device)
        ds = _metrics_dataset(dataset)
    was_training = G.training
    G.eval()
    try:
        with torch.no_grad():
            ctx = _Context(G, ds, net, device, int(seed), progress, batch_size, cache_dir,
                           keep_rows='kid50k_full' in names)
            results = {}
            for name in names:
                results[name] = float(_RUN[name](ctx, num if num is not None else SPECS[name].default_num))
    finally:
        G.train(was_training)
        if ds is not None:
            ds.close()
    return results

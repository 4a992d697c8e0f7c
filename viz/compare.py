"""Compare mode: two networks rendered in lockstep, side by side, with an optional difference panel.

``PairRenderer`` is what the render worker owns. Without ``args.compare`` it is the plain
Renderer. With it, one request renders the left network (``args.network``) and then the right
one (``args.compare``) with the same seed, camera, sphere choice, render type and overlays, on
the same worker thread (on a CPU the two renders share the worker's cores, one after the
other), and hands back one image::

    [ left | right ]                   or, with args.compare_diff,   [ left | right | difference ]

Each side keeps its own Renderer (its own network, latent and backbone caches; a network that
fails to load leaves that side's previous one). The halves are scaled (nearest) to the larger
of the two output sizes. Each side's render time is kept, so the window can show a frame rate
per side. Two networks with different ``z_dim`` draw different latents from the same seed; the
result says so.

The difference panel compares the quantity behind the render type, not the colours:
RGB (image, raw), depth in world units, the mask, the parsing class, the sphere weight.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from viz import colormaps
from viz.render_args import RenderArgs
from viz.renderer import Renderer, RenderResult

GAP = 4                      # pixels between the panels (as in the side-by-side sphere view)
GAP_GREY = 40
PLACEHOLDER_GREY = 32        # a side that has no image (its network failed, or its render did)
# What shows white in the difference panel, per render type, and what the mean is measured in.
DIFF_SCALE = {'image': (1.0, 'RGB, -1..1'), 'raw': (1.0, 'RGB, -1..1'), 'depth': (0.2, 'world units'),
              'mask': (1.0, 'opacity'), 'parsing': (1.0, 'share of pixels'), 'weight': (1.0, 'sphere weight')}


@dataclass
class Side:
    """One half of a comparison."""
    source: str                                  # the network shown on this side
    network_info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0                         # this side's render time
    error: str | None = None                     # why this side has no image (one line)
    load_error: str | None = None                # why ``failed_network`` did not load (the side shows its previous one)
    failed_network: str | None = None
    notes: list[str] = field(default_factory=list)
    seam_fraction: dict[str, float] = field(default_factory=dict)
    depth_range: tuple[float, float] | None = None

    @property
    def z_dim(self) -> int | None:
        return self.network_info.get('config', {}).get('z_dim')

    @property
    def name(self) -> str:
        return short_name(self.source)

    def label(self) -> str:
        """'demo  dual_sphere  84 ms (11.9 /s)': what the panel's first line says."""
        rate = f'{1000 * self.seconds:.0f} ms ({1 / self.seconds:.1f} /s)' if self.seconds > 0 else ''
        return '  '.join(p for p in (self.name, self.network_info.get('representation', ''), rate) if p)


@dataclass
class Comparison:
    """What compare mode adds to a RenderResult."""
    left: Side
    right: Side
    panel_size: int                              # S: each panel is S x S pixels, GAP apart
    latents: str                                 # one line: same z, or that the latents differ
    latents_differ: bool = False
    diff_mean: float | None = None               # mean difference, in DIFF_SCALE's unit
    diff_text: str = ''                          # the difference panel's label


def short_name(source: str) -> str:
    """A network source as a panel label: the file name of a path, else the name itself."""
    import os
    return os.path.basename(source.rstrip('/')) if os.sep in source else source


def latents_line(left: int | None, right: int | None) -> tuple[str, bool]:
    """(what the window says about the two sides' latents, whether they differ)."""
    if left is None or right is None:
        return '', False
    if left == right:
        return f'same seed, same z on both sides (z_dim {left}); each network maps it to its own w', False
    return (f'latents differ: z_dim {left} (left) vs {right} (right); the same seed draws a different z '
            f'for each side', True)


def resize_nearest(a: np.ndarray, size: int) -> np.ndarray:
    """[h, w, C] -> [size, size, C] by nearest neighbour (no change when already that size)."""
    h, w = a.shape[:2]
    if h == size and w == size:
        return a
    rows = np.arange(size) * h // size
    cols = np.arange(size) * w // size
    return a[rows][:, cols]


def difference(kind: str, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float, str]:
    """Left and right values of one render type ([S, S, C] float32, NaN = no surface) ->
    ([S, S, 3] uint8 difference image, mean difference, label).

    image / raw: |a - b| averaged over RGB; depth, weight: |a - b| where both sides have
    surface (green where only one has); mask: |a - b|; parsing: whether the classes differ.
    """
    scale, unit = DIFF_SCALE[kind]
    if kind == 'parsing':
        d = (a[..., 0] != b[..., 0]).astype(np.float32)
        valid, one_sided = np.ones(d.shape, bool), None
    else:
        fa, fb = np.isfinite(a).all(axis=-1), np.isfinite(b).all(axis=-1)
        valid, one_sided = fa & fb, fa != fb
        d = np.where(valid, np.abs(np.nan_to_num(a) - np.nan_to_num(b)).mean(axis=-1), 0.0).astype(np.float32)
    mean = float(d[valid].mean()) if valid.any() else 0.0
    rgb = colormaps.difference_to_rgb(np.clip(d / scale, 0.0, 1.0), one_sided)
    if kind == 'parsing':
        text = f'difference: classes differ on {100 * mean:.1f}% of pixels'
    else:
        where = ' where both have surface; green: one side only' if kind in ('depth', 'weight') else ''
        text = f'difference: mean {mean:.3f} ({unit}; white {scale:g}){where}'
    return rgb, mean, text


def _side(result: RenderResult) -> Side:
    return Side(source=result.args.network,
                network_info=dict(result.network_info),
                seconds=result.timings.get('total', 0.0) - result.timings.get('load', 0.0),   # rendering, not loading
                error=result.error, load_error=result.load_error, failed_network=result.failed_network,
                notes=list(result.notes), seam_fraction=dict(result.seam_fraction),
                depth_range=result.depth_range)


def compose(args: RenderArgs, left: RenderResult, right: RenderResult) -> RenderResult:
    """One RenderResult of the pair: the image [left | right (| difference)], the left side's
    network, latent and inspection images, both sides' timings, and ``comparison``."""
    sides = (_side(left), _side(right))
    images = [r.image for r in (left, right)]
    size = max((im.shape[0] for im in images if im is not None), default=0)
    result = RenderResult(args=args.replace(network=left.args.network, compare=right.args.network))
    result.network_info = left.network_info
    result.load_error, result.failed_network = left.load_error, left.failed_network
    result.w, result.planes_image, result.planes_rows = left.w, left.planes_image, left.planes_rows
    result.weight_maps_image, result.weight_maps_rows = left.weight_maps_image, left.weight_maps_rows
    result.seam_fraction, result.depth_range = left.seam_fraction, left.depth_range
    result.parsing_legend = left.parsing_legend
    result.backbone_cached = left.backbone_cached and right.backbone_cached
    for r in (left, right):
        for k, v in r.timings.items():
            result.timings[k] = result.timings.get(k, 0.0) + v
    result.timings['left'], result.timings['right'] = sides[0].seconds, sides[1].seconds
    line, differ = latents_line(sides[0].z_dim, sides[1].z_dim)
    cmp = Comparison(left=sides[0], right=sides[1], panel_size=size, latents=line, latents_differ=differ)
    result.comparison = cmp
    if line:
        result.notes.append(line)
    if size == 0:                                   # neither side has an image
        result.error = left.error or right.error
        result.traceback = left.traceback or right.traceback
        return result
    t0 = time.perf_counter()
    panels = [resize_nearest(im, size) if im is not None else np.full((size, size, 3), PLACEHOLDER_GREY, np.uint8)
              for im in images]
    result.panels = [sides[0].name, sides[1].name]
    if args.compare_diff:
        if left.values is not None and right.values is not None:
            rgb, cmp.diff_mean, cmp.diff_text = difference(args.render_type, resize_nearest(left.values, size),
                                                           resize_nearest(right.values, size))
        else:
            rgb, cmp.diff_text = np.full((size, size, 3), PLACEHOLDER_GREY, np.uint8), \
                'difference: needs an image on both sides'
        panels.append(rgb)
        result.panels.append('difference')
    gap = np.full((size, GAP, 3), GAP_GREY, np.uint8)
    result.image = np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)
    result.timings['post'] = result.timings.get('post', 0.0) + time.perf_counter() - t0
    return result


class PairRenderer:
    """The worker's renderer: a Renderer for the left (main) network and, once compare mode is
    asked for, a second one for the right network. Not thread-safe: one worker thread owns it."""

    def __init__(self, device: str = 'cpu', load_generator: Callable[..., Any] | None = None) -> None:
        self._device, self._load_generator = device, load_generator
        self.left = Renderer(device, load_generator=load_generator)
        self.right: Renderer | None = None

    @property
    def status(self) -> str:
        if self.right is not None and self.right.status != 'idle':
            return self.right.status
        return self.left.status

    def export_head(self, args: RenderArgs, path: str, kind: str, **options: Any) -> str:
        """Export the main (left) network's head; see ``Renderer.export_head``. In compare mode the
        right network is only for looking at, so the Capture panel writes what the left panel shows."""
        return self.left.export_head(args.replace(compare='', side_by_side=False), path, kind, **options)

    def render(self, args: RenderArgs) -> RenderResult:
        """Render ``args``; with ``args.compare`` both networks, in lockstep. Never raises."""
        if not args.compare:
            return self.left.render(args)
        t0 = time.perf_counter()
        if self.right is None:
            self.right = Renderer(self._device, load_generator=self._load_generator)
        single = args.replace(side_by_side=False)     # one panel per side
        left = self.left.render(single)
        right = self.right.render(single.replace(network=args.compare, inspect=False))
        result = compose(args, left, right)
        result.timings['total'] = time.perf_counter() - t0
        return result

"""`spherehead video`: a 360-degree turntable of generated heads (.mp4 or .gif), seeds tiled in a
grid, optionally spheres A, B and fused side by side.

Frames are rendered without ray jitter (``deterministic=True``) and with constant noise, so a
seed gives the same pixels on every run and in every tile of a grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

import click
import numpy as np
import torch

from spherehead.errors import UserError
from spherehead.tools import cli_common as cc
from spherehead.tools.generate import OUTPUTS, to_uint8
from spherehead.tools.heads import check_sphere, seed_ws
from spherehead.media import VideoWriter, check_replaceable

VIDEO_EXTENSIONS = ('.mp4', '.gif')
COMPARE_SPHERES = ('A', 'B', 'fused')


@dataclass
class ViewConfig:
    """What one cell of a frame shows: which spheres (left to right) and which output."""
    spheres: tuple[str, ...] = ('fused',)
    output: str = 'image'          # one of spherehead.tools.generate.OUTPUTS
    pitch_deg: float = 0.0         # camera elevation (+90 = from above)


@dataclass
class TurntableConfig:
    """A turntable: ``frames`` evenly spaced yaws over 360 degrees (the last frame is one step
    short of the first, so the video loops without a repeated frame)."""
    frames: int = 120
    fps: float = 30.0
    start_yaw_deg: float = 0.0     # yaw of the first frame (0 = front)
    view: ViewConfig = field(default_factory=ViewConfig)

    def yaw(self, i: int) -> float:
        return self.start_yaw_deg + 360.0 * i / self.frames


def render_cell(G, ws: torch.Tensor, planes, yaw_deg: float, view: ViewConfig) -> np.ndarray:
    """One head (ws [1, num_ws, w_dim], its cached planes) from one yaw -> [H, W * len(spheres), 3] uint8,
    spheres left to right."""
    import spherehead as sh
    c = sh.camera.lookat(yaw_deg, view.pitch_deg, device=ws.device)
    images = []
    with torch.no_grad():
        for sphere in view.spheres:
            out = G.synthesis(ws, c, sphere=sphere, noise_mode='const', deterministic=True, planes=planes)
            images.append(to_uint8(out, view.output))
    return np.concatenate(images, axis=1)


def tile(cells: list[np.ndarray], cols: int) -> np.ndarray:
    """Cells [H, W, 3] (all one size) -> a grid [rows * H, cols * W, 3], row by row; empty cells black."""
    rows = math.ceil(len(cells) / cols)
    h, w, _ = cells[0].shape
    grid = np.zeros((rows * h, cols * w, 3), dtype=np.uint8)
    for i, cell in enumerate(cells):
        r, c = divmod(i, cols)
        grid[r * h:(r + 1) * h, c * w:(c + 1) * w] = cell
    return grid


def grid_columns(num_cells: int, compare: bool) -> int:
    """Seeds side by side: a near-square grid; with three spheres per seed, one seed per row."""
    return 1 if compare else math.ceil(math.sqrt(num_cells))


def turntable_frames(G, heads: list[tuple[torch.Tensor, dict]], cfg: TurntableConfig,
                     cols: int) -> Iterator[np.ndarray]:
    """heads: (ws, planes) per seed -> frames [rows * H, cols * W * len(spheres), 3] uint8."""
    for i in range(cfg.frames):
        yield tile([render_cell(G, ws, planes, cfg.yaw(i), cfg.view) for ws, planes in heads], cols)


def check_view(G, sphere: str, compare: bool, output: str) -> tuple[str, ...]:
    """Validate --sphere / --compare-spheres / --output for this model (exit 2, one line);
    returns the spheres each cell shows, left to right."""
    check_sphere(G, sphere)
    if output == 'parsing' and not G.config.use_parsing:
        raise click.BadParameter('parsing: this model has no parsing branch; choose another output',
                                 param_hint='--output')
    if output == 'weight' and not G.config.is_sphere:
        raise click.BadParameter(f'weight: this model is a {G.config.representation}, it has no sphere weight',
                                 param_hint='--output')
    if not compare:
        return (sphere,)
    if sphere != 'fused':
        raise click.BadParameter(f'it shows A, B and fused together; drop --sphere {sphere}',
                                 param_hint='--compare-spheres')
    if G.config.num_spheres != 2:
        raise click.BadParameter(f'needs two spheres; this model is a {G.config.representation}',
                                 param_hint='--compare-spheres')
    return COMPARE_SPHERES


MAX_FRAME_SIDE = 8192   # H.264 players and encoders stop around here; also bounds the memory of a GIF


def check_frame_size(G, num_seeds: int, spheres: tuple[str, ...], output: str, compare: bool) -> tuple[int, int]:
    """(width, height) of the tiled frames; refuses (exit 2) frames over MAX_FRAME_SIDE on a side."""
    cell = G.img_resolution if output == 'image' else G.config.rendering.neural_rendering_resolution
    cols = grid_columns(num_seeds, compare)
    width, height = cols * cell * len(spheres), math.ceil(num_seeds / cols) * cell
    if max(width, height) > MAX_FRAME_SIDE:
        raise click.BadParameter(f'{num_seeds} seeds make frames of {width}x{height} pixels, more than '
                                 f'{MAX_FRAME_SIDE} on a side; ask for fewer seeds', param_hint='--seeds')
    return width, height


def prepare_out(out: str):
    """The --out path after OutputFile's checks: refuse replacing another kind of file, make its folder."""
    try:
        check_replaceable(out)
    except UserError as e:
        raise click.BadParameter(str(e), param_hint='--out') from None
    return cc.make_parent(out)


SPHERE_HELP = 'A = sphere A alone (F1), B = sphere B alone (F2), fused = both (A and B need a sphere model)'


def _stack(*decorators):
    def apply(f):
        for d in reversed(decorators):
            f = d(f)
        return f
    return apply


def head_options():
    """--network, --device, --trunc, --sphere: which network renders which heads (video, interpolate)."""
    return _stack(cc.network_option(), cc.device_option(), cc.trunc_option(), cc.sphere_option(help=SPHERE_HELP))


def video_options(default_out: str):
    """--fps, --pitch, --output, --compare-spheres, --out: how a video is drawn and written."""
    return _stack(
        click.option('--fps', type=cc.Finite('fps', 1, 240), default=30.0, show_default=True, help='frames per second'),
        click.option('--pitch', type=cc.Finite('pitch', -89, 89), default=0.0, show_default=True,
                     help='camera elevation in degrees (+ = from above)'),
        click.option('--output', 'what', type=click.Choice(OUTPUTS), default='image', show_default=True,
                     help='what to show'),
        click.option('--compare-spheres', is_flag=True,
                     help='show sphere A, sphere B and fused side by side (left to right)'),
        click.option('--out', type=cc.OutputFile(VIDEO_EXTENSIONS, 'video'), default=default_out, show_default=True,
                     help='.mp4 (H.264) or .gif'))


@cc.command()
@head_options()
@click.option('--seeds', type=cc.SeedList(), default='0-3', show_default=True,
              help="seeds, e.g. '0,1,2' or '0-3' (tiled in a grid)")
@click.option('--frames', type=click.IntRange(min=1, max=100000), default=120, show_default=True,
              help='frames for the 360 degrees')
@video_options(default_out='turntable.mp4')
def video(network, device, truncation_psi, sphere, seeds, frames, fps, pitch, what, compare_spheres, out):
    """A 360-degree turntable of each seed (seeds tiled in a grid), rendered without ray jitter."""
    from tqdm import tqdm
    G = cc.load_network(network, device)
    spheres = check_view(G, sphere, compare_spheres, what)
    check_frame_size(G, len(seeds), spheres, what, compare_spheres)
    path = prepare_out(out)
    cfg = TurntableConfig(frames=frames, fps=fps, view=ViewConfig(spheres=spheres, output=what, pitch_deg=pitch))
    heads = []
    for seed in seeds:
        ws = seed_ws(G, seed, truncation_psi, device)
        with torch.no_grad():
            heads.append((ws, G.backbone_planes(ws, noise_mode='const')))
    with VideoWriter(path, fps) as writer:
        for frame in tqdm(turntable_frames(G, heads, cfg, grid_columns(len(heads), compare_spheres)),
                          total=frames, desc='turntable', unit='frame'):
            writer.append(frame)
    h, w = writer.size
    click.echo(f'wrote {path}: {frames} frames of {w}x{h} at {fps:g} fps, {len(seeds)} seed(s) ({G.provenance})')

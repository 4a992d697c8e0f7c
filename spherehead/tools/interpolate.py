"""`spherehead interpolate`: a video that blends from one seed's head to the next (linear in W,
as StyleGAN / EG3D interpolate) while the camera orbits.

Each frame maps its own ws, so the backbone runs once per frame (unlike a turntable).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import click
import numpy as np
import torch

from spherehead.tools import cli_common as cc
from spherehead.tools.heads import seed_ws
from spherehead.media import VideoWriter
from spherehead.tools.video import (ViewConfig, check_view, head_options, prepare_out, render_cell,
                                    video_options)


@dataclass
class InterpolationConfig:
    """``steps`` frames per pair of consecutive seeds; the camera turns ``orbit_deg`` over the video.

    Without ``loop``: frames = steps * (seeds - 1), the first frame is the first seed and the last
    frame the last seed exactly. With ``loop``: frames = steps * seeds and the video blends back
    to the first seed (the last frame is one step short of it, so it repeats seamlessly).
    """
    steps: int = 60
    loop: bool = False
    orbit_deg: float = 360.0       # yaw swept over the whole video (0 = a still camera)
    start_yaw_deg: float = 0.0
    fps: float = 30.0
    view: ViewConfig = field(default_factory=ViewConfig)

    def num_frames(self, num_seeds: int) -> int:
        return self.steps * (num_seeds if self.loop else num_seeds - 1)

    def position(self, i: int, num_seeds: int) -> tuple[int, int, float]:
        """Frame i -> (index of the seed blended from, index blended to, blend weight t in [0, 1])."""
        frames = self.num_frames(num_seeds)
        if self.loop:
            u = i * num_seeds / frames
        else:
            u = i * (num_seeds - 1) / (frames - 1) if frames > 1 else 0.0
        a = min(int(np.floor(u)), num_seeds - 1 if self.loop else num_seeds - 2)
        return a, (a + 1) % num_seeds, float(u - a)

    def yaw(self, i: int, num_seeds: int) -> float:
        frames = self.num_frames(num_seeds)
        # A full orbit with a loop ends one step short of the start; otherwise the last frame ends it.
        span = frames if self.loop or frames == 1 else frames - 1
        return self.start_yaw_deg + self.orbit_deg * i / span


def interpolation_frames(G, ws_list: list[torch.Tensor], cfg: InterpolationConfig) -> Iterator[np.ndarray]:
    """ws [1, num_ws, w_dim] per seed -> frames [H, W * len(spheres), 3] uint8."""
    n = len(ws_list)
    for i in range(cfg.num_frames(n)):
        a, b, t = cfg.position(i, n)
        ws = torch.lerp(ws_list[a], ws_list[b], t)
        with torch.no_grad():
            planes = G.backbone_planes(ws, noise_mode='const')
        yield render_cell(G, ws, planes, cfg.yaw(i, n), cfg.view)


@cc.command()
@head_options()
@click.option('--seeds', type=cc.SeedList(), default='0,1', show_default=True,
              help="two or more seeds, blended in this order, e.g. '2,3' or '0-4'")
@click.option('--steps', type=click.IntRange(min=2, max=100000), default=60, show_default=True,
              help='frames from one seed to the next')
@click.option('--loop', is_flag=True, help='blend back to the first seed at the end')
@click.option('--orbit', type=cc.Finite('orbit', -3600, 3600), default=360.0, show_default=True,
              help='degrees the camera turns over the whole video (0 = still)')
@video_options(default_out='interp.mp4')
def interpolate(network, device, truncation_psi, sphere, seeds, steps, loop, orbit, fps, pitch, what,
                compare_spheres, out):
    """Blend between seeds (linearly in W) while the camera orbits; rendered without ray jitter."""
    from tqdm import tqdm
    if len(seeds) < 2:
        raise click.BadParameter(f'{",".join(map(str, seeds))}: give at least two seeds to blend, e.g. 2,3',
                                 param_hint='--seeds')
    G = cc.load_network(network, device)
    spheres = check_view(G, sphere, compare_spheres, what)
    path = prepare_out(out)
    cfg = InterpolationConfig(steps=steps, loop=loop, orbit_deg=orbit, fps=fps,
                              view=ViewConfig(spheres=spheres, output=what, pitch_deg=pitch))
    ws_list = [seed_ws(G, seed, truncation_psi, device) for seed in seeds]
    frames = cfg.num_frames(len(seeds))
    with VideoWriter(path, fps) as writer:
        for frame in tqdm(interpolation_frames(G, ws_list, cfg), total=frames, desc='interpolate', unit='frame'):
            writer.append(frame)
    h, w = writer.size
    click.echo(f'wrote {path}: {frames} frames of {w}x{h} at {fps:g} fps, seeds {",".join(map(str, seeds))} '
               f'({G.provenance})')

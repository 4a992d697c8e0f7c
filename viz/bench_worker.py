"""Headless timing of the visualizer's render-worker path (no window, no GL): the same Renderer
the GUI's worker runs, on any device.

    python -m viz.bench_worker --network random:paper --device cuda --frames 30
    python -m viz.bench_worker --network random:tiny --device cpu

Prints the device, the config and the date (on CPU, whether the fast CPU inference path is on:
SPHEREHEAD_NO_FAST_CPU=1 turns it off), then median / mean milliseconds per stage for
(1) orbit frames (camera moves, backbone planes cached) and (2) new-latent frames
(seed changes: mapping + backbone + rendering).
"""
from __future__ import annotations

import datetime
import platform
import time

import click
import numpy as np
import torch

from viz.render_args import RenderArgs
from viz.renderer import Renderer

STAGES = ('mapping', 'backbone', 'render', 'superres', 'post', 'total')


def _summary(results) -> str:
    parts = []
    for k in STAGES:
        v = [r.timings[k] for r in results if k in r.timings]
        if v:
            parts.append(f'{k} {1000 * np.median(v):.1f}/{1000 * np.mean(v):.1f}')
    return ', '.join(parts)


@click.command(context_settings={'help_option_names': ['-h', '--help']})
@click.option('--network', default='random:paper', show_default=True)
@click.option('--device', default='cuda' if torch.cuda.is_available() else 'cpu', show_default=True)
@click.option('--frames', type=int, default=30, show_default=True, help='Frames per measurement.')
@click.option('--render', 'render_type', default='image', show_default=True)
@click.option('--sphere', default='fused', show_default=True)
def main(network, device, frames, render_type, sphere):
    """Time the render worker's path headlessly."""
    renderer = Renderer(device)
    base = RenderArgs(network=network, render_type=render_type, sphere=sphere)
    t0 = time.perf_counter()
    first = renderer.render(base)
    if first.error:
        raise click.ClickException(first.error)
    load_s = time.perf_counter() - t0
    for i in range(3):                                   # warm-up (kernels, allocator)
        renderer.render(base.replace(yaw=5.0 * (i + 1)))
    orbit = [renderer.render(base.replace(yaw=-180.0 + 360.0 * i / frames)) for i in range(frames)]
    latent = [renderer.render(base.replace(seed=1000 + i)) for i in range(frames)]
    cfg = renderer.network_info['config']
    r = cfg['rendering']
    dev = torch.cuda.get_device_name(torch.device(device)) if torch.device(device).type == 'cuda' else platform.processor() or 'cpu'
    from spherehead.ops.cpu_sampler import fast_cpu_disabled
    fast = 'off (SPHEREHEAD_NO_FAST_CPU / SPHEREHEAD_NO_CUDA_KERNELS set)' if fast_cpu_disabled() else 'on'
    click.echo(f'date {datetime.date.today()}  device {device} ({dev})  torch {torch.__version__}  threads {torch.get_num_threads()}'
               + (f'  fast CPU path {fast}' if torch.device(device).type == 'cpu' else ''))
    click.echo(f'network {network}: {renderer.network_info["provenance"]}; {cfg["representation"]}, '
               f'{cfg["img_resolution"]} px out, raw {r["neural_rendering_resolution"]} px, '
               f'{r["depth_resolution"]}+{r["depth_resolution_importance"]} samples, planes {cfg["triplane_size"]} px; '
               f'first frame incl. load {load_s:.2f} s')
    click.echo(f'render type {render_type}, sphere {sphere}; ms median/mean over {frames} frames')
    click.echo(f'orbit (backbone cached): {_summary(orbit)}  -> {1 / np.median([x.timings["total"] for x in orbit]):.1f} frames/s')
    click.echo(f'new latent each frame:  {_summary(latent)}  -> {1 / np.median([x.timings["total"] for x in latent]):.1f} frames/s')


if __name__ == '__main__':
    main()

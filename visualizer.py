"""SphereHead visualizer: orbit generated heads live and inspect each sphere.

    python visualizer.py [NETWORK]                  # NETWORK: .safetensors, .pkl, demo (default), random:tiny
    python visualizer.py random:tiny --yaw 180 --render depth --snapshot out/back_depth.png
    python visualizer.py random:tiny --benchmark 15

Needs a display (X11 / Wayland, or Xvfb via `xvfb-run -a`); see docs/visualizer.md.
"""
from __future__ import annotations

import os
import sys

import click

SPHERES = ('A', 'B', 'fused')
RENDER_TYPES = ('image', 'raw', 'depth', 'mask', 'parsing', 'weight')


def _fail(message: str, code: int = 1) -> None:
    click.echo(message, err=True)
    sys.exit(code)


def _window_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split('x'))
        assert w >= 320 and h >= 240
        return w, h
    except Exception:  # noqa: BLE001
        raise click.BadParameter(f'expected WIDTHxHEIGHT (at least 320x240), got {text!r}')


@click.command(context_settings={'help_option_names': ['-h', '--help']})
@click.argument('network', default='demo')
@click.option('--seed', type=int, default=None, help='Latent seed.  [default: 0]')
@click.option('--yaw', type=float, default=None, help='Camera yaw in degrees (0 front, 90 at +x, 180 back).')
@click.option('--pitch', type=float, default=None, help='Camera pitch in degrees (+90 from above).')
@click.option('--sphere', type=click.Choice(SPHERES), default=None, help='A (F1), B (F2) or fused.  [default: fused]')
@click.option('--all-spheres', is_flag=True, help='A | B | fused side by side.')
@click.option('--render', 'render_type', type=click.Choice(RENDER_TYPES), default=None,
              help='What to show.  [default: image]')
@click.option('--overlay', type=click.Choice(['none', 'seams']), default=None,
              help='seams: mark the surface near the seam / poles of A and of B.')
@click.option('--inspect', is_flag=True, help='Open the artifact panel: unwrapped weight maps and feature planes.')
@click.option('--snapshot', type=click.Path(dir_okay=False), default=None,
              help='Render the state, write the window to this PNG and exit.')
@click.option('--benchmark', type=float, default=None, metavar='SECONDS',
              help='Measure GUI FPS and worker frame time for SECONDS, print them and exit.')
@click.option('--window-size', default='1280x800', show_default=True, help='WIDTHxHEIGHT in screen pixels.')
@click.option('--fps', type=float, default=60.0, show_default=True, help='GUI frame rate cap (0 = uncapped).')
@click.option('--device', default=None, help='torch device.  [default: cuda if available, else cpu]')
@click.option('--timeout', type=float, default=600.0, show_default=True, help='Seconds to wait for a snapshot render.')
@click.option('--verbose', is_flag=True, help='Print tracebacks of render errors to the terminal.')
def main(network, seed, yaw, pitch, sphere, all_spheres, render_type, overlay, inspect, snapshot, benchmark,
         window_size, fps, device, timeout, verbose):
    """Live OpenGL / ImGui viewer of a SphereHead generator (NETWORK defaults to 'demo')."""
    # The display is checked before torch, OpenGL or glfw is touched: one line, never a crash.
    from gui_utils.display import NoDisplayError, display_problem
    problem = display_problem()
    if problem:
        _fail(problem)
    width, height = _window_size(window_size)
    import torch

    from viz.app import Visualizer
    device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        viz = Visualizer(network, device=device, width=width, height=height,
                         fps_limit=fps, verbose=verbose)
    except NoDisplayError as e:
        _fail(str(e))
    viz.set_state(seed=seed, yaw=yaw, pitch=pitch, sphere=sphere, render=render_type, overlay=overlay,
                  side_by_side=True if all_spheres else None, inspect=True if inspect else None)
    if snapshot:
        os.makedirs(os.path.dirname(os.path.abspath(snapshot)), exist_ok=True)
        try:
            err, _ = viz.snapshot(snapshot, timeout)
        finally:
            viz.close()
        if err:
            _fail(f'spherehead visualizer: {err}')
        click.echo(f'wrote {snapshot}')
        return
    if benchmark is not None:
        try:
            numbers = viz.benchmark(benchmark)
            gl = f'{viz.window.gl_renderer}'
        except RuntimeError as e:
            viz.close()
            _fail(f'spherehead visualizer: {e}')
        viz.close()
        click.echo(f'network {network}  device {device}  torch threads {torch.get_num_threads()}  '
                   f'cpus {os.cpu_count()}  GL {gl}  fps cap {fps or "none"}')
        for k, v in numbers.items():
            click.echo(f'{k:32s} {v:8.2f}')
        return
    viz.run()


if __name__ == '__main__':
    main()

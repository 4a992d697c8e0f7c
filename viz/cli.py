"""The visualizer's command line, shared by `python visualizer.py` and the installed `spherehead view`.

Importing this module loads click and the spherehead CLI helpers only: torch is imported when
the command runs, and the GUI packages (imgui-bundle, glfw, PyOpenGL) after the display check,
so `--help` and `--version` work without a display or the GUI extras.
"""
from __future__ import annotations

import importlib.util
import os

import click

from spherehead import __version__
from spherehead.errors import UserError
from spherehead.tools import cli_common as cc

SPHERES = ('A', 'B', 'fused')
RENDER_TYPES = ('image', 'raw', 'depth', 'mask', 'parsing', 'weight')
GUI_PACKAGES = (('imgui_bundle', 'imgui-bundle'), ('glfw', 'glfw'), ('OpenGL', 'PyOpenGL'))


def _window_size(ctx, param, text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise click.BadParameter(f'{text!r} is not WIDTHxHEIGHT; e.g. 1280x800', ctx, param) from None
    if not (320 <= w <= 16384 and 240 <= h <= 16384):
        raise click.BadParameter(f'{text!r} is out of range; use 320x240 to 16384x16384', ctx, param)
    return w, h


def _missing_gui_packages() -> list[str]:
    return [pip_name for module, pip_name in GUI_PACKAGES if importlib.util.find_spec(module) is None]


@cc.command()
@click.version_option(__version__, '--version', prog_name='SphereHead visualizer', message='%(prog)s %(version)s')
@click.argument('network', type=cc.Network(allow_dir=True), default='demo')
@click.option('--seed', type=click.IntRange(0, cc.MAX_SEED), default=None, help='Latent seed.  [default: 0]')
@click.option('--yaw', type=cc.Finite('yaw'), default=None,
              help='Camera yaw in degrees (0 front, 90 at +x, 180 back).')
@click.option('--pitch', type=cc.Finite('pitch', -90, 90), default=None,
              help='Camera pitch in degrees, -90..90 (+90 from above).')
@click.option('--sphere', type=click.Choice(SPHERES), default=None, help='A (F1), B (F2) or fused.  [default: fused]')
@click.option('--all-spheres', is_flag=True, help='A | B | fused side by side.')
@click.option('--render', 'render_type', type=click.Choice(RENDER_TYPES), default=None,
              help='What to show.  [default: image]')
@click.option('--overlay', type=click.Choice(['none', 'seams']), default=None,
              help='seams: mark the surface near the seam / poles of A and of B.')
@click.option('--inspect', is_flag=True, help='Open the artifact panel: unwrapped weight maps and feature planes.')
@click.option('--compare', type=cc.Network(allow_dir=True), default=None, metavar='NETWORK2',
              help='Render a second network beside the first, in lockstep (same seed, camera and view); a run '
                   'folder gives its newest snapshot.')
@click.option('--difference', is_flag=True, help='With --compare: add a panel with the difference of the two.')
@click.option('--snapshot', type=cc.OutputFile(('.png',), 'snapshot'), default=None,
              help='Render the state, write the window to this .png and exit.')
@click.option('--benchmark', type=cc.Finite('seconds', 0.5, 3600), default=None, metavar='SECONDS',
              help='Measure GUI frame rate, CPU use and worker frame time for SECONDS, print them and exit.')
@click.option('--window-size', default='1280x800', show_default=True, callback=_window_size,
              help='WIDTHxHEIGHT in screen pixels.')
@click.option('--fps', type=cc.Finite('fps', 0, 1000), default=None,
              help='Frame-rate cap while animating (0 = uncapped); still frames are not redrawn.  [default: 60 '
                   'with a GPU; 15 on CPU, where drawing the window faster takes the cores the renderer needs]')
@cc.device_option()
@click.option('--timeout', type=cc.Finite('timeout', 1, 1e6), default=600.0, show_default=True,
              help='Seconds to wait for a snapshot render.')
@click.option('--verbose', is_flag=True, help='Print tracebacks of render errors to the terminal.')
def main(network, seed, yaw, pitch, sphere, all_spheres, render_type, overlay, inspect, compare, difference,
         snapshot, benchmark, window_size, fps, device, timeout, verbose):
    """Live OpenGL / ImGui viewer of a SphereHead generator.

    NETWORK: a .safetensors of ours, a released EG3D / PanoHead / SphereHead .pkl, 'demo' (the
    default), 'random:tiny', or a training run folder: its newest network snapshot is shown and
    a newer one replaces it when it appears. --compare NETWORK2 renders a second network beside it.
    """
    if snapshot and benchmark is not None:
        raise click.UsageError('--snapshot and --benchmark exclude each other; use one')
    if difference and not compare:
        raise click.UsageError('--difference needs --compare NETWORK2 (the network to take the difference with)')
    if compare and os.path.isdir(compare):
        from spherehead.checkpoint import newest_snapshot
        newest = newest_snapshot(compare)
        if newest is None:
            raise UserError(f'--compare {compare}: no network-snapshot-*.safetensors in this run folder yet; give a '
                            'network file or a run folder with snapshots')
        compare = str(newest)
    if (snapshot or benchmark is not None) and os.path.isdir(network):
        from spherehead.checkpoint import newest_snapshot
        if newest_snapshot(network) is None:
            raise UserError(f'{network}: no network-snapshot-*.safetensors in this run folder yet; wait for the '
                            'first snapshot or give a network file')
    # The display is checked before OpenGL or glfw is touched: one line, never a crash.
    from gui_utils.display import NoDisplayError, display_problem
    problem = display_problem()
    if problem:
        raise UserError(problem)
    missing = _missing_gui_packages()
    if missing:
        raise UserError(f"the visualizer needs {', '.join(missing)}: run `pip install -e .[gui]` in the checkout "
                        f"or `pip install {' '.join(missing)}`")
    width, height = window_size
    import torch
    if fps is None:
        fps = 60.0 if str(device).startswith('cuda') else 15.0

    from viz.app import Visualizer
    try:
        viz = Visualizer(network, device=device, width=width, height=height, fps_limit=fps, verbose=verbose)
    except NoDisplayError as e:
        raise UserError(str(e)) from None
    viz.set_state(seed=seed, yaw=yaw, pitch=pitch, sphere=sphere, render=render_type, overlay=overlay,
                  side_by_side=True if all_spheres else None, inspect=True if inspect else None,
                  compare=compare, difference=True if difference else None)
    if snapshot:
        cc.make_parent(snapshot)
        try:
            err, _ = viz.snapshot(snapshot, timeout)
        finally:
            viz.close()
        if err:
            raise UserError(f'spherehead visualizer: {err}')
        click.echo(f'wrote {snapshot}')
        return
    if benchmark is not None:
        try:
            numbers = viz.benchmark(benchmark)
            gl = f'{viz.window.gl_renderer}'
        except RuntimeError as e:
            raise UserError(f'spherehead visualizer: {e}') from None
        finally:
            viz.close()
        click.echo(f'network {network}' + (f'  compare {compare}' if compare else '') +
                   f'  device {device}  torch threads {torch.get_num_threads()}  '
                   f'cpus {os.cpu_count()}  GL {gl}  fps cap {fps or "none"}')
        for k, v in numbers.items():
            click.echo(f'{k:32s} {v:8.2f}')
        return
    viz.run()

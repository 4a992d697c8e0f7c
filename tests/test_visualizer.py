"""Visualizer without a window: widget state -> render arguments, the renderer and its caches,
the worker dropping stale requests, and the one-line error when there is no display."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from viz.app import Visualizer
from viz.camera_widget import CameraWidget, wrap_yaw
from viz.latent_widget import LatentWidget
from viz.quality_widget import QualityWidget
from viz.render_args import RENDER_TYPES, RenderArgs
from viz.renderer import Renderer, RenderResult
from viz.worker import RenderWorker

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- widget state -> args
def test_default_state_gives_default_args():
    viz = Visualizer('random:tiny', open_window=False)
    args = viz.build_args()
    assert args == RenderArgs(network='random:tiny')
    assert args.sphere == 'fused' and args.render_type == 'image' and args.cache_backbone


def test_cli_state_flags_reach_render_args():
    viz = Visualizer('random:tiny', open_window=False)
    viz.set_state(seed=7, yaw=190.0, pitch=95.0, sphere='B', render='depth', overlay='seams', side_by_side=True)
    a = viz.args
    assert (a.seed, a.yaw, a.pitch, a.sphere, a.render_type, a.overlay_seams, a.side_by_side) == \
        (7, -170.0, 90.0, 'B', 'depth', True, True)
    with pytest.raises(ValueError):
        viz.set_state(sphere='C')
    with pytest.raises(ValueError):
        viz.set_state(render='normals')


def test_camera_widget_orbit_zoom_presets_turntable():
    cam = CameraWidget()
    cam.drag(-100, 0)                       # drag left: camera moves to the right (+yaw)
    assert cam.apply(RenderArgs()).yaw == pytest.approx(40.0)
    cam.drag(0, 1000)                       # far up: clamped at the pole
    assert cam.apply(RenderArgs()).pitch == 90.0
    r0 = cam.radius
    cam.zoom(+2)
    assert cam.radius < r0
    cam.zoom(-1000)
    assert cam.radius == 6.0
    cam.preset('back')
    assert (cam.yaw, cam.pitch) == (180.0, 0.0)
    cam.turntable, cam.speed = True, 90.0
    cam.tick(1.0)
    assert cam.apply(RenderArgs()).yaw == -90.0    # 180 + 90 wraps to -90
    assert wrap_yaw(-180.0) == 180.0 and wrap_yaw(540.0) == 180.0 and wrap_yaw(-30.0) == -30.0


def test_latent_and_quality_widgets():
    lat = LatentWidget()
    lat.seed, lat.seed2, lat.psi, lat.cutoff = 3, 9, 0.5, 0
    a = lat.apply(RenderArgs())
    assert (a.seed, a.seed2, a.truncation_psi, a.truncation_cutoff, a.interp) == (3, 9, 0.5, None, 0.0)
    lat.cutoff = 4
    assert lat.apply(RenderArgs()).truncation_cutoff == 4
    lat.animate, lat.period = True, 4.0
    lat.tick(1.0)                           # a quarter period: halfway through seed -> seed2
    assert lat.apply(RenderArgs()).interp == pytest.approx(0.5)
    q = QualityWidget()
    a = q.apply(RenderArgs())
    assert (a.neural_rendering_resolution, a.depth_resolution, a.depth_resolution_importance) == (None, None, None)
    q.resolution, q.depth_samples, q.importance_samples, q.cache_backbone = 48, 16, 0, False
    a = q.apply(RenderArgs())
    assert (a.neural_rendering_resolution, a.depth_resolution, a.depth_resolution_importance, a.cache_backbone) == \
        (48, 16, 0, False)


def test_network_widget_and_save_load_w(tmp_path):
    viz = Visualizer('demo', open_window=False)
    net = viz.network
    f = tmp_path / 'g.safetensors'
    f.write_bytes(b'')
    net.load(str(tmp_path))                 # a folder opens in the browser
    assert net.browse_dir == str(tmp_path) and ('g.safetensors', False) in net.entries()
    net.load(str(f))
    assert viz.build_args().network == str(f) and net.recent[0] == str(f)
    w = np.random.RandomState(0).randn(6, 32).astype(np.float32)
    path = str(tmp_path / 'w.npy')
    assert 'saved' in viz.latent.save_w(w, path)
    viz.latent.load_w(path)
    assert viz.build_args().w_path == path


def test_planes_key_ignores_camera_and_view_options():
    a = RenderArgs(network='random:tiny')
    b = a.replace(yaw=120, pitch=-30, radius=3.0, sphere='A', render_type='depth', overlay_seams=True,
                  neural_rendering_resolution=16)
    assert a.planes_key() == b.planes_key()
    assert a.planes_key() != a.replace(seed=1).planes_key()
    assert a.planes_key() != a.replace(truncation_psi=0.5).planes_key()


# ---------------------------------------------------------------------- renderer
@pytest.fixture(scope='module')
def renderer():
    return Renderer('cpu')


def test_renderer_every_type_and_backbone_cache(renderer):
    base = RenderArgs(network='random:tiny')
    first = renderer.render(base)
    assert first.error is None and not first.backbone_cached and 'backbone' in first.timings
    for kind in RENDER_TYPES:
        r = renderer.render(base.replace(render_type=kind, yaw=30.0))
        assert r.error is None, r.error
        assert r.image.dtype == np.uint8 and r.image.ndim == 3 and r.image.shape[2] == 3
        assert r.backbone_cached, 'only the camera / type changed: planes must be reused'
        assert r.image.std() > 1.0
    assert renderer.render(base.replace(render_type='depth')).depth_range is not None
    assert renderer.render(base.replace(render_type='parsing')).parsing_legend
    assert not renderer.render(base.replace(seed=5)).backbone_cached
    assert not renderer.render(base.replace(seed=5, cache_backbone=False)).backbone_cached


def test_renderer_side_by_side_and_inspection(renderer):
    r = renderer.render(RenderArgs(network='random:tiny', side_by_side=True, inspect=True, overlay_seams=True,
                                   pitch=60.0))
    assert r.error is None and r.panels == ['F1 (A)', 'F2 (B)', 'fused']
    s = r.image.shape[0]
    assert r.image.shape[1] == 3 * s + 2 * 4
    assert r.planes_image is not None and r.planes_rows == ['A', 'B']
    assert r.weight_maps_image is not None and set(r.seam_fraction) == {'A', 'B'}
    assert max(r.seam_fraction.values()) > 0


def test_renderer_reports_errors_instead_of_raising(renderer, tmp_path):
    r = renderer.render(RenderArgs(network=str(tmp_path / 'missing.safetensors')))
    assert r.image is None and r.error and '\n' not in r.error
    bad_w = tmp_path / 'w.npy'
    np.save(bad_w, np.zeros((3, 7), np.float32))
    r = renderer.render(RenderArgs(network='random:tiny', w_path=str(bad_w)))
    assert r.error and 'does not fit' in r.error
    assert renderer.render(RenderArgs(network='random:tiny')).error is None   # recovers


# ---------------------------------------------------------------------- worker
class _SlowRenderer:
    """Stands in for Renderer: takes 50 ms per frame and records what it rendered."""
    status = 'idle'

    def __init__(self):
        self.rendered = []

    def render(self, args):
        time.sleep(0.05)
        self.rendered.append(args)
        return RenderResult(args=args, image=np.zeros((4, 4, 3), np.uint8))


def test_worker_renders_only_the_newest_request():
    fake = _SlowRenderer()
    worker = RenderWorker(lambda: fake)
    try:
        for i in range(40):
            worker.submit(RenderArgs(seed=i))
            time.sleep(0.002)
        deadline = time.time() + 10
        last = None
        while time.time() < deadline:
            r = worker.poll()
            last = r or last
            if last is not None and last.args.seed == 39 and not worker.busy:
                break
            time.sleep(0.01)
        assert last is not None and last.args.seed == 39
        assert worker.dropped > 0 and len(fake.rendered) < 40
        assert worker.completed == len(fake.rendered)
    finally:
        worker.stop()
    assert not any(t.name == 'spherehead-render' and t.is_alive() for t in threading.enumerate())


# ---------------------------------------------------------------------- no display
def _run_visualizer(env_changes: dict, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ('DISPLAY', 'WAYLAND_DISPLAY')}
    env.update(env_changes)
    return subprocess.run([sys.executable, str(ROOT / 'visualizer.py'), 'random:tiny', *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='DISPLAY is an X11 / Linux notion')
@pytest.mark.parametrize('env', [{}, {'DISPLAY': ':31999'}], ids=['unset', 'unreachable'])
def test_no_display_is_one_line_and_non_zero(env, tmp_path):
    p = _run_visualizer(env, '--snapshot', str(tmp_path / 'x.png'))
    assert p.returncode not in (0, None) and p.returncode > 0, 'must exit non-zero, not crash on a signal'
    lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert 'Traceback' not in p.stderr
    assert 'DISPLAY' in lines[0] and 'xvfb-run' in lines[0] and 'spherehead generate' in lines[0]
    assert not (tmp_path / 'x.png').exists()

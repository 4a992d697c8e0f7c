"""Visualizer without a window: widget state -> render arguments, the renderer and its caches,
a failed network load keeping the previous network, following a training run folder, the
turntable never claiming a file it did not write, the worker dropping stale requests, and
the command line (one-line errors, --version, `spherehead view` installed, no display)."""
from __future__ import annotations

import os
import re
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

from micro_networks import micro_network   # tests/micro_networks.py

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
    net.load(str(tmp_path))                 # a folder without snapshots opens in the browser
    assert net.browse_dir == str(tmp_path) and ('g.safetensors', False) in net.entries()
    assert 'no network-snapshot' in net.error_text() and viz.build_args().network == 'demo'
    net.load(str(f))
    assert viz.build_args().network == str(f) and not net.error
    net.loaded(str(f))                      # the worker reports it: only then it is current and remembered
    assert net.current == str(f) and net.recent[0] == str(f)
    w = np.random.RandomState(0).randn(6, 32).astype(np.float32)
    path = str(tmp_path / 'w.npy')
    assert 'saved' in viz.latent.save_w(w, path)
    viz.latent.load_w(path)
    assert viz.build_args().w_path == path


def test_network_widget_failed_load_keeps_previous():
    viz = Visualizer('random:tiny', open_window=False)
    net = viz.network
    net.loaded('random:tiny')
    net.load('nope.safetensors')
    assert viz.build_args().network == 'nope.safetensors' and net.loading
    net.load_failed('nope.safetensors', 'nope.safetensors: no such file; give a .safetensors or .pkl network')
    # the request goes back to the network on screen; the panel says what failed, why, what to do and what stays
    assert viz.build_args().network == 'random:tiny' and not net.loading and net.reveal
    text = net.error_text()
    assert text == ('Could not load nope.safetensors: no such file; give a .safetensors or .pkl network. '
                    'Still showing random:tiny.')
    assert net.edit == 'nope.safetensors'   # left in the field to be corrected
    net.load('random:demo')                 # a newer request: a late failure of an older one changes nothing
    net.load_failed('nope.safetensors', 'late')
    assert viz.build_args().network == 'random:demo' and not net.error
    fresh = Visualizer('missing.pkl', open_window=False).network    # nothing loaded before
    fresh.load_failed('missing.pkl', 'missing.pkl: no such file')
    assert fresh.network == 'missing.pkl' and 'Nothing is loaded' in fresh.error_text()


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
    r = Renderer('cpu').render(RenderArgs(network=str(tmp_path / 'missing.safetensors')))
    assert r.image is None and r.error and '\n' not in r.error and 'missing.safetensors' in r.load_error
    bad_w = tmp_path / 'w.npy'
    np.save(bad_w, np.zeros((3, 7), np.float32))
    r = renderer.render(RenderArgs(network='random:tiny', w_path=str(bad_w)))
    assert r.error and 'does not fit' in r.error
    assert renderer.render(RenderArgs(network='random:tiny')).error is None   # recovers


def test_failed_load_keeps_the_previous_network_and_is_not_retried(tmp_path):
    import spherehead as sh
    calls = []

    def counting_loader(source, device='cpu'):
        calls.append(source)
        return sh.load_generator(source, device=device)
    r = Renderer('cpu', load_generator=counting_loader)
    good = r.render(RenderArgs(network='random:tiny', seed=1))
    text_file = tmp_path / 'notes.safetensors'
    text_file.write_text('hello')
    for bad in (str(tmp_path / 'missing.safetensors'), str(text_file)):
        res = r.render(RenderArgs(network=bad, seed=1))
        assert res.failed_network == bad and res.load_error and '\n' not in res.load_error
        assert res.error is None and res.image is not None          # rendered with the previous network
        assert res.args.network == 'random:tiny' and res.network_info['source'] == 'random:tiny'
        assert np.array_equal(res.image, good.image)
        n = len(calls)
        again = r.render(RenderArgs(network=bad, seed=2))           # same unchanged file: no second attempt
        assert len(calls) == n and again.load_error == res.load_error and again.image is not None
    sh.save_generator(sh.load_generator('random:tiny@5'), text_file)    # the file is fixed: tried again
    fixed = r.render(RenderArgs(network=str(text_file), seed=1))
    assert fixed.load_error is None and fixed.network_info['source'] == str(text_file)
    assert not np.array_equal(fixed.image, good.image)


# ---------------------------------------------------------------------- following a training run
def _snapshot(run_dir: Path, kimg: int, seed: int) -> Path:
    import spherehead as sh
    path = run_dir / f'network-snapshot-{kimg:06d}.safetensors'
    sh.save_generator(sh.load_generator(f'random:tiny@{seed}'), path)
    return path


def test_newest_snapshot(tmp_path):
    from spherehead.checkpoint import newest_snapshot
    from spherehead.errors import UserError
    assert newest_snapshot(tmp_path) is None
    for name in ('network-snapshot-000004.safetensors', 'network-snapshot-000120.safetensors',
                 'network-snapshot-000999.safetensors.tmp', 'network-snapshot-latest.safetensors',
                 'network-snapshot-000500.pkl', 'training-state-000800.pt'):
        (tmp_path / name).write_bytes(b'')
    (tmp_path / 'network-snapshot-000700.safetensors').mkdir()
    assert newest_snapshot(tmp_path) == tmp_path / 'network-snapshot-000120.safetensors'
    with pytest.raises(UserError, match='not a folder'):
        newest_snapshot(tmp_path / 'network-snapshot-000004.safetensors')


def test_network_widget_follows_a_run(tmp_path):
    run = tmp_path / '00003-tiny'
    run.mkdir()
    t = time.monotonic()                             # the widget looks at once, then every follow_interval s
    viz = Visualizer(str(run), open_window=False)
    net = viz.network
    assert net.follow_dir == str(run) and net.network == '' and 'no network-snapshot' in net.follow_status
    first = _snapshot(run, 0, seed=1)
    assert not net.poll_run(now=t + 0.5)                 # not due yet
    assert net.poll_run(now=t + 10) and viz.build_args().network == str(first)
    net.loaded(str(first))
    (run / 'network-snapshot-000008.safetensors.tmp').write_bytes(b'half written')
    assert not net.poll_run(now=t + 20)                # a snapshot being written is not taken
    newer = _snapshot(run, 4, seed=2)
    assert net.poll_run(now=t + 30) and viz.build_args().network == str(newer)
    net.load_failed(str(newer), 'damaged')           # a newer snapshot that fails: the older one stays, no retry
    assert viz.build_args().network == str(first) and not net.poll_run(now=t + 40)
    net.load('random:tiny')                          # loading a network stops following
    assert net.follow_dir is None and viz.build_args().network == 'random:tiny'


# ---------------------------------------------------------------------- capture
def test_turntable_without_frames_writes_no_file(tmp_path):
    viz = Visualizer('random:tiny', open_window=False)
    cap = viz.capture
    cap.outdir = str(tmp_path)
    cap.start_recording()
    viz.args = viz.build_args()
    viz.result = RenderResult(args=viz.args, error='cannot load x.safetensors: no such file')
    cap.tick(0.1)
    assert not cap.recording
    assert cap.message.startswith('no video written') and 'cannot load x.safetensors' in cap.message
    assert 'wrote' not in cap.message and list(tmp_path.iterdir()) == []


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
def test_unreachable_display_is_one_line_and_non_zero(tmp_path):
    # A separate process: glfw meets the missing X server here (DISPLAY unset is checked in-process below).
    p = _run_visualizer({'DISPLAY': ':31999'}, '--snapshot', str(tmp_path / 'x.png'))
    assert p.returncode not in (0, None) and p.returncode > 0, 'must exit non-zero, not crash on a signal'
    lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    assert 'Traceback' not in p.stderr
    assert 'DISPLAY' in lines[0] and 'xvfb-run' in lines[0] and 'spherehead generate' in lines[0]
    assert not (tmp_path / 'x.png').exists()


# ---------------------------------------------------------------------- command line
def _cli(args, **env):
    from click.testing import CliRunner

    from viz.cli import main
    return CliRunner(env=env or None).invoke(main, args, prog_name='visualizer.py')


BAD_ARGUMENTS = [
    (['random:tiny', '--snapshot', 'out'], 'does not end in .png'),
    (['random:tiny', '--snapshot', '{tmp}'], 'is a folder'),
    (['--seed', '-1'], '--seed'), (['--seed', 'a'], '--seed'),
    (['--yaw', 'nan'], 'not a finite number'), (['--pitch', '100'], 'out of range'),
    (['--window-size', '10x10'], 'out of range'), (['--window-size', 'big'], 'WIDTHxHEIGHT'),
    (['--fps', '-1'], 'out of range'), (['--device', 'gpu'], 'not a device'),
    (['--render', 'normals'], '--render'), (['--benchmark', '0'], 'out of range'),
    (['{tmp}/missing.safetensors'], 'no such file'), (['{tmp}/notes.txt'], 'unknown network file type'),
    (['random:huge'], 'unknown preset'), (['--snapshot', 'a.png', '--benchmark', '3'], 'exclude each other'),
    (['--difference'], '--difference needs --compare'), (['--compare', '{tmp}/missing.safetensors'], 'no such file'),
    (['--compare', '{tmp}/notes.txt'], 'unknown network file type'),
]


@pytest.mark.parametrize('args,expect', BAD_ARGUMENTS, ids=[' '.join(a) for a, _ in BAD_ARGUMENTS])
def test_bad_arguments_one_line_exit_2(args, expect, tmp_path):
    (tmp_path / 'notes.txt').write_text('hello')
    r = _cli([a.replace('{tmp}', str(tmp_path)) for a in args])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, (r.exit_code, r.output)
    assert expect in lines[0] and 'Traceback' not in r.output


def test_failures_one_line_exit_1(tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    r = _cli([str(run), '--snapshot', str(tmp_path / 'x.png')])     # a run without snapshots yet
    assert r.exit_code == 1 and 'no network-snapshot' in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _cli(['random:tiny', '--compare', str(run), '--snapshot', str(tmp_path / 'x.png')])
    assert r.exit_code == 1 and '--compare' in r.stderr and 'no network-snapshot' in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    if sys.platform.startswith('linux'):
        r = _cli(['random:tiny', '--snapshot', str(tmp_path / 'x.png')], DISPLAY=None, WAYLAND_DISPLAY=None)
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 1 and len(lines) == 1 and 'no display' in lines[0]
        assert 'DISPLAY' in lines[0] and 'xvfb-run' in lines[0] and 'spherehead generate' in lines[0]
    assert not (tmp_path / 'x.png').exists()


def test_version_and_spherehead_view_installed_without_gui_imports_at_help(tmp_path):
    assert _cli(['--version']).output.strip() == 'SphereHead visualizer 0.1.0'
    # Outside the checkout (so `viz` must come from the installed package) and in a fresh interpreter
    # (so we see what `spherehead --help` imports).
    code = ('import sys\nfrom spherehead.cli import main\n'
            "try:\n    main(['--help'], prog_name='spherehead')\nexcept SystemExit:\n    pass\n"
            "print('GUI modules:', sorted(m for m in ('imgui_bundle', 'glfw', 'OpenGL', 'viz', 'gui_utils') "
            "if m in sys.modules))\n"
            "main(['view', '--version'], prog_name='spherehead')\n")
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
    p = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert re.search(r'^\s+view\s+The live visualizer', p.stdout, re.M), p.stdout
    assert 'GUI modules: []' in p.stdout
    assert p.stdout.strip().endswith('SphereHead visualizer 0.1.0')


# ---------------------------------------------------------------------- compare mode
@pytest.fixture(scope='module')
def pair():
    from viz.compare import PairRenderer
    return PairRenderer('cpu')


def _halves(image: np.ndarray, n: int = 2) -> list[np.ndarray]:
    from viz.compare import GAP
    s = image.shape[0]
    assert image.shape[1] == n * s + (n - 1) * GAP
    return [image[:, i * (s + GAP): i * (s + GAP) + s] for i in range(n)]


def test_compare_renders_both_networks_in_lockstep(pair, renderer):
    """Each half is exactly what its network renders alone in the same state (seed, camera,
    sphere, render type, overlay); the pair's result keeps the requested args."""
    for state in (dict(yaw=30.0, pitch=20.0, sphere='A'), dict(yaw=-120.0, render_type='depth', overlay_seams=True)):
        args = RenderArgs(network='random:tiny', compare='random:tiny@1', seed=4, **state)
        r = pair.render(args)
        assert r.error is None and r.args == args and r.panels == ['random:tiny', 'random:tiny@1']
        left, right = _halves(r.image)
        alone_left = renderer.render(args.replace(compare=''))
        alone_right = renderer.render(args.replace(network='random:tiny@1', compare=''))
        assert np.array_equal(left, alone_left.image) and np.array_equal(right, alone_right.image)
        assert np.abs(left.astype(int) - right.astype(int)).mean() > 2, 'two networks, two different images'
        cmp = r.comparison
        assert cmp.left.seconds > 0 and cmp.right.seconds > 0 and r.timings['left'] == cmp.left.seconds
        assert 'ms (' in cmp.left.label() and '/s)' in cmp.right.label()
    assert set(cmp.left.seam_fraction) == set(cmp.right.seam_fraction) == {'A', 'B'}   # overlay on each side
    assert not cmp.latents_differ and 'same z' in cmp.latents
    # side_by_side (A | B | fused) is one panel per side while comparing; the args still say what was asked
    r = pair.render(RenderArgs(network='random:tiny', compare='random:tiny@1', side_by_side=True))
    assert len(_halves(r.image)) == 2 and r.args.side_by_side


def test_compare_difference_panel(pair):
    same = pair.render(RenderArgs(network='random:tiny', compare='random:tiny', compare_diff=True, yaw=20.0))
    left, right, diff = _halves(same.image, 3)
    assert np.array_equal(left, right) and diff.max() == 0 and same.comparison.diff_mean == 0.0
    other = pair.render(RenderArgs(network='random:tiny', compare='random:tiny@1', compare_diff=True, yaw=20.0))
    diff = _halves(other.image, 3)[2]
    assert other.panels[2] == 'difference' and diff.mean() > 20 and other.comparison.diff_mean > 0.05
    assert other.comparison.diff_text.startswith('difference: mean ')
    for kind in ('depth', 'parsing', 'weight'):           # the kinds with their own rule (NaN, classes)
        r = pair.render(RenderArgs(network='random:tiny', compare='random:tiny@1', compare_diff=True,
                                   render_type=kind, pitch=10.0))
        assert r.error is None and r.comparison.diff_mean is not None, (kind, r.comparison.diff_text)


def test_difference_of_values():
    from viz import colormaps
    from viz.compare import difference
    a = np.zeros((2, 2, 3), np.float32)
    b = np.full((2, 2, 3), 0.5, np.float32)
    rgb, mean, text = difference('image', a, b)
    assert mean == pytest.approx(0.5) and rgb.shape == (2, 2, 3) and 'RGB' in text
    d1 = np.array([[[2.5], [np.nan]], [[2.6], [np.nan]]], np.float32)        # NaN: no surface
    d2 = np.array([[[2.6], [2.7]], [[2.6], [np.nan]]], np.float32)
    rgb, mean, text = difference('depth', d1, d2)
    assert mean == pytest.approx(0.05, abs=1e-6)                 # over the two pixels with surface on both sides
    assert tuple(rgb[0, 1]) == tuple(colormaps.ONE_SIDED_RGB.astype(int)) and tuple(rgb[1, 1]) == (0, 0, 0)
    assert 'world units' in text
    p1 = np.array([[[1], [2]], [[3], [4]]], np.float32)
    rgb, mean, text = difference('parsing', p1, np.array([[[1], [2]], [[0], [4]]], np.float32))
    assert mean == 0.25 and 'classes differ on 25.0% of pixels' in text


def test_compare_different_z_dim_sizes_and_representations(pair, tmp_path):
    small = micro_network(tmp_path / 'z16.safetensors', z_dim=16, w_dim=16)      # 32 px, z_dim 16
    r = pair.render(RenderArgs(network='random:tiny', compare=small, seed=2, compare_diff=True))
    cmp = r.comparison
    assert r.error is None and cmp.panel_size == 64 and r.image.shape == (64, 3 * 64 + 2 * 4, 3)
    assert cmp.latents_differ and cmp.left.z_dim == 32 and cmp.right.z_dim == 16
    assert 'latents differ: z_dim 32 (left) vs 16 (right)' in r.notes[0]
    right = _halves(r.image, 3)[1]
    assert np.array_equal(right[::2, ::2], right[1::2, 1::2]), 'the 32 px side is scaled up by 2 (nearest)'
    tri = micro_network(tmp_path / 'tri.safetensors', representation='triplane')
    r = pair.render(RenderArgs(network='random:tiny', compare=tri, render_type='weight', overlay_seams=True))
    assert r.error is None and r.comparison.left.error is None and r.image is not None
    assert 'no sphere weight' in r.comparison.right.error      # that side says why it has no image
    assert _halves(r.image)[1].max() == _halves(r.image)[1].min()    # a flat placeholder
    r = pair.render(RenderArgs(network='random:tiny', compare=tri, overlay_seams=True, pitch=60.0))
    assert r.comparison.right.notes == ['no seams or poles: triplane network'] and r.comparison.right.error is None
    assert set(r.comparison.left.seam_fraction) == {'A', 'B'} and not r.comparison.right.seam_fraction


def test_compare_network_that_does_not_load(tmp_path):
    from viz.compare import PairRenderer
    p = PairRenderer('cpu')
    missing = str(tmp_path / 'missing.safetensors')
    r = p.render(RenderArgs(network='random:tiny', compare=missing))
    assert r.error is None and r.image is not None and r.comparison.right.error.startswith('cannot load')
    assert r.comparison.right.load_error and r.comparison.right.failed_network == missing
    p.render(RenderArgs(network='random:tiny', compare='random:tiny@1'))
    r = p.render(RenderArgs(network='random:tiny', compare=missing))       # the previous right network stays
    assert r.comparison.right.error is None and r.args.compare == 'random:tiny@1' and r.comparison.right.load_error


def test_network_widget_compare(tmp_path):
    viz = Visualizer('random:tiny', open_window=False)
    net = viz.network
    assert viz.build_args().compare == '' and not viz.build_args().compare_diff
    viz.set_state(compare='demo-triplane', difference=True)
    a = viz.args
    assert (a.network, a.compare, a.compare_diff) == ('random:tiny', 'demo-triplane', True)
    net.compare_loaded('demo-triplane')
    assert net.recent[0] == 'demo-triplane'
    net.set_compare('nope.safetensors')
    net.compare_load_failed('nope.safetensors', 'nope.safetensors: no such file')
    assert viz.build_args().compare == 'demo-triplane'          # the previous right-hand network stays
    assert net.compare_error_text() == ('Could not load nope.safetensors to compare: no such file. '
                                        'Still comparing with demo-triplane.')
    net.stop_comparing()
    assert viz.build_args().compare == '' and not viz.build_args().compare_diff
    net.set_compare('nope2.safetensors')                       # nothing compared before: compare mode ends
    net.compare_load_failed('nope2.safetensors', 'no such file')
    assert viz.build_args().compare == '' and net.compare_error_text().endswith('Not comparing.')
    run = tmp_path / 'run'
    run.mkdir()
    net.set_compare(str(run))                                  # a run folder without snapshots
    assert viz.build_args().compare == '' and 'no network-snapshot' in net.compare_error
    newest = _snapshot(run, 2, seed=1)
    _snapshot(run, 1, seed=2)
    net.set_compare(str(run))                                  # its newest snapshot
    assert viz.build_args().compare == str(newest) and 'newest snapshot' in net.compare_note


def test_compare_mode_exports_the_left_network(pair, tmp_path):
    """The Capture panel's export goes through the worker's PairRenderer: in compare mode it writes the
    main (left) network's head, the same splats as with compare off."""
    from spherehead.export.splat_ply import read_splats
    args = RenderArgs(network='random:tiny', compare='random:tiny@1', seed=2)
    lines = [pair.export_head(a, str(tmp_path / f'{i}.ply'), 'splats', splat_count=200, splat_resolution=16)
             for i, a in enumerate((args, args.replace(compare='')))]
    assert all(line.startswith('wrote ') and '200 splats' in line for line in lines), lines
    a, b = (read_splats(tmp_path / f'{i}.ply')[0] for i in range(2))
    assert len(a.positions) == 200 and np.array_equal(a.positions, b.positions)

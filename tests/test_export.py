"""Export: GLB meshes (trimesh reads back vertices, faces, colours), the 3DGS splat layout (header and
values byte for byte), the reference rasteriser on scenes with known answers and against a plain
per-pixel loop of the 3DGS rules, splats of random:tiny against its raw image, the visualizer's
export through the render worker, and one-line errors. CPU, random:tiny, a few thousand splats."""
from __future__ import annotations

import json
import math
import struct
import sys
import time
import types

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import spherehead as sh
from spherehead.checkpoint import DEMO_PATH
from spherehead.cli import main
from spherehead.export.check import compare_views, psnr
from spherehead.export.field import background_rgb
from spherehead.export.mesh import Mesh, read_glb, write_glb
from spherehead.export.rasterize import (ALPHA_MAX, ALPHA_MIN, LOW_PASS, T_MIN, TILE, project, rasterize,
                                         render_splats, splat_tensors)
from spherehead.export.splat_ply import SH_C0, Splats, property_names, read_splats, write_splats
from spherehead.export.splats import SplatConfig, make_splats, visibility
from spherehead.tools.heads import seed_ws

trimesh = pytest.importorskip('trimesh')


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_lines(result):
    """stderr without tqdm's progress lines."""
    return [ln for ln in result.stderr.strip().splitlines()
            if ln.strip() and not ln.startswith(('density:', 'splats:'))]


@pytest.fixture(scope='module')
def G():
    g = sh.load_generator('random:tiny')
    g.eval()
    return g


def quat_z(deg: float) -> list[float]:
    """(w, x, y, z) of a rotation by ``deg`` about +z."""
    h = math.radians(deg) / 2
    return [math.cos(h), 0.0, 0.0, math.sin(h)]


def splats_of(pos, rgb, opacity, scales, rot=None) -> Splats:
    n = len(pos)
    rot = [[1.0, 0.0, 0.0, 0.0]] * n if rot is None else rot
    f = lambda a: np.asarray(a, np.float32)  # noqa: E731
    return Splats(f(pos), f(rgb), f(opacity), f(scales), f(rot))


# ----------------------------------------------------------------------------- GLB

def test_glb_round_trip_keeps_vertices_faces_and_colours(tmp_path):
    rng = np.random.default_rng(0)
    mesh = Mesh(rng.normal(size=(40, 3)).astype(np.float32), rng.integers(0, 40, (60, 3)).astype(np.int64),
                rng.integers(0, 256, (40, 3)).astype(np.uint8))
    path = tmp_path / 'm.glb'
    write_glb(path, mesh, 'seed 0\nnetwork: test')
    back = read_glb(path)
    np.testing.assert_array_equal(back.vertices, mesh.vertices)
    np.testing.assert_array_equal(back.faces, mesh.faces)
    np.testing.assert_array_equal(back.colors, mesh.colors)
    data = path.read_bytes()
    assert data[:4] == b'glTF' and struct.unpack('<I', data[4:8])[0] == 2           # glTF 2.0 binary
    length = struct.unpack('<I', data[12:16])[0]
    gltf = json.loads(data[20:20 + length])
    attributes = gltf['meshes'][0]['primitives'][0]['attributes']
    assert {'POSITION', 'COLOR_0'} <= set(attributes)                             # colours as a vertex attribute
    assert not list(tmp_path.glob('*.tmp'))


def test_mesh_command_writes_glb_equal_to_its_ply(tmp_path):
    base = ['mesh', '--network', 'random:tiny', '--seed', 0, '--res', 20, '--level', 1.0, '--device', 'cpu']
    for ext in ('glb', 'ply'):
        result = run(*base, '--out', tmp_path / f'head.{ext}')
        assert result.exit_code == 0, result.output + result.stderr
    glb = read_glb(tmp_path / 'head.glb')
    mesh = trimesh.load(tmp_path / 'head.ply', process=False)
    assert len(glb.vertices) > 100 and len(glb.faces) > 100
    np.testing.assert_allclose(glb.vertices, mesh.vertices, atol=1e-6)
    np.testing.assert_array_equal(glb.faces, mesh.faces)
    np.testing.assert_array_equal(glb.colors, np.asarray(mesh.visual.vertex_colors)[:, :3])
    assert f'{len(glb.vertices)} vertices, {len(glb.faces)} faces' in result.output


def test_glb_without_trimesh_is_one_line_saying_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'trimesh', None)          # import trimesh -> ImportError
    result = run('mesh', '--network', 'random:tiny', '--res', 16, '--out', tmp_path / 'a.glb')
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and 'pip install trimesh' in lines[0], result.stderr
    assert not (tmp_path / 'a.glb').exists()


# ----------------------------------------------------------------------------- splat file layout

def test_splat_file_header_and_values_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    n = 7
    rot = rng.normal(size=(n, 4))
    s = splats_of(rng.normal(size=(n, 3)), rng.random((n, 3)), rng.uniform(0.01, 0.99, n),
                  rng.uniform(0.001, 0.1, (n, 3)), rot / np.linalg.norm(rot, axis=1, keepdims=True))
    path = tmp_path / 's.ply'
    size = write_splats(path, s, 'seed 3\nnetwork: test')
    data = path.read_bytes()
    head_end = data.index(b'end_header\n') + len(b'end_header\n')
    lines = data[:head_end].decode('ascii').splitlines()
    names = ['x', 'y', 'z', 'nx', 'ny', 'nz', 'f_dc_0', 'f_dc_1', 'f_dc_2', 'opacity',
             'scale_0', 'scale_1', 'scale_2', 'rot_0', 'rot_1', 'rot_2', 'rot_3']
    assert lines == (['ply', 'format binary_little_endian 1.0', f'element vertex {n}']
                     + [f'property float {p}' for p in names]
                     + ['comment seed 3', 'comment network: test', 'end_header'])
    assert size == len(data) == head_end + n * 17 * 4
    table = np.frombuffer(data[head_end:], dtype='<f4').reshape(n, 17).astype(np.float64)
    np.testing.assert_allclose(table[:, 0:3], s.positions, rtol=0, atol=0)
    assert np.all(table[:, 3:6] == 0)
    np.testing.assert_allclose(table[:, 6:9], (s.rgb - 0.5) / 0.28209479177387814, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(table[:, 9], np.log(s.opacity / (1 - s.opacity)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(table[:, 10:13], np.log(s.scales), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(table[:, 13:17], s.rotations, rtol=0, atol=0)       # (w, x, y, z) as given
    back, header = read_splats(path)
    assert header.comments == ['seed 3', 'network: test'] and header.count == n
    for field in ('positions', 'rgb', 'opacity', 'scales', 'rotations'):
        np.testing.assert_allclose(getattr(back, field), getattr(s, field), rtol=1e-5, atol=1e-6, err_msg=field)
    assert back.sh_rest is None


def test_splat_file_with_sh_degree_3_has_45_zero_rest_coefficients(tmp_path):
    s = splats_of([[0, 0, 0], [1, 2, 3]], [[1, 0, 0], [0, 1, 0]], [0.5, 0.9], [[0.1] * 3, [0.2] * 3])
    write_splats(tmp_path / 's.ply', s.with_sh_degree(3))
    back, header = read_splats(tmp_path / 's.ply')
    assert header.names == property_names(3) and len(header.names) == 62
    assert header.names[9:54] == [f'f_rest_{i}' for i in range(45)] and header.names[54] == 'opacity'
    assert back.sh_rest.shape == (2, 3, 15) and not back.sh_rest.any()
    np.testing.assert_allclose(back.rgb, s.rgb, atol=1e-6)
    assert SH_C0 == pytest.approx(1 / (2 * math.sqrt(math.pi)))


def test_reader_refuses_other_files_in_one_line(tmp_path):
    (tmp_path / 'mesh.ply').write_bytes(b'ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\n'
                                        b'element face 0\nproperty list uchar int vertex_indices\nend_header\n')
    with pytest.raises(sh.errors.UserError, match='not a float of the vertex element|one element'):
        read_splats(tmp_path / 'mesh.ply')
    (tmp_path / 'cut.ply').write_bytes(b'ply\nformat binary_little_endian 1.0\nelement vertex 5\n'
                                       + b''.join(b'property float %s\n' % n.encode() for n in property_names(0))
                                       + b'end_header\n' + b'\0' * 10)
    with pytest.raises(sh.errors.UserError, match='cut short'):
        read_splats(tmp_path / 'cut.ply')


# ----------------------------------------------------------------------------- rasteriser

def brute_force(s: Splats, c: torch.Tensor, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The 3DGS forward rules as a plain loop: per pixel, the Gaussians of its tile in depth order."""
    proj = project(splat_tensors(s, dtype=torch.float64), c, size, size)
    order = sorted(range(len(s)), key=lambda i: (float(proj.depth[i]), i))
    color, trans = np.zeros((3, size, size)), np.ones((size, size))
    for y in range(size):
        for x in range(size):
            T, C = 1.0, np.zeros(3)
            for i in order:
                if not proj.visible[i]:
                    continue
                x0, y0, x1, y1 = proj.tiles[i].tolist()
                if not (x0 <= x // TILE < x1 and y0 <= y // TILE < y1):
                    continue
                dx, dy = float(proj.xy[i, 0]) - x, float(proj.xy[i, 1]) - y
                a, b, cc = proj.conic[i].tolist()
                power = -0.5 * (a * dx * dx + cc * dy * dy) - b * dx * dy
                if power > 0:
                    continue
                alpha = min(ALPHA_MAX, float(proj.opacity[i]) * math.exp(power))
                if alpha < ALPHA_MIN:
                    continue
                if T * (1 - alpha) < T_MIN:
                    break
                C += proj.rgb[i].numpy() * alpha * T
                T *= 1 - alpha
            color[:, y, x], trans[y, x] = C, T
    return color, trans


def test_rasteriser_single_gaussian_matches_the_projected_density():
    c = sh.camera.lookat(0, 0, radius=2.7)
    s = splats_of([[0, 0, 0]], [[1.0, 0.5, 0.25]], [0.8], [[0.01, 0.01, 0.01]])
    color, alpha = render_splats(s, c, 65)
    f = 4.2647 * 65 / 2.7                                      # px per world unit at the head
    var = (f * 0.01) ** 2 + LOW_PASS
    yy, xx = np.mgrid[0:65, 0:65]
    expect = 0.8 * np.exp(-0.5 * ((xx - 32) ** 2 + (yy - 32) ** 2) / var)   # the centre is pixel (32, 32)
    expect[expect < ALPHA_MIN] = 0
    np.testing.assert_allclose(alpha.numpy(), expect, atol=2e-6)
    np.testing.assert_allclose(color.numpy(), np.array([1.0, 0.5, 0.25])[:, None, None] * expect, atol=2e-6)


def test_rasteriser_rotation_is_w_first_and_elongates_the_right_axis():
    c = sh.camera.lookat(0, 0, radius=2.7)
    f = 4.2647 * 65 / 2.7
    long = splats_of([[0, 0, 0]], [[1, 1, 1]], [0.9], [[0.03, 0.005, 0.005]], [quat_z(90)])   # x axis -> world y
    _, alpha = render_splats(long, c, 65)
    a = alpha.numpy()
    column, row = a[:, 32], a[32, :]
    var_y, var_x = (f * 0.03) ** 2 + LOW_PASS, (f * 0.005) ** 2 + LOW_PASS
    np.testing.assert_allclose(column[28:37], 0.9 * np.exp(-0.5 * (np.arange(28, 37) - 32) ** 2 / var_y), atol=1e-5)
    np.testing.assert_allclose(row[31:34], 0.9 * np.exp(-0.5 * (np.arange(31, 34) - 32) ** 2 / var_x), atol=1e-5)
    assert column[35] > 0.5 > row[35]                            # long vertically (world y), not horizontally


def test_rasteriser_composites_front_to_back_and_stops_at_the_transmittance_floor():
    c = sh.camera.lookat(0, 0, radius=2.7)                       # camera on +z: larger z is nearer
    red, green, blue = [1, 0, 0], [0, 1, 0], [0, 0, 1]
    two = splats_of([[0, 0, -0.1], [0, 0, 0.1]], [green, red], [0.5, 0.6], [[0.05] * 3] * 2)
    color, alpha = render_splats(two, c, 33)
    np.testing.assert_allclose(color[:, 16, 16].numpy(), [0.6, 0.5 * 0.4, 0], atol=1e-6)   # red in front
    assert float(alpha[16, 16]) == pytest.approx(1 - 0.4 * 0.5, abs=1e-6)
    # alpha 0.98 each: after two T = 4e-4; the third would take it below 1e-4, so it and all behind are skipped.
    four = splats_of([[0, 0, 0.3], [0, 0, 0.2], [0, 0, 0.1], [0, 0, 0.0]], [red, green, blue, [1, 1, 1]],
                     [0.98] * 4, [[0.05] * 3] * 4)
    color, alpha = render_splats(four, c, 33)
    np.testing.assert_allclose(color[:, 16, 16].numpy(), [0.98, 0.98 * 0.02, 0], atol=1e-6)
    assert 1 - float(alpha[16, 16]) == pytest.approx(0.02 * 0.02, abs=2e-6)     # not 8e-6: the third stopped


def test_rasteriser_equals_a_plain_loop_of_the_3dgs_rules():
    rng = np.random.default_rng(2)
    n = 60
    rot = rng.normal(size=(n, 4))
    s = splats_of(rng.uniform(-0.3, 0.3, (n, 3)), rng.uniform(-0.1, 1.2, (n, 3)), rng.uniform(0.02, 0.999, n),
                  np.exp(rng.uniform(np.log(0.002), np.log(0.08), (n, 3))), rot / np.linalg.norm(rot, axis=1)[:, None])
    c = sh.camera.lookat(30, -20, radius=2.7)
    color, trans = rasterize(project(splat_tensors(s, dtype=torch.float64), c, 40, 40), 40, 40)
    ref_color, ref_trans = brute_force(s, c, 40)
    assert (ref_trans < 0.5).mean() > 0.1                        # the scene covers part of the image
    np.testing.assert_allclose(trans.numpy(), ref_trans, atol=1e-9)
    np.testing.assert_allclose(color.numpy(), ref_color, atol=1e-9)


# ----------------------------------------------------------------------------- splats from the field

def test_visibility_is_the_best_axis_transmittance():
    alpha = torch.zeros(4, 4, 4)
    alpha[1:3, 1:3, 1:3] = 0.5                                   # a 2^3 block in the middle
    vis = visibility(alpha)
    assert float(vis[1, 1, 1]) == 1.0                            # on the block's surface: seen from outside
    alpha[:, :, :] = 0.5
    vis = visibility(alpha)
    assert float(vis[1, 1, 1]) == pytest.approx(0.5)             # one cell in front along the best axis
    assert float(vis[0, 2, 2]) == 1.0


def test_splats_of_random_tiny_reproduce_its_raw_image(G):
    ws = seed_ws(G, 0, 0.7, 'cpu')
    cfg = SplatConfig(count=3000, resolution=32)
    s = make_splats(G, ws, cfg, progress=False)
    assert len(s) == 3000 and np.all((s.opacity > 0) & (s.opacity < 1)) and np.all(s.scales > 0)
    box = G.config.rendering.box_warp
    assert np.abs(s.positions).max() <= box / 2 + 1e-6
    again = make_splats(G, ws, cfg, progress=False)
    np.testing.assert_array_equal(again.positions, s.positions)                  # deterministic
    other = make_splats(G, ws, SplatConfig(count=3000, resolution=32, seed=1), progress=False)
    assert not np.array_equal(other.positions, s.positions)
    for view in compare_views(G, ws, s, yaws=(0, 180), supersample=2):
        raw_res = view.raw_image.shape[-1]
        bg = ((background_rgb(G, ws, raw_res)[0] + 1) / 2).clamp(0, 1)
        floor = psnr(bg, view.raw_image)                          # the background alone
        assert view.psnr >= 30 and view.psnr > floor + 10, (view.yaw, view.psnr, floor)


@pytest.mark.skipif(not DEMO_PATH.is_file(), reason='the demo model file is missing from this install')
def test_demo_splats_reproduce_the_raw_image_from_the_side():
    """The shipped model, much smaller than the command's default (30,000 splats at --res 128, one view
    rasterised at 2x): 30.5 dB measured (docs/export.md); the bar is the issue's 22 dB raised to 28."""
    G = sh.load_generator('demo')
    G.eval()
    ws = seed_ws(G, 0, 0.7, 'cpu')
    s = make_splats(G, ws, SplatConfig(count=30_000, resolution=128), progress=False)
    view, = compare_views(G, ws, s, yaws=(90,), supersample=2)
    assert view.psnr >= 28 and view.psnr_mask >= 22, (view.psnr, view.psnr_mask)


def test_splats_command_is_deterministic_and_reads_back(tmp_path):
    args = ['splats', '--network', 'random:tiny', '--device', 'cpu', '--count', 1500, '--res', 32]
    for name in ('a.ply', 'b.ply'):
        result = run(*args, '--out', tmp_path / name)
        assert result.exit_code == 0, result.output + result.stderr
    assert (tmp_path / 'a.ply').read_bytes() == (tmp_path / 'b.ply').read_bytes()
    s, header = read_splats(tmp_path / 'a.ply')
    assert header.count == len(s) == 1500 and 'wrote' in result.output and '1500 splats' in result.output
    assert any('seed 0' in line for line in header.comments)
    result = run(*args, '--sh-degree', 3, '--out', tmp_path / 'c.ply')
    assert result.exit_code == 0 and read_splats(tmp_path / 'c.ply')[1].names == property_names(3)


@pytest.mark.parametrize('args, expect', [
    (['splats', '--out', 'head.xyz'], '.ply'),
    (['splats', '--out', 'head.splat'], '.ply'),
    (['mesh', '--out', 'head.stl'], '.glb'),
    (['splats', '--count', '0'], "'--count'"),
    (['splats', '--count', '-5'], "'--count'"),
    (['splats', '--res', '34'], 'multiple of 4'),
    (['splats', '--sh-degree', '4'], "'--sh-degree'"),
])
def test_bad_export_arguments_are_one_line(args, expect, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(*args, '--network', 'random:tiny')
    assert result.exit_code == 2, result.output
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith('Error: ') and expect in lines[0], result.stderr
    assert not list(tmp_path.iterdir())                          # nothing written


@pytest.mark.parametrize('command', ['splats', 'mesh'])
def test_unwritable_output_path_is_one_line(tmp_path, command):
    (tmp_path / 'file').write_text('not a folder')
    result = run(command, '--network', 'random:tiny', '--out', tmp_path / 'file' / 'head.ply')
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1 and 'is a file, not a folder' in lines[0], result.stderr


def test_splats_command_refuses_to_replace_a_file_of_another_kind(tmp_path):
    (tmp_path / 'photo.ply').write_bytes(b'\x89PNG\r\n\x1a\n' + b'\0' * 64)
    result = run('splats', '--network', 'random:tiny', '--count', 100, '--res', 32, '--out', tmp_path / 'photo.ply')
    assert result.exit_code == 2 and len(error_lines(result)) == 1
    assert (tmp_path / 'photo.ply').read_bytes().startswith(b'\x89PNG')


# ----------------------------------------------------------------------------- visualizer export

def test_visualizer_exports_through_the_render_worker(tmp_path):
    from viz.capture_widget import CaptureWidget
    from viz.render_args import RenderArgs
    from viz.renderer import Renderer
    from viz.worker import RenderWorker

    worker = RenderWorker(lambda: Renderer('cpu'))
    try:
        args = RenderArgs(network='random:tiny', seed=2, sphere='A')
        path = tmp_path / 'head.ply'
        task = worker.submit_task(lambda r: r.export_head(args, str(path), 'splats', splat_count=800,
                                                          splat_resolution=32))
        deadline = time.time() + 300
        done = []
        while not done and time.time() < deadline:
            done = worker.poll_tasks()
            time.sleep(0.05)
        assert done and done[0][0] == task and done[0][1].startswith(f'wrote {path}: 800 splats'), done
        s, header = read_splats(path)
        assert len(s) == 800 and any('sphere A' in line for line in header.comments)
        # a failure comes back as one line (random weights have no surface at EG3D's level 10)
        line = Renderer('cpu').export_head(args, str(tmp_path / 'm.glb'), 'mesh', mesh_resolution=16)
        assert line.startswith('nothing exported: no surface at level 10') and '\n' not in line

        viz = types.SimpleNamespace(args=args, worker=worker)   # what the panel uses of the app
        panel = CaptureWidget(viz)
        panel.outdir = str(tmp_path / 'out')
        panel.splat_count = 600
        panel.splat_resolution = 32
        assert panel.export_head('splats').startswith('exporting splats to ')
        assert panel.export_head('mesh').startswith('an export (splats) is still running')
        deadline = time.time() + 300
        while panel.exporting and time.time() < deadline:
            panel.tick(0.05)
            time.sleep(0.05)
        assert panel.message.startswith('wrote ') and '600 splats' in panel.message, panel.message
        written = list((tmp_path / 'out').glob('seed0002-A-splats-*.ply'))
        assert len(written) == 1 and len(read_splats(written[0])[0]) == 600
    finally:
        worker.stop()

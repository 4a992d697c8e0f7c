"""`spherehead video`, `interpolate` and `mesh`: outputs exist, decode, have the sizes and frame
counts asked for, repeat bit for bit; the mesh geometry is right on an analytic ball; bad arguments
give one line. CPU, random:tiny (64 px images, 32 px raw), a few frames, 24-32^3 meshes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import spherehead as sh
from spherehead.checkpoint import DEMO_PATH
from spherehead.cli import main
from spherehead.tools.heads import seed_ws
from spherehead.tools.interpolate import InterpolationConfig, interpolation_frames
from spherehead.export.mesh import (Mesh, MeshConfig, close_border, extract_mesh, extract_surface, sample_grid,
                                    vertex_colors, write_obj, write_ply)
from spherehead.tools.video import TurntableConfig, ViewConfig, render_cell, tile, turntable_frames

iio = pytest.importorskip('imageio.v3')


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def message_lines(result):
    """stderr without tqdm's progress lines (a bar may start before an error)."""
    return [ln for ln in result.stderr.strip().splitlines() if ln.strip() and not ln.startswith('density:')]


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, result.output + result.stderr
    return result


@pytest.fixture(scope='module')
def G():
    return sh.load_generator('random:tiny')


def heads(G, seeds, psi=0.7):
    out = []
    for s in seeds:
        ws = seed_ws(G, s, psi, 'cpu')
        with torch.no_grad():
            out.append((ws, G.backbone_planes(ws)))
    return out


# ----------------------------------------------------------------------------- video

def test_video_mp4_size_frame_count_parent_folders_and_repeats_byte_for_byte(tmp_path):
    out = tmp_path / 'new' / 'dir' / 't.mp4'
    result = ok('video', '--network', 'random:tiny', '--seeds', '0-1', '--frames', 3, '--out', out)
    assert '3 frames of 128x64' in result.output
    frames = iio.imread(out)
    assert frames.shape == (3, 64, 128, 3)               # two 64 px seeds side by side
    assert frames.std() > 1                               # not a blank video
    ok('video', '--network', 'random:tiny', '--seeds', '0-1', '--frames', 3, '--out', tmp_path / 't2.mp4')
    assert out.read_bytes() == (tmp_path / 't2.mp4').read_bytes()
    assert not list(tmp_path.rglob('*.partial*'))


def test_video_gif_spheres_side_by_side(tmp_path):
    out = tmp_path / 't.gif'
    ok('video', '--network', 'random:tiny', '--seeds', '0-1', '--frames', 2, '--compare-spheres', '--out', out)
    frames = iio.imread(out)
    assert frames.shape == (2, 128, 192, 3)               # a row per seed: A | B | fused


def test_turntable_cells_are_the_single_seed_renders_and_spheres_differ(G):
    hs = heads(G, [0, 1, 2])
    view = ViewConfig(spheres=('A', 'B', 'fused'))
    cfg = TurntableConfig(frames=4, view=view)
    frames = list(turntable_frames(G, hs, cfg, cols=2))
    assert len(frames) == 4 and frames[1].shape == (2 * 64, 2 * 3 * 64, 3)
    # Seed 1 sits in row 0, column 1; at frame 1 the camera is at yaw 90.
    alone = render_cell(G, *hs[1], 90.0, view)
    assert np.array_equal(frames[1][:64, 3 * 64:], alone)
    assert np.array_equal(render_cell(G, *heads(G, [1])[0], 90.0, view), alone)     # a seed repeats bit for bit
    a, b, fused = alone[:, :64], alone[:, 64:128], alone[:, 128:]
    assert np.abs(a.astype(int) - b).mean() > 1 and np.abs(a.astype(int) - fused).mean() > 0.5
    assert not frames[2][64:, 192:].any() and frames[2][64:, :192].any()   # 3 seeds in a 2x2 grid: last cell empty


def test_tile_layout():
    cells = [np.full((2, 3, 3), i, np.uint8) for i in range(1, 6)]
    grid = tile(cells, 2)
    assert grid.shape == (6, 6, 3)
    assert grid[0, 0, 0] == 1 and grid[0, 3, 0] == 2 and grid[2, 0, 0] == 3 and grid[4, 0, 0] == 5
    assert grid[4, 3, 0] == 0


def test_video_other_outputs(tmp_path):
    out = tmp_path / 'w.gif'
    ok('video', '--network', 'random:tiny', '--seeds', '3', '--frames', 2, '--output', 'weight', '--out', out)
    assert iio.imread(out).shape == (2, 32, 32, 3)        # the weight map is at the raw (neural) resolution


# ----------------------------------------------------------------------------- interpolate

def test_interpolate_frame_count_endpoints_and_orbit(G, tmp_path):
    out = tmp_path / 'i.mp4'
    result = ok('interpolate', '--network', 'random:tiny', '--seeds', '2,3', '--steps', 4, '--out', out)
    assert '4 frames of 64x64' in result.output
    assert iio.imread(out).shape == (4, 64, 64, 3)
    cfg = InterpolationConfig(steps=4)
    ws = [seed_ws(G, s, 0.7, 'cpu') for s in (2, 3)]
    frames = list(interpolation_frames(G, ws, cfg))
    (ws2, p2), (ws3, p3) = heads(G, [2, 3])
    # First frame: seed 2 from the front; last: seed 3 after the full orbit (yaw 360 = front).
    assert np.array_equal(frames[0], render_cell(G, ws2, p2, 0.0, cfg.view))
    assert np.array_equal(frames[-1], render_cell(G, ws3, p3, 360.0, cfg.view))
    assert not np.array_equal(frames[1], frames[2])


def test_interpolation_schedule():
    cfg = InterpolationConfig(steps=3)
    assert cfg.num_frames(3) == 6
    pos = [cfg.position(i, 3) for i in range(6)]
    assert pos[0] == (0, 1, 0.0) and pos[-1][:2] == (1, 2) and pos[-1][2] == pytest.approx(1.0)
    assert [cfg.yaw(i, 3) for i in (0, 5)] == [0.0, 360.0]
    loop = InterpolationConfig(steps=2, loop=True)
    assert loop.num_frames(3) == 6
    assert [loop.position(i, 3)[:2] for i in range(6)] == [(0, 1), (0, 1), (1, 2), (1, 2), (2, 0), (2, 0)]
    assert loop.yaw(5, 3) == pytest.approx(300.0)          # one step short of the start: loops seamlessly


def test_interpolate_gif_with_loop(tmp_path):
    out = tmp_path / 'i.gif'
    ok('interpolate', '--network', 'random:tiny', '--seeds', '0,1', '--steps', 2, '--loop', '--orbit', 0,
       '--out', out)
    assert iio.imread(out).shape == (4, 64, 64, 3)


# ----------------------------------------------------------------------------- mesh

def ball_density(centre, radius=0.25, scale=100.0):
    c = torch.tensor(centre)
    return lambda p: scale * (radius - (p - c).norm(dim=-1))


def test_mesh_of_an_analytic_ball_is_in_world_coordinates_and_outward_wound():
    centre = (0.12, -0.05, 0.08)        # off-centre on every axis, so swapped axes would show
    grid = sample_grid(ball_density(centre), 32, 1.0, 5000, 'cpu', progress=False)
    v, f = extract_surface(close_border(grid), 1.0, 10.0)   # density 10 at radius 0.25 - 0.1 = 0.15
    r = np.linalg.norm(v - np.array(centre), axis=1)
    assert abs(r.mean() - 0.15) < 0.005 and r.max() - r.min() < 0.02
    assert np.allclose(v.mean(0), centre, atol=0.01)
    signed = np.einsum('ij,ij->i', v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum() / 6
    assert signed == pytest.approx(4 / 3 * np.pi * 0.15 ** 3, rel=0.05)   # positive: faces wind outwards


def test_mesh_border_closes_a_surface_that_leaves_the_box():
    grid = sample_grid(ball_density((0.0, 0.0, 0.0), radius=2.0), 16, 1.0, 1000, 'cpu', progress=False)
    v, f = extract_surface(close_border(grid), 1.0, 10.0)
    assert np.abs(v).max() <= 0.5 and len(f) > 0


def test_mesh_empty_surface_is_one_line_error(tmp_path):
    out = tmp_path / 'h.ply'
    result = run('mesh', '--network', 'random:tiny', '--res', 16, '--out', out)   # EG3D's level 10 > untrained density
    lines = message_lines(result)
    assert result.exit_code == 1 and len(lines) == 1 and 'Traceback' not in result.stderr
    assert lines[0].startswith('Error: no surface at level 10') and '--level' in lines[0]
    assert not out.exists()


def read_ply(path):
    data = path.read_bytes()
    end = data.index(b'end_header\n') + len(b'end_header\n')
    header = data[:end].decode('ascii').splitlines()
    assert header[:2] == ['ply', 'format binary_little_endian 1.0']
    nv = int(next(h for h in header if h.startswith('element vertex')).split()[-1])
    nf = int(next(h for h in header if h.startswith('element face')).split()[-1])
    vert = np.frombuffer(data, dtype=[('p', '<f4', (3,)), ('c', 'u1', (3,))], count=nv, offset=end)
    face = np.frombuffer(data, dtype=[('n', 'u1'), ('i', '<i4', (3,))], count=nf, offset=end + vert.nbytes)
    assert end + vert.nbytes + face.nbytes == len(data) and (face['n'] == 3).all()
    return vert['p'], vert['c'], face['i']


def read_obj(path):
    lines = path.read_text().splitlines()
    v = np.array([[float(x) for x in ln.split()[1:]] for ln in lines if ln.startswith('v ')])
    f = np.array([[int(x) for x in ln.split()[1:]] for ln in lines if ln.startswith('f ')]) - 1
    return v[:, :3], v[:, 3:], f


def test_mesh_ply_and_obj_from_the_cli_agree_and_repeat(G, tmp_path):
    args = ['mesh', '--network', 'random:tiny', '--seed', 0, '--res', 24, '--level', 1.0]
    result = ok(*args, '--out', tmp_path / 'm' / 'h.ply')
    v, c, f = read_ply(tmp_path / 'm' / 'h.ply')
    assert f'{len(v)} vertices, {len(f)} faces' in result.output and len(f) > 100
    assert np.abs(v).max() <= 0.5 and f.min() == 0 and f.max() == len(v) - 1
    ok(*args, '--out', tmp_path / 'h.obj')
    vo, co, fo = read_obj(tmp_path / 'h.obj')
    assert np.allclose(vo, v, atol=1e-6) and np.array_equal(fo, f) and np.allclose(co * 255, c, atol=0.02)
    ok(*args, '--out', tmp_path / 'again.ply')
    assert (tmp_path / 'again.ply').read_bytes() == (tmp_path / 'm' / 'h.ply').read_bytes()
    # The colours are the generator's radiance at the vertices, and differ across the surface.
    ws = seed_ws(G, 0, 0.7, 'cpu')
    # Bit for bit only with the command's own batch: other batch sizes give the matrix products
    # other shapes, hence (BLAS-, SIMD- and thread-dependent) other summation orders, and a
    # colour on a rounding boundary could move by one level.
    planes = G.backbone_planes(ws)
    expected = vertex_colors(G, planes, ws, v.copy(), 'fused', MeshConfig().batch)
    assert np.array_equal(expected, c) and c.std(0).min() > 1
    chunked = vertex_colors(G, planes, ws, v.copy(), 'fused', 1000)      # several batches: same colours
    assert len(v) > 1000 and np.abs(chunked.astype(int) - c).max() <= 1


def test_mesh_per_sphere_and_writers_without_colours(G, tmp_path):
    ws = seed_ws(G, 1, 0.7, 'cpu')
    a = extract_mesh(G, ws, MeshConfig(resolution=16, level=1.0, sphere='A'), progress=False)
    b = extract_mesh(G, ws, MeshConfig(resolution=16, level=1.0, sphere='B'), progress=False)
    assert not (len(a.vertices) == len(b.vertices) and np.allclose(a.vertices, b.vertices))
    plain = Mesh(a.vertices, a.faces, None)
    write_ply(tmp_path / 'p.ply', plain)
    write_obj(tmp_path / 'p.obj', plain)
    assert b'property uchar red' not in (tmp_path / 'p.ply').read_bytes()
    vo, co, fo = read_obj(tmp_path / 'p.obj')
    assert co.shape[1] == 0 and np.allclose(vo, a.vertices, atol=1e-6) and np.array_equal(fo, a.faces)


# ----------------------------------------------------------------------------- bad arguments

@pytest.fixture(scope='module')
def triplane_file(tmp_path_factory):
    from spherehead.networks.generator import Generator
    path = tmp_path_factory.mktemp('net') / 'tri.safetensors'
    sh.save_generator(Generator(sh.preset('tiny', representation='triplane')), path)
    return path


BAD = [
    (['video', '--frames', '0'], "'--frames'"),
    (['video', '--seeds', '3-0'], 'reversed'),
    (['video', '--seeds', 'a'], 'not a seed'),
    (['video', '--out', 'clip.avi'], '.mp4 or .gif'),
    (['video', '--fps', 'nan'], 'fps'),
    (['video', '--compare-spheres', '--sphere', 'A'], 'drop --sphere A'),
    (['video', '--device', 'gpu'], 'not a device'),
    (['video', '--seeds', '0-20000'], 'ask for fewer seeds'),
    (['video', '--network', 'missing.safetensors'], 'no such file'),
    (['interpolate', '--seeds', '2'], 'at least two seeds'),
    (['interpolate', '--steps', '1'], "'--steps'"),
    (['interpolate', '--out', 'interp.webm'], '.mp4 or .gif'),
    (['mesh', '--out', 'head.stl'], '.ply or .obj or .glb'),
    (['mesh', '--res', '4'], "'--res'"),
    (['mesh', '--level', 'inf'], 'level'),
    (['mesh', '--seed', '-1'], "'--seed'"),
]


@pytest.mark.parametrize('args,needle', BAD, ids=[' '.join(a) for a, _ in BAD])
def test_bad_arguments_give_one_line(args, needle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run(args[0], '--network', 'random:tiny', *args[1:])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2, (result.output, result.stderr)
    assert len(lines) == 1 and lines[0].startswith('Error:') and needle in lines[0], lines
    assert 'Traceback' not in result.output + result.stderr
    assert not [p for p in tmp_path.iterdir()]              # nothing written


def test_sphere_modes_need_a_sphere_model(triplane_file, tmp_path):
    for command, ext in (('video', 'gif'), ('interpolate', 'mp4'), ('mesh', 'ply')):
        result = run(command, '--network', triplane_file, '--sphere', 'B', '--out', tmp_path / f'x.{ext}')
        assert result.exit_code == 2 and 'has no spheres' in result.stderr and 'Traceback' not in result.stderr
    result = run('video', '--network', triplane_file, '--sphere', 'A', '--out', tmp_path / 'x.gif')
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and 'triplane' in lines[0] and 'has no spheres' in lines[0]
    result = run('video', '--network', triplane_file, '--compare-spheres', '--out', tmp_path / 'x.gif')
    assert result.exit_code == 2 and 'needs two spheres' in result.stderr


def test_never_replaces_another_kind_of_file(tmp_path):
    photo = tmp_path / 'clip.mp4'
    photo.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(100))
    result = run('video', '--network', 'random:tiny', '--seeds', '0', '--frames', 1, '--out', photo)
    assert result.exit_code == 2 and 'is not an MP4 video' in result.stderr
    assert photo.read_bytes()[:4] == b'\x89PNG'                               # untouched
    folder = tmp_path / 'h.ply'
    folder.mkdir()
    result = run('mesh', '--network', 'random:tiny', '--out', folder)
    assert result.exit_code == 2 and 'folder' in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_help_lists_the_tools():
    result = ok('--help')
    for name in ('video', 'interpolate', 'mesh', 'splats'):
        assert name in result.output
        assert ok(name, '--help').output.count('--network') == 1


# ----------------------------------------------------------------------------- demo model

@pytest.mark.skipif(not DEMO_PATH.is_file(), reason='the demo model file is missing from this install')
def test_demo_turntable_front_and_back_differ_and_spheres_own_their_sides():
    G = sh.load_generator('demo')
    (ws, planes), = heads(G, [0])
    front, back = (render_cell(G, ws, planes, yaw, ViewConfig()) for yaw in (0.0, 180.0))
    assert np.abs(front.astype(int) - back).mean() > 10
    weight = ViewConfig(output='weight')
    h = G.config.rendering.neural_rendering_resolution
    mid = slice(h // 2 - 2, h // 2 + 2)
    w_front = render_cell(G, ws, planes, 0.0, weight)[mid, mid, 0] / 255    # red channel = weight of sphere A
    w_back = render_cell(G, ws, planes, 180.0, weight)[mid, mid, 0] / 255
    assert w_front.mean() > 0.8 and w_back.mean() < 0.2

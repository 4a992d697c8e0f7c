"""`spherehead mesh`: a generated head's surface as a triangle mesh (.ply or .obj) with vertex colours.

The raw density (decoder output before the renderer's softplus) is sampled on a res^3 grid over
the feature box (side ``box_warp``, centred at the origin, as EG3D's shape extraction does) in
batches, with the renderer's box crop applied, and the outer layer of samples is emptied so the
surface closes. Marching cubes (scikit-image) extracts the iso-surface at ``level`` (EG3D's
default: 10). Vertex colours are the decoder's colour features at each vertex turned into RGB as
the raw image is (toRGB layer, or the first 3 channels), without volume compositing.

Vertices are in world units: +x = the head's left, +y = up, +z = the front (faces wind
counter-clockwise seen from outside). A .glb export is not offered: it would need trimesh,
which is not a dependency.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import click
import numpy as np
import torch

from spherehead.errors import UserError
from spherehead.tools import cli_common as cc
from spherehead.tools.heads import check_sphere, seed_ws
from spherehead.tools.media import partial_path
from spherehead.tools.video import SPHERE_HELP, prepare_out

MESH_EXTENSIONS = ('.ply', '.obj')
EG3D_LEVEL = 10.0        # EG3D's gen_samples.py extracts its shapes at density 10
EMPTY = -1e3             # density of cropped space (the renderer's value)


@dataclass
class MeshConfig:
    """How a surface is extracted (see the module docstring)."""
    resolution: int = 256        # samples per side of the cube
    level: float = EG3D_LEVEL    # iso-level on the raw density
    batch: int = 2 ** 18         # points per decoder call (bounds the memory of one query)
    sphere: str = 'fused'        # 'A', 'B' or 'fused'


@dataclass
class Mesh:
    vertices: np.ndarray          # [V, 3] float32, world units
    faces: np.ndarray             # [F, 3] int64 vertex indices, counter-clockwise seen from outside
    colors: np.ndarray | None     # [V, 3] uint8 RGB, or None


def grid_coordinates(resolution: int, box: float, start: int, count: int, device) -> torch.Tensor:
    """Points [count, 3] (world units) number start..start+count-1 of the res^3 grid over the cube
    [-box/2, box/2]^3, ordered x-major: flat index = (ix * res + iy) * res + iz."""
    idx = torch.arange(start, start + count, device=device)
    r = resolution
    ijk = torch.stack([idx // (r * r), (idx // r) % r, idx % r], dim=-1).float()
    return ijk * (box / (r - 1)) - box / 2


def sample_grid(density: Callable[[torch.Tensor], torch.Tensor], resolution: int, box: float, batch: int,
                device, progress: bool = True) -> np.ndarray:
    """density: points [M, 3] -> [M] -> the grid [res, res, res] (indexed [ix, iy, iz]) float32."""
    from tqdm import tqdm
    total = resolution ** 3
    out = np.empty(total, dtype=np.float32)
    with tqdm(total=total, desc='density', unit='pt', unit_scale=True, disable=not progress) as bar:
        for start in range(0, total, batch):
            count = min(batch, total - start)
            with torch.no_grad():
                values = density(grid_coordinates(resolution, box, start, count, device))
            out[start:start + count] = values.float().cpu().numpy()
            bar.update(count)
    return out.reshape(resolution, resolution, resolution)


def close_border(grid: np.ndarray) -> np.ndarray:
    """Empty the outer layer of samples so that the surface is closed where it meets the box."""
    grid[[0, -1], :, :] = EMPTY
    grid[:, [0, -1], :] = EMPTY
    grid[:, :, [0, -1]] = EMPTY
    return grid


def extract_surface(grid: np.ndarray, box: float, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of a density grid [res, res, res] over [-box/2, box/2]^3 at ``level``
    -> (vertices [V, 3] float32 world units, faces [F, 3] int64). UserError if the surface is empty."""
    from skimage.measure import marching_cubes
    inside = grid > level
    if not inside.any() or inside.all():
        finite = grid[grid > EMPTY]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (EMPTY, EMPTY)
        raise UserError(f'no surface at level {level:g}: the density in the box ranges from {lo:.3g} to {hi:.3g}; '
                        f'give a --level inside that range (EG3D uses {EG3D_LEVEL:g} for trained models)')
    r = grid.shape[0]
    # Density grows inwards, so 'ascent' winds the faces counter-clockwise seen from outside.
    verts, faces, _, _ = marching_cubes(grid, level=level, spacing=(box / (r - 1),) * 3,
                                        gradient_direction='ascent')
    return (verts - box / 2).astype(np.float32), faces.astype(np.int64)


def density_function(G, planes, sphere: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """points [M, 3] world units -> raw density [M] of one head, with the renderer's box crop."""
    from spherehead.render.importance import box_crop_mask
    r = G.config.rendering

    def density(points: torch.Tensor) -> torch.Tensor:
        p = points[None]
        sigma = G.query(planes, p, sphere=sphere)['sigma']
        if r.box_crop:
            sigma = sigma.masked_fill(box_crop_mask(p, r.box_crop, r.box_warp), EMPTY)
        return sigma[0, :, 0]
    return density


def raw_rgb(G, features: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    """Decoder colour features [1, M, C] -> RGB [1, M, 3] in about [-1, 1], as the generator turns its
    feature image into image_raw (sigmoid range mapped to [-1, 1], then toRGB or the first 3 channels)."""
    if G.config.rendering.decoder_activation == 'sigmoid':
        features = features * 2 - 1
    if G.torgb is None:
        return features[..., :3]
    image = features.permute(0, 2, 1).unsqueeze(-1)                    # [1, C, M, 1]: toRGB is 1x1
    return G.torgb(image, ws[:, -1], fused_modconv=False)[..., 0].permute(0, 2, 1)


def vertex_colors(G, planes, ws: torch.Tensor, vertices: np.ndarray, sphere: str, batch: int) -> np.ndarray:
    """vertices [V, 3] world units -> [V, 3] uint8 RGB."""
    device = ws.device
    out = np.empty((len(vertices), 3), dtype=np.uint8)
    for start in range(0, len(vertices), batch):
        p = torch.from_numpy(vertices[start:start + batch]).to(device)[None]
        with torch.no_grad():
            rgb = raw_rgb(G, G.query(planes, p, sphere=sphere)['rgb'], ws)[0]
        out[start:start + len(p[0])] = ((rgb + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
    return out


def extract_mesh(G, ws: torch.Tensor, cfg: MeshConfig, progress: bool = True) -> Mesh:
    """The coloured surface of the head ws [1, num_ws, w_dim] (see the module docstring)."""
    with torch.no_grad():
        planes = G.backbone_planes(ws, noise_mode='const')
    box = G.config.rendering.box_warp
    grid = sample_grid(density_function(G, planes, cfg.sphere), cfg.resolution, box, cfg.batch, ws.device, progress)
    vertices, faces = extract_surface(close_border(grid), box, cfg.level)
    return Mesh(vertices, faces, vertex_colors(G, planes, ws, vertices, cfg.sphere, cfg.batch))


# ----------------------------------------------------------------------------- writers

def _write_atomic(path: Path, write: Callable[[object], None]) -> None:
    tmp = partial_path(path)
    try:
        with open(tmp, 'wb') as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_ply(path: str | os.PathLike, mesh: Mesh, comment: str = '') -> None:
    """Binary little-endian PLY: float x, y, z (+ uchar red, green, blue), faces as uchar-counted int lists."""
    v = mesh.vertices
    fields = [('x', '<f4'), ('y', '<f4'), ('z', '<f4')]
    if mesh.colors is not None:
        fields += [('red', 'u1'), ('green', 'u1'), ('blue', 'u1')]
    vert = np.empty(len(v), dtype=fields)
    vert['x'], vert['y'], vert['z'] = v[:, 0], v[:, 1], v[:, 2]
    if mesh.colors is not None:
        vert['red'], vert['green'], vert['blue'] = mesh.colors.T
    face = np.empty(len(mesh.faces), dtype=[('n', 'u1'), ('idx', '<i4', (3,))])
    face['n'], face['idx'] = 3, mesh.faces
    header = ['ply', 'format binary_little_endian 1.0']
    header += [f'comment {line}' for line in comment.splitlines() if line]
    header += [f'element vertex {len(v)}', 'property float x', 'property float y', 'property float z']
    if mesh.colors is not None:
        header += ['property uchar red', 'property uchar green', 'property uchar blue']
    header += [f'element face {len(face)}', 'property list uchar int vertex_indices', 'end_header']

    def write(f):
        f.write(('\n'.join(header) + '\n').encode('ascii', 'replace'))   # PLY headers are ASCII
        f.write(vert.tobytes())
        f.write(face.tobytes())
    _write_atomic(Path(path), write)


def write_obj(path: str | os.PathLike, mesh: Mesh, comment: str = '') -> None:
    """Wavefront OBJ: 'v x y z [r g b]' (colours in [0, 1], the extension MeshLab and Blender read)
    and 'f a b c' (1-based)."""
    def write(f):
        for line in comment.splitlines():
            f.write(f'# {line}\n'.encode('utf-8'))
        if mesh.colors is not None:
            rows = np.concatenate([mesh.vertices.astype(np.float64), mesh.colors / 255.0], axis=1)
            np.savetxt(f, rows, fmt='v %.6f %.6f %.6f %.4f %.4f %.4f')
        else:
            np.savetxt(f, mesh.vertices, fmt='v %.6f %.6f %.6f')
        np.savetxt(f, mesh.faces + 1, fmt='f %d %d %d')
    _write_atomic(Path(path), write)


WRITERS = {'.ply': write_ply, '.obj': write_obj}


@cc.command()
@cc.network_option()
@cc.device_option()
@cc.trunc_option()
@cc.sphere_option(help=SPHERE_HELP)
@click.option('--seed', type=click.IntRange(0, cc.MAX_SEED), default=0, show_default=True, help='the head to mesh')
@click.option('--res', 'resolution', type=click.IntRange(8, 1024), default=256, show_default=True,
              help='density samples per side of the box (memory: 4 bytes x res^3)')
@click.option('--level', type=cc.Finite('level'), default=EG3D_LEVEL, show_default=True,
              help="iso-level on the raw density (EG3D's default; untrained models need a lower one)")
@click.option('--batch', type=click.IntRange(min=1024), default=2 ** 18, show_default=True,
              help='points per decoder call (lower it if memory runs out)')
@click.option('--out', type=cc.OutputFile(MESH_EXTENSIONS, 'mesh'), default='head.ply', show_default=True,
              help='.ply (binary, vertex colours) or .obj (vertex colours as v x y z r g b); no .glb (needs trimesh)')
def mesh(network, device, truncation_psi, sphere, seed, resolution, level, batch, out):
    """Marching-cubes surface of one head's density with vertex colours from its radiance."""
    G = cc.load_network(network, device)
    check_sphere(G, sphere)
    path = prepare_out(out)
    cfg = MeshConfig(resolution=resolution, level=level, batch=batch, sphere=sphere)
    result = extract_mesh(G, seed_ws(G, seed, truncation_psi, device), cfg)
    comment = (f'SphereHead mesh: seed {seed}, trunc {truncation_psi:g}, sphere {sphere}, res {resolution}, '
               f'level {level:g}\nnetwork: {G.provenance}\n'
               'axes: +x = left of the head, +y = up, +z = front; world units')
    WRITERS[path.suffix.lower()](path, result, comment)
    click.echo(f'wrote {path}: {len(result.vertices)} vertices, {len(result.faces)} faces ({G.provenance})')

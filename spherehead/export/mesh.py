"""A generated head's surface as a triangle mesh with vertex colours, and its writers (.ply, .obj, .glb).

The raw density (decoder output before the renderer's softplus) is sampled on a res^3 grid over
the feature box (side ``box_warp``, centred at the origin, as EG3D's shape extraction does) in
batches, with the renderer's box crop applied, and the outer layer of samples is emptied so the
surface closes. Marching cubes (scikit-image) extracts the iso-surface at ``level`` (EG3D's
default: 10). Vertex colours are the decoder's colour features at each vertex turned into RGB as
the raw image is (toRGB layer, or the first 3 channels), without volume compositing.

Vertices are in world units: +x = the head's left, +y = up, +z = the front (faces wind
counter-clockwise seen from outside). glTF's axes are the same (+y up, the asset's front towards
+z, right-handed), so a .glb opens upright and facing the viewer's default camera.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from spherehead.checkpoint import atomic_file
from spherehead.errors import UserError
from spherehead.export.field import EMPTY, density_function, raw_rgb

MESH_EXTENSIONS = ('.ply', '.obj', '.glb')
EG3D_LEVEL = 10.0        # EG3D's gen_samples.py extracts its shapes at density 10


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
    """Write through ``write(binary file)`` to a temporary name and rename it over ``path`` at the end."""
    with atomic_file(path) as tmp:
        with open(tmp, 'wb') as f:
            write(f)


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


TRIMESH_INSTALL = 'pip install trimesh'


def _trimesh():
    """The trimesh module, or a UserError saying in one line how to install it."""
    try:
        import trimesh
    except ImportError:
        raise UserError(f'writing .glb needs the trimesh package, which is not installed; run '
                        f'`{TRIMESH_INSTALL}` (or reinstall spherehead), or write .ply / .obj') from None
    return trimesh


def require_writer(path: str | os.PathLike) -> None:
    """Refuse (UserError, one line) an output whose writer cannot run here, before any work is done."""
    if Path(path).suffix.lower() == '.glb':
        _trimesh()


def write_glb(path: str | os.PathLike, mesh: Mesh, comment: str = '') -> None:
    """glTF 2.0 binary through trimesh: one mesh, positions (world units), triangles, and the
    colours as the COLOR_0 vertex attribute (no material texture); ``comment`` goes into the asset's
    extras. Vertices are written as given (no merging or reordering)."""
    trimesh = _trimesh()
    colors = None
    if mesh.colors is not None:
        colors = np.concatenate([mesh.colors, np.full((len(mesh.colors), 1), 255, np.uint8)], axis=1)
    tm = trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, vertex_colors=colors, process=False)
    scene = trimesh.Scene(tm)
    if comment:
        scene.metadata['comment'] = comment
    data = scene.export(file_type='glb')
    _write_atomic(Path(path), lambda f: f.write(data))


def read_glb(path: str | os.PathLike) -> Mesh:
    """The first mesh of a .glb as written by ``write_glb`` (for checks): vertices, faces, RGB colours."""
    import trimesh
    scene = trimesh.load(str(path), file_type='glb', process=False, force='scene')
    tm = next(iter(scene.geometry.values()))
    colors = None
    if getattr(tm.visual, 'kind', None) == 'vertex':
        colors = np.asarray(tm.visual.vertex_colors)[:, :3].astype(np.uint8)
    return Mesh(np.asarray(tm.vertices, np.float32), np.asarray(tm.faces, np.int64), colors)


WRITERS = {'.ply': write_ply, '.obj': write_obj, '.glb': write_glb}



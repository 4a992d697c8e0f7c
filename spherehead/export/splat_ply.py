"""The 3D Gaussian Splatting .ply layout: a writer and a reader in numpy (plyfile is GPL, not used).

The layout that 3DGS's ``GaussianModel.save_ply`` writes and splat viewers read (facts checked
against the graphdeco-inria/gaussian-splatting sources: scene/gaussian_model.py, utils/sh_utils.py,
utils/general_utils.py, the SIBR viewer's loader and the CUDA rasteriser; see docs/export.md):

- ``format binary_little_endian 1.0``, one element ``vertex``, every property ``float`` (float32);
- properties in this order: ``x y z nx ny nz f_dc_0 f_dc_1 f_dc_2 f_rest_0 .. f_rest_{K-1} opacity
  scale_0 scale_1 scale_2 rot_0 rot_1 rot_2 rot_3`` with K = 3 ((degree + 1)^2 - 1) (0 for degree 0);
- normals are written as zeros (3DGS does the same; nothing reads them);
- ``opacity`` is stored as a logit (the viewer applies a sigmoid), ``scale_i`` as the natural log of
  the Gaussian's standard deviation along its axis i (world units; the viewer applies exp),
  ``rot_0..3`` as a quaternion (w, x, y, z), normalised by the viewer;
- ``f_dc = (rgb - 0.5) / C0`` with C0 = 0.28209479177387814 (the degree-0 spherical-harmonic
  constant), so a viewer shows rgb = C0 f_dc + 0.5 (clamped below at 0);
- ``f_rest`` is channel-major: the K/3 coefficients of red, then of green, then of blue.

The SIBR viewer of 3DGS reads the vertex count from the third header line and then the records as
a raw struct, so the header here is exactly: ``ply``, the format line, ``element vertex N``, the
properties, comment lines, ``end_header``; comment lines come after the properties for that reason.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spherehead.errors import UserError

SH_C0 = 0.28209479177387814      # the degree-0 real spherical harmonic, 1 / (2 sqrt(pi))
MAX_SH_DEGREE = 3


@dataclass
class Splats:
    """Gaussian splats in their natural units (the file's activations are applied by the writer).

    positions [N, 3] world units; rgb [N, 3] in [0, 1]; opacity [N] in (0, 1); scales [N, 3] standard
    deviations (world units) along the rotated axes; rotations [N, 4] unit quaternions (w, x, y, z);
    sh_rest [N, 3, K] higher-degree spherical-harmonic coefficients (channel-major), K in (0, 3, 8, 15).
    """
    positions: np.ndarray
    rgb: np.ndarray
    opacity: np.ndarray
    scales: np.ndarray
    rotations: np.ndarray
    sh_rest: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.positions)

    @property
    def sh_degree(self) -> int:
        k = 0 if self.sh_rest is None else self.sh_rest.shape[-1]
        return int(round((k + 1) ** 0.5)) - 1

    def with_sh_degree(self, degree: int) -> 'Splats':
        """The same splats with zero higher-degree coefficients up to ``degree`` (view-independent colour
        stays view-independent); for readers that expect a fixed degree (SIBR / 3DGS load degree 3)."""
        k = (degree + 1) ** 2 - 1
        rest = np.zeros((len(self), 3, k), np.float32)
        if self.sh_rest is not None:
            m = min(k, self.sh_rest.shape[-1])
            rest[:, :, :m] = self.sh_rest[:, :, :m]
        return Splats(self.positions, self.rgb, self.opacity, self.scales, self.rotations, rest if k else None)


def rgb_to_dc(rgb: np.ndarray) -> np.ndarray:
    """rgb in [0, 1] -> the degree-0 SH coefficient f_dc."""
    return (rgb - 0.5) / SH_C0


def dc_to_rgb(f_dc: np.ndarray) -> np.ndarray:
    """f_dc -> rgb = C0 f_dc + 0.5 (a viewer then clamps it below at 0)."""
    return f_dc * SH_C0 + 0.5


def logit(p: np.ndarray) -> np.ndarray:
    """Inverse sigmoid (opacity as stored); p in (0, 1)."""
    p = np.asarray(p, np.float64)
    return np.log(p) - np.log1p(-p)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def property_names(sh_degree: int) -> list[str]:
    """The vertex properties in file order for an SH degree 0..3."""
    k = 3 * ((sh_degree + 1) ** 2 - 1)
    return (['x', 'y', 'z', 'nx', 'ny', 'nz', 'f_dc_0', 'f_dc_1', 'f_dc_2']
            + [f'f_rest_{i}' for i in range(k)]
            + ['opacity', 'scale_0', 'scale_1', 'scale_2', 'rot_0', 'rot_1', 'rot_2', 'rot_3'])


def header(count: int, sh_degree: int, comment: str = '') -> bytes:
    """The ASCII header (ending in 'end_header\\n') of ``count`` splats."""
    lines = ['ply', 'format binary_little_endian 1.0', f'element vertex {count}']
    lines += [f'property float {name}' for name in property_names(sh_degree)]
    lines += [f'comment {line}' for line in comment.splitlines() if line.strip()]
    lines.append('end_header')
    return ('\n'.join(lines) + '\n').encode('ascii', 'replace')


def check_splats(s: Splats) -> None:
    """ValueError naming the first field of the wrong shape or with values outside its range."""
    n = len(s.positions)
    shapes = {'positions': (n, 3), 'rgb': (n, 3), 'opacity': (n,), 'scales': (n, 3), 'rotations': (n, 4)}
    for name, shape in shapes.items():
        if np.shape(getattr(s, name)) != shape:
            raise ValueError(f'splats.{name} has shape {np.shape(getattr(s, name))}, expected {shape}')
    if s.sh_rest is not None and (s.sh_rest.ndim != 3 or s.sh_rest.shape[:2] != (n, 3)
                                  or s.sh_rest.shape[2] not in (0, 3, 8, 15)):
        raise ValueError(f'splats.sh_rest has shape {s.sh_rest.shape}, expected [{n}, 3, 3 | 8 | 15]')
    if n and not (np.all(s.opacity > 0) and np.all(s.opacity < 1)):
        raise ValueError('splats.opacity must lie in (0, 1) (it is stored as a logit)')
    if n and not np.all(s.scales > 0):
        raise ValueError('splats.scales must be > 0 (they are stored as logs)')


def to_records(s: Splats) -> np.ndarray:
    """Splats -> [N] structured array of little-endian float32 fields in file order."""
    check_splats(s)
    names = property_names(s.sh_degree)
    table = np.empty((len(s), len(names)), np.float32)
    table[:, 0:3] = s.positions
    table[:, 3:6] = 0.0
    table[:, 6:9] = rgb_to_dc(np.asarray(s.rgb, np.float64))
    k = 0 if s.sh_rest is None else 3 * s.sh_rest.shape[-1]
    if k:
        table[:, 9:9 + k] = s.sh_rest.reshape(len(s), k)     # channel-major: [N, 3, K/3] flattened
    table[:, 9 + k] = logit(s.opacity)
    table[:, 10 + k:13 + k] = np.log(np.asarray(s.scales, np.float64))
    table[:, 13 + k:17 + k] = s.rotations
    return table.astype('<f4').view(np.dtype([(name, '<f4') for name in names])).reshape(len(s))


def write_splats(path: str | os.PathLike, splats: Splats, comment: str = '') -> int:
    """Write ``splats`` to ``path`` (temporary name, then renamed). Returns the bytes written."""
    from spherehead.checkpoint import atomic_file
    records = to_records(splats)
    head = header(len(splats), splats.sh_degree, comment)
    with atomic_file(path) as tmp:
        with open(tmp, 'wb') as f:
            f.write(head)
            f.write(records.tobytes())
    return len(head) + records.nbytes


# ----------------------------------------------------------------------------- reading

@dataclass
class PlyHeader:
    count: int
    names: list[str]          # vertex properties in file order
    comments: list[str]
    size: int                 # bytes up to and including 'end_header\n'


def read_header(data: bytes, path: str = '') -> PlyHeader:
    """Parse a splat file's header; UserError (one line) if it is not a binary little-endian PLY whose
    only element is 'vertex' with float properties."""
    where = f'{path}: ' if path else ''
    end = data.find(b'end_header\n')
    if not data.startswith(b'ply\n') or end < 0:
        raise UserError(f'{where}not a binary PLY file (no "ply" / "end_header" lines); give a 3DGS splat .ply')
    lines = data[:end].decode('ascii', 'replace').split('\n')
    count, names, comments, elements = None, [], [], []
    for line in lines[1:]:
        words = line.split()
        if not words:
            continue
        if words[0] == 'format':
            if words[1:2] != ['binary_little_endian']:
                raise UserError(f'{where}PLY format {" ".join(words[1:])!r}; splat files are binary_little_endian')
        elif words[0] == 'element':
            elements.append(words[1])
            if words[1] == 'vertex':
                count = int(words[2])
        elif words[0] == 'property':
            if elements[-1:] != ['vertex'] or words[1] not in ('float', 'float32'):
                raise UserError(f'{where}property {" ".join(words[1:])!r} is not a float of the vertex element; '
                                'not a 3DGS splat file')
            names.append(words[2])
        elif words[0] == 'comment':
            comments.append(line[len('comment '):])
    if elements != ['vertex'] or count is None:
        raise UserError(f'{where}elements {elements}; a 3DGS splat file has one element, vertex')
    return PlyHeader(count, names, comments, end + len(b'end_header\n'))


def read_splats(path: str | os.PathLike) -> tuple[Splats, PlyHeader]:
    """Read a 3DGS splat .ply (ours or another program's) -> (Splats with the activations applied, header).

    Properties are found by name, so extra ones are ignored; a missing one is a UserError."""
    path = Path(path)
    data = path.read_bytes()
    head = read_header(data, str(path))
    dtype = np.dtype([(name, '<f4') for name in head.names])
    need = head.size + head.count * dtype.itemsize
    if len(data) < need:
        raise UserError(f'{path}: {len(data)} bytes, the header promises {need}; the file is cut short')
    rec = np.frombuffer(data, dtype=dtype, count=head.count, offset=head.size)
    missing = [n for n in property_names(0) if n not in head.names and not n.startswith('n')]
    if missing:
        raise UserError(f'{path}: missing properties {missing}; not a 3DGS splat file')
    col = lambda *names: np.stack([rec[n].astype(np.float64) for n in names], axis=1)  # noqa: E731
    rest_names = sorted((n for n in head.names if n.startswith('f_rest_')), key=lambda n: int(n.split('_')[-1]))
    rest = None
    if rest_names:
        if len(rest_names) % 3 or len(rest_names) // 3 not in (3, 8, 15):
            raise UserError(f'{path}: {len(rest_names)} f_rest properties; expected 9, 24 or 45 (SH degree 1..3)')
        rest = col(*rest_names).reshape(head.count, 3, len(rest_names) // 3).astype(np.float32)
    rot = col('rot_0', 'rot_1', 'rot_2', 'rot_3')
    rot = rot / np.maximum(np.linalg.norm(rot, axis=1, keepdims=True), 1e-30)
    splats = Splats(positions=col('x', 'y', 'z').astype(np.float32),
                    rgb=dc_to_rgb(col('f_dc_0', 'f_dc_1', 'f_dc_2')).astype(np.float32),
                    opacity=sigmoid(rec['opacity']).astype(np.float32),
                    scales=np.exp(col('scale_0', 'scale_1', 'scale_2')).astype(np.float32),
                    rotations=rot.astype(np.float32), sh_rest=rest)
    return splats, head

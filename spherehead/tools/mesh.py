"""`spherehead mesh`: a generated head's surface as a triangle mesh (.ply, .obj or .glb) with vertex
colours. The extraction and the writers are in spherehead/export/mesh.py (see there for the method)."""
from __future__ import annotations

import click

from spherehead.export.mesh import (EG3D_LEVEL, MESH_EXTENSIONS, WRITERS, MeshConfig, extract_mesh,
                                    require_writer)
from spherehead.tools import cli_common as cc
from spherehead.tools.heads import check_sphere, seed_ws
from spherehead.tools.video import SPHERE_HELP, prepare_out


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
              help='.ply (binary, vertex colours), .obj (vertex colours as v x y z r g b) or .glb (glTF binary, '
                   'COLOR_0 vertex colours)')
def mesh(network, device, truncation_psi, sphere, seed, resolution, level, batch, out):
    """Marching-cubes surface of one head's density with vertex colours from its radiance."""
    require_writer(out)                     # e.g. .glb without trimesh: say so before any work
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

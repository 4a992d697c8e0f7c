"""`spherehead splats`: a generated head as Gaussian splats in the standard 3DGS .ply layout, which
splat viewers open. The sampling is spherehead/export/splats.py, the file layout
spherehead/export/splat_ply.py, the check (``--check``) spherehead/export/check.py."""
from __future__ import annotations

import click

from spherehead.export.splat_ply import MAX_SH_DEGREE, write_splats
from spherehead.export.splats import SplatConfig, make_splats
from spherehead.tools import cli_common as cc
from spherehead.tools.heads import check_sphere, seed_ws
from spherehead.tools.video import SPHERE_HELP, prepare_out

SPLAT_EXTENSIONS = ('.ply',)
DEFAULT_COUNT = 300_000
MAX_COUNT = 20_000_000
CHECK_RESOLUTION = 512     # px the check rasterises at (a viewer's window), then averages to the raw size


@cc.command()
@cc.network_option()
@cc.device_option()
@cc.trunc_option()
@cc.sphere_option(help=SPHERE_HELP)
@click.option('--seed', type=click.IntRange(0, cc.MAX_SEED), default=0, show_default=True, help='the head to export')
@click.option('--count', type=click.IntRange(1, MAX_COUNT), default=DEFAULT_COUNT, show_default=True,
              help='splats to write (68 bytes each at --sh-degree 0)')
@click.option('--res', 'resolution', type=click.IntRange(32, 512), default=256, show_default=True,
              help='sampling cells per side of the box (a multiple of 4; memory grows as res^3: 0.85 GB peak for the '
                   'demo at 256)')
@click.option('--sh-degree', type=click.IntRange(0, MAX_SH_DEGREE), default=0, show_default=True,
              help='spherical-harmonic degree in the file; the colour is view-independent, higher degrees '
                   'add zero coefficients for readers that expect them (the 3DGS / SIBR viewers load degree 3)')
@click.option('--sample-seed', type=click.IntRange(0, cc.MAX_SEED), default=0, show_default=True,
              help='random offset and jitter of the sampling')
@click.option('--batch', type=click.IntRange(min=1024), default=2 ** 18, show_default=True,
              help='points per decoder call (lower it if memory runs out)')
@click.option('--check', is_flag=True,
              help='read the file back, render it with the reference rasteriser at yaws 0 / 90 / 180 (512 px, '
                   "averaged down) and print the PSNR against the generator's raw image")
@click.option('--out', type=cc.OutputFile(SPLAT_EXTENSIONS, 'splat'), default='head.ply', show_default=True,
              help='.ply in the 3D Gaussian Splatting layout (binary little-endian float32)')
def splats(network, device, truncation_psi, sphere, seed, count, resolution, sh_degree, sample_seed, batch, check,
           out):
    """Gaussian splats of one head, sampled from its density near the surface, for splat viewers."""
    if resolution % 4:
        raise click.BadParameter(f'{resolution} is not a multiple of 4; use e.g. {resolution // 4 * 4 or 32}',
                                 param_hint="'--res'")
    G = cc.load_network(network, device)
    check_sphere(G, sphere)
    path = prepare_out(out)
    ws = seed_ws(G, seed, truncation_psi, device)
    cfg = SplatConfig(count=count, resolution=resolution, sphere=sphere, seed=sample_seed, batch=batch)
    try:
        result = make_splats(G, ws, cfg)
    except ValueError as e:                  # an empty field: nothing visible to sample
        from spherehead.errors import UserError
        raise UserError(f'{e} (seed {seed}, sphere {sphere}); this network renders no head to export') from None
    comment = (f'SphereHead splats: seed {seed}, trunc {truncation_psi:g}, sphere {sphere}, count {count}, '
               f'res {resolution}, sample seed {sample_seed}\nnetwork: {G.provenance}\n'
               'axes: +x = left of the head, +y = up, +z = front; world units')
    size = write_splats(path, result.with_sh_degree(sh_degree), comment)
    click.echo(f'wrote {path}: {len(result)} splats, SH degree {sh_degree}, {size / 2 ** 20:.1f} MiB '
               f'({G.provenance})')
    if check:                                # the file as written, read back, not the splats in memory
        from spherehead.export.check import compare_views
        from spherehead.export.splat_ply import read_splats
        raw_res = G.config.rendering.neural_rendering_resolution
        k = max(1, CHECK_RESOLUTION // raw_res)
        for v in compare_views(G, ws, read_splats(path)[0], sphere=sphere, supersample=k):
            click.echo(f'check yaw {v.yaw:g}: PSNR {v.psnr:.2f} dB against image_raw ({raw_res} px; mask '
                       f'{v.psnr_mask:.2f} dB), reference rasteriser at {raw_res * k} px averaged down')

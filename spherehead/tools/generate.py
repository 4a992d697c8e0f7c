"""`spherehead generate`: render generated heads from chosen views to PNG files (or one grid per output).

Every file name says what it holds and is unique within a run:
``seed0003_yaw090_pitch000_fused_image.png`` (seed, camera yaw and pitch in degrees, sphere, output);
a grid: ``grid_seeds0-7_yaws000+090+180_pitch000_fused_image.png`` (rows = seeds, columns = yaws).
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import click
import numpy as np
import torch

from spherehead.errors import UserError
from spherehead.tools import cli_common as cc

OUTPUTS = ('image', 'raw', 'depth', 'mask', 'parsing', 'weight')
MAX_IMAGES = 1000          # more than this many images needs --yes


def to_uint8(out: dict, what: str) -> np.ndarray:
    """One rendered output of a single-image synthesis dict -> [H, W, 3] uint8 for viewing."""
    from spherehead.parsing_classes import colorize
    if what == 'image':
        x = (out['image'][0] + 1) * 127.5
    elif what == 'raw':
        x = (out['image_raw'][0] + 1) * 127.5
    elif what == 'depth':
        d, m = out['image_depth'][0, 0], out['image_mask'][0, 0]
        fg = d[m > 0.5] if (m > 0.5).any() else d.reshape(-1)
        lo, hi = fg.min(), fg.max()
        x = ((hi - d) / (hi - lo + 1e-8)).clamp(0, 1)[None].repeat(3, 1, 1) * 255 * m.clamp(0, 1)
    elif what == 'mask':
        x = out['image_mask'][0].repeat(3, 1, 1) * 255
    elif what == 'parsing':
        if 'image_parsing' not in out:
            raise UserError('this model has no parsing branch; choose another --output')
        return colorize(out['image_parsing'][0].argmax(0).cpu().numpy())
    elif what == 'weight':
        if 'sphere_weight' not in out:
            raise UserError('this model has no spheres, so no sphere weight; choose another --output')
        w = out['sphere_weight'][0, 0]
        x = torch.stack([w, 0.3 * torch.ones_like(w), 1 - w]) * 255   # red = sphere A, blue = sphere B
    else:
        raise UserError(f'unknown output {what!r}; choose one of {", ".join(OUTPUTS)}')
    return x.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def angle_tag(deg: float) -> str:
    """Degrees -> a file-name tag: 90 -> '090', 10.25 -> '010.25', -45 -> '-045' (to 0.001 deg)."""
    deg = round(float(deg), 3) + 0.0          # + 0.0 turns -0.0 into 0.0
    whole, _, frac = f'{abs(deg):.3f}'.rstrip('0').rstrip('.').partition('.')
    return ('-' if deg < 0 else '') + whole.zfill(3) + ('.' + frac if frac else '')


def view_name(seed: int, yaw: float, pitch: float, sphere: str, what: str) -> str:
    """File name of one rendered view."""
    return f'seed{seed:04d}_yaw{angle_tag(yaw)}_pitch{angle_tag(pitch)}_{sphere}_{what}.png'


def _runs(values: list[int]) -> str:
    """[0, 1, 2, 5] -> '0-2+5'."""
    parts, i = [], 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f'{values[i]}-{values[j]}')
        i = j + 1
    return '+'.join(parts)


def grid_name(seeds: list[int], yaws: list[float], pitch: float, sphere: str, what: str) -> str:
    """File name of a grid (rows = seeds, columns = yaws); long lists become a count and a short hash."""
    s, y = _runs(seeds), '+'.join(angle_tag(v) for v in yaws)
    if len(s) > 40:
        s = f'{len(seeds)}x{hashlib.sha1(s.encode()).hexdigest()[:8]}'
    if len(y) > 40:
        y = f'{len(yaws)}x{hashlib.sha1(y.encode()).hexdigest()[:8]}'
    return f'grid_seeds{s}_yaws{y}_pitch{angle_tag(pitch)}_{sphere}_{what}.png'


def _check_outputs(G, outputs: tuple[str, ...], sphere: str) -> None:
    """Refuse outputs and spheres the loaded network cannot give (exit 2) before anything is written."""
    if 'parsing' in outputs and getattr(G, 'toparsing', None) is None:
        raise click.BadParameter('this network has no parsing branch; choose image, raw, depth, mask or weight',
                                 param_hint="'--output parsing'")
    if not G.config.is_sphere:
        if 'weight' in outputs:
            raise click.BadParameter(f'this network is a {G.config.representation}, without spheres; '
                                     f'choose image, raw, depth, mask or parsing', param_hint="'--output weight'")
        if sphere != 'fused':
            raise click.BadParameter(f'this network is a {G.config.representation}, without spheres; '
                                     f'leave --sphere at fused', param_hint=f"'--sphere {sphere}'")


@cc.command()
@cc.network_option()
@click.option('--seeds', type=cc.SeedList(), default='0', show_default=True,
              help="seeds, e.g. '0,1,2', '0-7' or '0-3,10' (0 .. 2**32-1, each once)")
@click.option('--yaws', type=cc.FloatList('yaw', -360, 360), default='0,90,180,270', show_default=True,
              help='camera yaws in degrees, -360..360 (0 = front, 90 = at the head\'s left, 180 = back)')
@click.option('--pitch', type=cc.Finite('pitch', -90, 90), default=0.0, show_default=True,
              help='camera pitch in degrees, -90..90 (+90 = from above)')
@cc.trunc_option()
@cc.sphere_option()
@click.option('--output', 'outputs', type=click.Choice(OUTPUTS), multiple=True, default=('image',),
              show_default=True, help='what to write; repeat for several (--output image --output depth)')
@click.option('--grid', is_flag=True, help='write one grid image per output (rows = seeds, columns = yaws) '
                                           'instead of one file per view')
@click.option('--outdir', type=cc.OutputDir(), default='out', show_default=True, help='folder for the PNGs')
@cc.device_option()
@click.option('--yes', 'go_on', is_flag=True, help=f'go on when the request is more than {MAX_IMAGES} images')
def generate(network, seeds, yaws, pitch, truncation_psi, sphere, outputs, grid, outdir, device, go_on):
    """Render each seed from each yaw to PNG files in OUTDIR, named by what they hold
    (seed0000_yaw090_pitch000_fused_image.png), or with --grid one image of seeds x yaws per output.
    Sampling is deterministic: the same arguments give the same files."""
    import PIL.Image
    from tqdm import tqdm

    import spherehead as sh
    outputs = tuple(dict.fromkeys(outputs))                        # --output image --output image: once
    count = len(seeds) * len(yaws) * len(outputs)
    cc.check_count(count, 'images', f'{len(seeds)} seeds x {len(yaws)} yaws x {len(outputs)} outputs', go_on,
                   MAX_IMAGES)
    if grid:
        names = [grid_name(seeds, yaws, pitch, sphere, w) for w in outputs]
    else:
        names = [view_name(s, y, pitch, sphere, w) for s in seeds for y in yaws for w in outputs]
    if len(set(names)) != len(names):                              # yaws closer than 0.001 deg
        raise click.BadParameter('two yaws give the same file name; use yaws at least 0.001 degrees apart',
                                 param_hint="'--yaws'")
    G = cc.load_network(network, device)
    _check_outputs(G, outputs, sphere)
    out_dir = cc.make_dir(outdir)
    replaced = sum((out_dir / n).exists() for n in names)

    tiles: dict[str, list[list[np.ndarray]]] = {w: [] for w in outputs}
    written: list[Path] = []
    front = sh.camera.lookat(0, 0, device=device)
    with torch.no_grad(), tqdm(total=len(seeds) * len(yaws), unit='view', desc='generate', disable=None) as bar:
        for seed in seeds:
            z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float().to(device)
            ws = G.mapping(z, front, truncation_psi=truncation_psi)
            planes = G.backbone_planes(ws)
            for w in outputs:
                tiles[w].append([])
            for yaw in yaws:
                c = sh.camera.lookat(yaw, pitch, device=device)
                out = G.synthesis(ws, c, sphere=sphere, deterministic=True, planes=planes)
                for w in outputs:
                    img = to_uint8(out, w)
                    if grid:
                        tiles[w][-1].append(img)
                    else:
                        path = out_dir / view_name(seed, yaw, pitch, sphere, w)
                        PIL.Image.fromarray(img).save(path)
                        written.append(path)
                bar.update(1)
    if grid:
        for w, name in zip(outputs, names):
            rows = tiles[w]
            size = max(t.shape[0] for row in rows for t in row)    # outputs of one kind share one size
            img = np.concatenate([np.concatenate(row, axis=1) for row in rows], axis=0)
            assert img.shape[:2] == (size * len(seeds), size * len(yaws))
            PIL.Image.fromarray(img).save(out_dir / name)
            written.append(out_dir / name)
    plural = 's' if len(written) != 1 else ''
    what = (f'{len(written)} grid image{plural} of {len(seeds)} seeds x {len(yaws)} yaws' if grid
            else f'{len(written)} image{plural}')
    span = written[0].name + (f' .. {written[-1].name}' if len(written) > 1 else '')
    note = f'; replaced {replaced} existing file(s)' if replaced else ''
    click.echo(f'wrote {what} to {out_dir} ({span}){note}; network: {G.provenance}')

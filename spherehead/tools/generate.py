"""`spherehead generate`: render images of generated heads from chosen views to PNG files."""
from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import torch

from spherehead.config import SPHERE_MODES
from spherehead.errors import UserError

OUTPUTS = ('image', 'raw', 'depth', 'mask', 'parsing', 'weight')


def parse_list(text: str, kind=float) -> list:
    """'0,90,180' or '0-3' (integers only) -> list of values."""
    out = []
    for part in text.split(','):
        part = part.strip()
        if kind is int and '-' in part[1:]:
            a, b = part.split('-', 1) if not part.startswith('-') else (part, part)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(kind(part))
    return out


def to_uint8(out: dict, what: str) -> np.ndarray:
    """One rendered output of a single-image dict -> [H, W, 3] uint8 for viewing."""
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


@click.command()
@click.option('--network', default='demo', show_default=True, help="a .safetensors, a released .pkl, 'demo' or 'random:tiny'")
@click.option('--seeds', default='0', show_default=True, help="seeds, e.g. '0,1,2' or '0-7'")
@click.option('--yaws', default='0,90,180,270', show_default=True, help='camera yaws in degrees (0 = front, 180 = back)')
@click.option('--pitch', default=0.0, show_default=True, help='camera pitch in degrees (+90 = from above)')
@click.option('--trunc', 'truncation_psi', default=0.7, show_default=True, help='truncation psi')
@click.option('--sphere', type=click.Choice(SPHERE_MODES), default='fused', show_default=True)
@click.option('--output', 'what', type=click.Choice(OUTPUTS), default='image', show_default=True)
@click.option('--outdir', type=click.Path(file_okay=False), default='out', show_default=True)
@click.option('--device', default='cuda' if torch.cuda.is_available() else 'cpu', show_default=True)
def generate(network, seeds, yaws, pitch, truncation_psi, sphere, what, outdir, device):
    """Render each seed from each yaw to OUTDIR/seedSSSS_yawYYY.png (deterministic sampling)."""
    import PIL.Image
    from tqdm import tqdm

    import spherehead as sh
    try:
        G = sh.load_generator(network, device=device)
        seed_list, yaw_list = parse_list(seeds, int), parse_list(yaws, float)
        Path(outdir).mkdir(parents=True, exist_ok=True)
        front = sh.camera.lookat(0, 0, device=device)
        for seed in tqdm(seed_list, desc='seeds', disable=len(seed_list) < 2):
            z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float().to(device)
            ws = G.mapping(z, front, truncation_psi=truncation_psi)
            planes = G.backbone_planes(ws)
            for yaw in yaw_list:
                c = sh.camera.lookat(yaw, pitch, device=device)
                with torch.no_grad():
                    out = G.synthesis(ws, c, sphere=sphere, deterministic=True, planes=planes)
                path = Path(outdir) / f'seed{seed:04d}_yaw{int(round(yaw)) % 360:03d}.png'
                PIL.Image.fromarray(to_uint8(out, what)).save(path)
    except (UserError, ValueError) as e:
        raise click.ClickException(str(e))
    click.echo(f'wrote {len(seed_list) * len(yaw_list)} images to {outdir} ({G.provenance})')

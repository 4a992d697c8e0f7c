"""``spherehead dataset ...``: synth, pack, check, info, sheet.

Every DatasetError becomes one ``Error: ...`` line and exit status 1 (no traceback).
"""
from __future__ import annotations

import functools
import os

import click

from spherehead.data.errors import DatasetError


def _friendly(fn):
    """Turn DatasetError (and file-system errors) into a one-line click error."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DatasetError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            raise click.ClickException(f'{e.filename or ""}: {e.strerror or e}; check the path and permissions'
                                       ) from None
    return wrapper


@click.group(context_settings={'help_option_names': ['-h', '--help']})
def dataset() -> None:
    """Datasets in the EG3D / PanoHead format: make, pack, check and inspect them."""


@dataset.command()
@click.option('--out', required=True, type=click.Path(dir_okay=True), help='Output .zip, or a folder for any other name.')
@click.option('--count', default=1000, show_default=True, type=click.IntRange(min=1), help='Number of images.')
@click.option('--resolution', default=128, show_default=True, type=click.IntRange(min=8), help='Image size R (R x R).')
@click.option('--seed', default=0, show_default=True, type=int, help='Dataset seed; image i uses (seed, i).')
@click.option('--front-bias', default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help='Probability that a view is near-frontal (yaw ~ N(0, 25 deg)) instead of uniform over 360 deg.')
@click.option('--supersample', default=2, show_default=True, type=click.IntRange(min=1),
              help='Anti-aliasing: S x S rays per pixel for the image (maps use pixel centres).')
@click.option('--workers', default=0, show_default=True, type=click.IntRange(min=0), help='Processes (0: one per core).')
@click.option('--overwrite', is_flag=True, help='Replace --out if it exists.')
@_friendly
def synth(out, count, resolution, seed, front_bias, supersample, workers, overwrite):
    """Render a synthetic full-head dataset (images, masks, parsing maps, dataset.json)."""
    from spherehead.data.synth import SynthOptions, synth_dataset
    stats = synth_dataset(SynthOptions(out=out, count=count, resolution=resolution, seed=seed, front_bias=front_bias,
                                       supersample=supersample, workers=workers, overwrite=overwrite))
    click.echo(f'wrote {stats["count"]} images to {out} in {stats["seconds"]:.1f} s '
               f'({stats["images_per_s"]:.1f} images/s, {stats["workers"]} workers)')


@dataset.command()
@click.argument('source', type=click.Path())
@click.option('--out', required=True, type=click.Path(), help='Output .zip, or a folder for any other name.')
@click.option('--resolution', required=True, type=click.IntRange(min=8), help='Output size R (R x R).')
@click.option('--parsing', type=click.Path(), default=None, help='Folder/zip of parsing maps (default: SOURCE/parsing).')
@click.option('--masks', type=click.Path(), default=None, help='Folder/zip of masks (default: SOURCE/masks).')
@click.option('--overwrite', is_flag=True, help='Replace --out if it exists.')
@_friendly
def pack(source, out, resolution, parsing, masks, overwrite):
    """Pack SOURCE (folder or zip with dataset.json) into a training dataset at one resolution."""
    from spherehead.data.pack import PackOptions, pack_dataset
    stats = pack_dataset(PackOptions(source=source, out=out, resolution=resolution, parsing=parsing, masks=masks,
                                     overwrite=overwrite))
    click.echo(f'packed {stats["count"]} images at {resolution}x{resolution} into {out} '
               f'(masks: {"yes" if stats["masks"] else "no"}, parsing: {"yes" if stats["parsing"] else "no"})')


@dataset.command()
@click.argument('path', type=click.Path())
@click.option('--quiet', is_flag=True, help='No progress bar.')
@_friendly
def check(path, quiet):
    """Check that a dataset is usable; exit 0 if it is, 1 if not."""
    from spherehead.data.check import check_dataset
    report = check_dataset(path, progress=not quiet)
    for line in report.lines:
        click.echo(line)
    for w in report.warnings:
        click.echo(f'warning: {w}')
    for p in report.problems:
        click.echo(f'problem: {p}', err=True)
    if report.ok:
        click.echo(f'OK: {path} is usable')
    else:
        raise click.ClickException(f'{path}: {len(report.problems)} problem(s) above; fix them and check again')


@dataset.command()
@click.argument('path', type=click.Path())
@click.option('--front-only', type=float, default=None, help='Keep |yaw| < this many degrees.')
@click.option('--rebalance', is_flag=True, help='Apply view re-balancing and report its counts.')
@click.option('--rebalance-constant', default=2000, show_default=True, type=click.IntRange(min=1))
@click.option('--rebalance-bins', default=36, show_default=True, type=click.IntRange(min=1))
@click.option('--xflip', is_flag=True, help='Add mirrored copies.')
@_friendly
def info(path, front_only, rebalance, rebalance_constant, rebalance_bins, xflip):
    """Describe the dataset as the trainer would load it (filters, re-balancing counts)."""
    from spherehead.data.dataset import DatasetOptions, HeadDataset
    ds = HeadDataset(DatasetOptions(path=path, front_only_deg=front_only, rebalance=rebalance,
                                    rebalance_constant=rebalance_constant, rebalance_bins=rebalance_bins,
                                    xflip=xflip))
    for line in ds.summary():
        click.echo(line)


@dataset.command()
@click.option('--out', required=True, type=click.Path(), help='PNG to write.')
@click.option('--seed', default=0, show_default=True, type=int)
@click.option('--resolution', default=128, show_default=True, type=click.IntRange(min=16))
@click.option('--count', default=16, show_default=True, type=click.IntRange(min=1))
@_friendly
def sheet(out, seed, resolution, count):
    """Contact sheet of synthetic heads at yaws spread over 360 degrees (docs/synthetic_heads.png)."""
    from PIL import Image

    from spherehead.data.synth import contact_sheet
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    Image.fromarray(contact_sheet(seed=seed, resolution=resolution, count=count)).save(out, optimize=True)
    click.echo(f'wrote {out}')

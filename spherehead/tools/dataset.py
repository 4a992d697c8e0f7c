"""``spherehead dataset ...``: synth, pack, check, info, sheet.

Every DatasetError (and file-system error) becomes one ``Error: ...`` line and exit status 1,
every bad argument one line and exit status 2 (spherehead.tools.cli_common; no traceback). The work itself
is the library's (spherehead.data: synth, pack, check, dataset).
"""
from __future__ import annotations

import click

from spherehead.tools import cli_common as cc

MAX_RESOLUTION = 4096        # images are R x R; larger would not fit in memory while rendering or packing
MAX_SUPERSAMPLED = 4096      # synth: resolution x supersample (rays per image side; memory grows as its square)
IMAGE_EXTS = ('.png', '.jpg', '.jpeg')


class DatasetOutput(cc.OutputPath):
    """--out of synth / pack: a .zip or a folder; other archive names (.tar, .tar.gz, ...) are refused."""

    def convert(self, value, param, ctx) -> str:
        from spherehead.data.writer import archive_problem
        text = super().convert(value, param, ctx)
        problem = archive_problem(text)
        if problem:
            self.fail(problem, param, ctx)
        return text


@cc.group()
def dataset() -> None:
    """Datasets in the EG3D / PanoHead format: make, pack, check and inspect them."""


@dataset.command()
@click.option('--out', required=True, type=DatasetOutput(),
              help='Output .zip, or a folder for any other name (.tar and other archives are refused).')
@click.option('--count', default=1000, show_default=True, type=click.IntRange(min=1), help='Number of images.')
@click.option('--resolution', default=128, show_default=True, type=click.IntRange(8, 2048),
              help='Image size R (R x R), 8..2048.')
@click.option('--seed', default=0, show_default=True, type=click.IntRange(min=0),
              help='Dataset seed (>= 0); image i uses (seed, i).')
@click.option('--front-bias', default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help='Probability that a view is near-frontal (yaw ~ N(0, 25 deg)) instead of uniform over 360 deg.')
@click.option('--supersample', default=2, show_default=True, type=click.IntRange(1, 16),
              help=f'Anti-aliasing: S x S rays per pixel for the image (maps use pixel centres); '
                   f'resolution x S at most {MAX_SUPERSAMPLED}.')
@click.option('--workers', default=0, show_default=True, type=click.IntRange(0, 256), help='Processes (0: one per core).')
@click.option('--overwrite', is_flag=True, help='Replace --out if it exists.')
def synth(out, count, resolution, seed, front_bias, supersample, workers, overwrite):
    """Render a synthetic full-head dataset (images, masks, parsing maps, dataset.json)."""
    from spherehead.data.synth import SynthOptions, synth_dataset
    if resolution * supersample > MAX_SUPERSAMPLED:
        raise click.BadParameter(f'--resolution {resolution} x --supersample {supersample} = '
                                 f'{resolution * supersample} rays per image side, more than {MAX_SUPERSAMPLED} '
                                 f'(memory); lower --supersample', param_hint="'--supersample'")
    stats = synth_dataset(SynthOptions(out=out, count=count, resolution=resolution, seed=seed, front_bias=front_bias,
                                       supersample=supersample, workers=workers, overwrite=overwrite))
    click.echo(f'wrote {stats["count"]} images to {out} in {stats["seconds"]:.1f} s '
               f'({stats["images_per_s"]:.1f} images/s, {stats["workers"]} workers)')


@dataset.command()
@click.argument('source', type=click.Path())
@click.option('--out', required=True, type=DatasetOutput(),
              help='Output .zip, or a folder for any other name (.tar and other archives are refused).')
@click.option('--resolution', required=True, type=click.IntRange(8, MAX_RESOLUTION),
              help=f'Output size R (R x R), 8..{MAX_RESOLUTION}.')
@click.option('--parsing', type=click.Path(), default=None, help='Folder/zip of parsing maps (default: SOURCE/parsing).')
@click.option('--masks', type=click.Path(), default=None, help='Folder/zip of masks (default: SOURCE/masks).')
@click.option('--overwrite', is_flag=True, help='Replace --out if it exists.')
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
@click.option('--front-only', type=cc.Finite('yaw limit', 0, 180), default=None,
              help='Keep |yaw| < this many degrees (0..180).')
@click.option('--rebalance', is_flag=True, help='Apply view re-balancing and report its counts.')
@click.option('--rebalance-constant', default=2000, show_default=True, type=click.IntRange(min=1))
@click.option('--rebalance-bins', default=36, show_default=True, type=click.IntRange(min=1))
@click.option('--xflip', is_flag=True, help='Add mirrored copies.')
def info(path, front_only, rebalance, rebalance_constant, rebalance_bins, xflip):
    """Describe the dataset as the trainer would load it (filters, re-balancing counts)."""
    from spherehead.data.dataset import DatasetOptions, HeadDataset
    ds = HeadDataset(DatasetOptions(path=path, front_only_deg=front_only, rebalance=rebalance,
                                    rebalance_constant=rebalance_constant, rebalance_bins=rebalance_bins,
                                    xflip=xflip))
    for line in ds.summary():
        click.echo(line)


@dataset.command()
@click.option('--out', required=True, type=cc.OutputFile(IMAGE_EXTS, 'image'), help='Image to write (.png or .jpg).')
@click.option('--seed', default=0, show_default=True, type=click.IntRange(min=0), help='Seed (>= 0).')
@click.option('--resolution', default=128, show_default=True, type=click.IntRange(16, 1024),
              help='Size of each head, 16..1024.')
@click.option('--count', default=16, show_default=True, type=click.IntRange(1, 256), help='Heads, 1..256.')
def sheet(out, seed, resolution, count):
    """Contact sheet of synthetic heads at yaws spread over 360 degrees (docs/synthetic_heads.png)."""
    from PIL import Image

    from spherehead.data.synth import contact_sheet
    cc.make_parent(out)
    Image.fromarray(contact_sheet(seed=seed, resolution=resolution, count=count)).save(out, optimize=True)
    click.echo(f'wrote {out}')

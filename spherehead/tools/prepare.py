"""`spherehead prepare PHOTOS... --out DIR`: your photos to a dataset (crops + camera labels), offline.

For each photo: find the face and its landmarks, estimate the head pose, write the EG3D-style crop at the
asked resolution with its 25-number camera label, a foreground mask and a preview. A photo that cannot be
prepared is refused in one line and the others go on. See docs/photos.md.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from spherehead.errors import UserError
from spherehead.tools import cli_common as cc


def collect_photos(paths: tuple[str, ...]) -> list[str]:
    """Photo files from the arguments (a folder gives the photos directly inside it, sorted by name).

    Refuses (click.BadParameter, one line) a missing path, a file with an unknown extension, a folder with
    no photos and a photo named twice."""
    from spherehead.photo.prepare import PHOTO_EXTS
    exts = ', '.join(PHOTO_EXTS)
    out: list[str] = []
    for text in paths:
        p = Path(text)
        if p.is_dir():
            found = sorted(str(q) for q in p.iterdir() if q.is_file() and q.suffix.lower() in PHOTO_EXTS)
            if not found:
                raise click.BadParameter(f'{text!r} is a folder with no photos in it ({exts}); give photo files '
                                         f'or a folder holding some', param_hint='PHOTOS')
            out += found
        elif p.is_file():
            if p.suffix.lower() not in PHOTO_EXTS:
                raise click.BadParameter(f'{text!r}: unknown photo type {p.suffix or "(no extension)"!r}; give '
                                         f'{exts} files', param_hint='PHOTOS')
            out.append(text)
        else:
            raise click.BadParameter(f'{text!r}: no such file or folder; check the path', param_hint='PHOTOS')
    seen: dict[str, str] = {}
    for q in out:
        key = os.path.realpath(q)
        if key in seen:
            raise click.BadParameter(f'{q!r} is given twice (also as {seen[key]!r}); name each photo once',
                                     param_hint='PHOTOS')
        seen[key] = q
    return out


@cc.command('prepare')
@click.argument('photos', nargs=-1, required=True, metavar='PHOTOS...')
@click.option('--out', type=cc.OutputPath(), required=True,
              help='dataset to write: a folder (or a name ending in .zip); must not exist or be empty')
@click.option('--resolution', type=click.IntRange(32, 4096), default=512, show_default=True,
              help='side of the square crops in pixels')
@click.option('--yaw', type=cc.Finite('yaw', -180, 180), default=None,
              help='camera yaw in degrees for photos in which no face is found, e.g. 180 for the back of the '
                   'head (0 = front, 90 = at the head\'s left); their crop is the photo\'s centre square')
@click.option('--pitch', type=cc.Finite('pitch', -89, 89), default=None,
              help='camera pitch in degrees with --yaw (+ = from above)  [default: 0]')
@click.option('--masks/--no-masks', default=True, show_default=True, help='write foreground masks under masks/')
@click.option('--previews/--no-previews', default=True, show_default=True,
              help='write a preview per photo under previews/ (landmarks, crop, yaw/pitch/roll)')
@click.option('--overwrite', is_flag=True, help='replace an existing --out')
def prepare(photos, out, resolution, yaw, pitch, masks, previews, overwrite):
    """Crop PHOTOS (files or folders) and label their cameras: a dataset for train.py --data and invert --data.

    Offline: the face detector, face mesh and segmenter ship with spherehead. A photo without a face is refused
    in one line (give --yaw for a back-of-head photo) and the others go on."""
    if pitch is not None and yaw is None:
        raise click.BadParameter('--pitch is only used with --yaw (for photos without a face); add --yaw DEG',
                                 param_hint='--pitch')
    files = collect_photos(photos)
    from tqdm import tqdm

    from spherehead.photo.prepare import PhotoDatasetWriter, PhotoRefused, PrepareOptions, prepare_photo, read_photo
    options = PrepareOptions(resolution=resolution, yaw=yaw, pitch=0.0 if pitch is None else pitch, masks=masks,
                             previews=previews)
    refused: list[str] = []
    try:
        writer = PhotoDatasetWriter(out, overwrite=overwrite)
    except OSError as e:
        raise UserError(f'{out}: cannot write the dataset here ({e.strerror or e}); choose another --out') from None
    with writer:
        for path in tqdm(files, desc='prepare', unit='photo', disable=None, file=sys.stderr):
            try:
                result = prepare_photo(read_photo(path), options, name=path)
            except PhotoRefused as e:
                refused.append(path)
                tqdm.write(f'refused: {cc.one_line(e)}', file=sys.stderr)
                continue
            writer.add(path, result)
        if writer.count == 0:
            raise UserError(f'none of the {len(files)} photo(s) could be prepared (reasons above); nothing was '
                            f'written')
        written = writer.count
    what = ', '.join(['dataset.json'] + (['masks/'] if masks else []) + (['previews/'] if previews else [])
                     + ['prepare.json'])
    tail = f'; {len(refused)} refused' if refused else ''
    click.echo(f'wrote {written} of {len(files)} photo(s) to {out} ({what}){tail}')

"""How well `spherehead prepare` recovers known cameras, printed as tables:

    python -m spherehead.tools.photo_accuracy

The measurements are spherehead.photo.accuracy's (demo heads at known yaw / pitch; a photo
turned in the image plane); docs/photos.md gives the figures.
"""
from __future__ import annotations

import click
import numpy as np

from spherehead.photo.accuracy import measure_demo, measure_roll
from spherehead.tools.cli_common import FloatList, SeedList


@click.command()
@click.option('--yaws', default='-60,-45,-30,-15,0,15,30,45,60', show_default=True)
@click.option('--pitches', default='-15,0,15', show_default=True)
@click.option('--seeds', default='0-3', show_default=True)
@click.option('--turns', default='-30,-15,0,15,30', show_default=True)
def main(yaws, pitches, seeds, turns):
    """Print the two measurements (spherehead.photo.accuracy) as tables."""
    yaws, pitches = FloatList().convert(yaws, None, None), FloatList().convert(pitches, None, None)
    seeds, turns = SeedList().convert(seeds, None, None), FloatList().convert(turns, None, None)
    rows = measure_demo(yaws, pitches, seeds)
    print('demo heads (128 px), by true yaw: found / total, yaw error mean (sd), pitch error mean (sd), degrees')
    for y in yaws:
        sel = [r for r in rows if r['yaw'] == y]
        ok = [r for r in sel if r['found']]
        if not ok:
            print(f'  yaw {y:+6.1f}: 0/{len(sel)} found')
            continue
        ey = np.array([r['yaw_est'] - r['yaw'] for r in ok])
        ep = np.array([r['pitch_est'] - r['pitch'] for r in ok])
        print(f'  yaw {y:+6.1f}: {len(ok)}/{len(sel)} found  yaw err {ey.mean():+6.2f} ({ey.std():5.2f})  '
              f'pitch err {ep.mean():+6.2f} ({ep.std():5.2f})')
    ok = [r for r in rows if r['found']]
    if ok:
        ey = np.array([r['yaw_est'] - r['yaw'] for r in ok])
        ep = np.array([r['pitch_est'] - r['pitch'] for r in ok])
        print(f'  all: {len(ok)}/{len(rows)} found, |yaw err| mean {np.abs(ey).mean():.2f}, '
              f'|pitch err| mean {np.abs(ep).mean():.2f}, yaw slope {np.polyfit([r["yaw"] for r in ok], [r["yaw_est"] for r in ok], 1)[0]:.3f}')
    print('astronaut turned in the image (clockwise on screen): estimated roll, yaw, pitch')
    for r in measure_roll(turns):
        print(f'  turn {r["turn"]:+6.1f}: roll {r["roll_est"]:+6.2f}  yaw {r["yaw_est"]:+6.2f}  '
              f'pitch {r["pitch_est"]:+6.2f}')


if __name__ == '__main__':
    main()

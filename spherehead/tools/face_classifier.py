"""Rebuild the face-visible classifier of ``ff_rate``: train on synthetic heads, validate, save.

    python -m spherehead.tools.face_classifier --out spherehead/assets/face_classifier.safetensors

The training and validation protocol is spherehead.metrics.face_train's; docs/metrics.md gives
the figures this prints.
"""
from __future__ import annotations

import json
import time

import click
import torch

from spherehead.metrics.face import save_classifier
from spherehead.metrics.face_train import render_set, train, validate


@click.command()
@click.option('--out', required=True, type=click.Path(dir_okay=False), help='Output .safetensors.')
@click.option('--count', default=12000, show_default=True, help='Training images.')
@click.option('--seed', default=1000, show_default=True, help='Synthetic dataset seed of the training images.')
@click.option('--steps', default=6000, show_default=True, help='Optimiser steps (batch 64).')
@click.option('--val-seed', default=2000, show_default=True, help='Synthetic dataset seed of the validation images.')
@click.option('--val-count', default=2000, show_default=True, help='Validation images (random views).')
@click.option('--val-heads', default=500, show_default=True, help='Heads for the front / back view protocol rates.')
def main(out, count, seed, steps, val_seed, val_count, val_heads):
    """Train, validate and save the face-visible classifier."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    images, labels, _ = render_set(seed, count)
    model = train(images, labels, steps)
    info = {'train_seed': seed, 'train_count': count, 'train_positive_rate': float(labels.float().mean()),
            'steps': steps, 'batch': 64}
    info.update(validate(model, val_seed, val_count, val_heads))
    info['seconds'] = round(time.perf_counter() - start, 1)
    save_classifier(model, out, info)
    click.echo(json.dumps(info, indent=1))


if __name__ == '__main__':
    main()

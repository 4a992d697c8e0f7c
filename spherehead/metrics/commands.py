"""``spherehead metrics``: compute metrics of a network and print them as one JSON line."""
from __future__ import annotations

import json
import os
import time

import click
import torch

from spherehead.errors import UserError


@click.command()
@click.option('--network', default='demo', show_default=True, help="a .safetensors, a released .pkl, 'demo' or 'random:tiny'")
@click.option('--data', default=None, type=click.Path(), help='Dataset (folder or zip) for the FID / KID metrics.')
@click.option('--metrics', 'metric_list', default='fid50k_full', show_default=True,
              help='Comma-separated: fid50k_full, kid50k_full, fid_front, fid_side, fid_back, fid3d, ff_rate, mirror_score.')
@click.option('--num', default=None, type=click.IntRange(min=2),
              help='Generated images (seeds for ff_rate / mirror_score) per metric; default: each metric\'s own.')
@click.option('--inception', default=None, type=click.Path(),
              help='Inception-v3 TorchScript file (inception-2015-12-05.pt); default $SPHEREHEAD_INCEPTION.')
@click.option('--seed', default=0, show_default=True, type=int, help='First latent seed; camera picks derive from it.')
@click.option('--batch', 'batch_size', default=8, show_default=True, type=click.IntRange(min=1), help='Generator batch size.')
@click.option('--cache', 'cache_dir', default=None, type=click.Path(file_okay=False),
              help='Folder that keeps dataset features between runs.')
@click.option('--out', default=None, type=click.Path(dir_okay=False), help='Also append the JSON line to this file.')
@click.option('--device', default='cuda' if torch.cuda.is_available() else 'cpu', show_default=True)
@click.option('--quiet', is_flag=True, help='No progress bars.')
def metrics(network, data, metric_list, num, inception, seed, batch_size, cache_dir, out, device, quiet):
    """Compute quality and artifact metrics of NETWORK; prints {"results": {...}, ...} as one JSON line.

    See docs/metrics.md for what each metric measures and its defaults.
    """
    import spherehead as sh
    from spherehead.metrics.compute import compute_metrics, needs_dataset, validate_metrics
    try:
        names = validate_metrics(metric_list, inception)
    except UserError as e:
        raise click.BadParameter(str(e), param_hint="'--metrics' / '--inception'") from None
    if not names:
        raise click.BadParameter('no metric named', param_hint="'--metrics'")
    if needs_dataset(names) and not data:
        raise click.UsageError(f'{", ".join(n for n in names if n.startswith(("fid", "kid")))} compare against a '
                               f'dataset: give --data DATASET')
    start = time.perf_counter()
    try:
        G = sh.load_generator(network, device=device)
        results = compute_metrics(G, data, names, num=num, device=device, inception=inception, seed=seed,
                                  progress=not quiet, batch_size=batch_size, cache_dir=cache_dir)
    except UserError as e:
        raise click.ClickException(str(e)) from None
    record = {'results': results, 'network': network, 'provenance': str(getattr(G, 'provenance', '')),
              'data': data, 'num': num, 'seed': seed, 'device': str(device),
              'seconds': round(time.perf_counter() - start, 2), 'timestamp': time.time()}
    line = json.dumps(record)
    click.echo(line)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, 'a') as f:
            f.write(line + '\n')

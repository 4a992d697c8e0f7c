"""Timing of one training iteration, split into its passes, on random inputs (no dataset needed).

One iteration = G main pass + D main pass, plus the lazy regularisers amortised: the density
regulariser every ``density_reg_interval`` G steps and R1 every ``r1_interval`` D steps.
Each pass is timed with its backward, its gradient exchange (`GradientSync`, one rank: no
collective) and its Adam step (CUDA events on a GPU).

Besides precision, kernels and the gradient exchange, a timing can vary its `StepSetting`: which
formulations of issue 22 run (R1's convolution autograd, the demodulation and dense-layer formulas;
each has a switch) and the backend flags (cuDNN autotuning, TF32). The networks of a precision and
exchange mode serve every setting (settings change no shapes).

Settings and gradient-exchange modes are timed interleaved: pass by pass, each timed repeat runs
every setting in turn (the setting in effect only for its own runs) and, under it, every mode on
its own copy of the networks. A drift of the machine's speed during the run then falls on all of
them alike; timed one after the other, two settings running the same code differed by up to 18 %
on an H200 (docs/performance.md). Each pass reports its median and interquartile range.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import time
import warnings
from contextlib import contextmanager
from typing import Iterator, Sequence

import torch

from spherehead.config import NUM_PARSING_CLASSES
from spherehead.networks.layers import ENV_REFERENCE_DEMOD, ENV_REFERENCE_FC
from spherehead.networks.precision import set_mixed_precision
from spherehead.ops import conv_autograd
from spherehead.train.backend import BackendFlags, describe_current
from spherehead.train.config import TrainingConfig, default_config
from spherehead.train.distributed import DistInfo
from spherehead.train.grad_sync import GradientSync
from spherehead.train.losses import GANLoss
from spherehead.train.loop import lazy_adam, optimizer_step
from spherehead.train.setup import build_networks


# The switchable formulations of this round (issue 22), each a SPHEREHEAD_NO_* variable.
SWITCHES = {'conv-autograd': conv_autograd.ENV_DISABLE, 'fast-demod': ENV_REFERENCE_DEMOD, 'fast-fc': ENV_REFERENCE_FC}
# variant -> the formulations it turns off ('all': every one on; 'none': the code before them).
VARIANTS = {'all': (), 'no-conv-autograd': ('conv-autograd',), 'no-fast-demod': ('fast-demod',),
            'no-fast-fc': ('fast-fc',), 'none': tuple(SWITCHES)}


@dataclasses.dataclass(frozen=True)
class StepSetting:
    """variant: which of `SWITCHES` are off (`VARIANTS`); flags: cuDNN autotuning and TF32."""
    variant: str = 'all'
    flags: BackendFlags = BackendFlags()

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f'variant must be one of {", ".join(VARIANTS)}, got {self.variant!r}')

    def describe_variant(self) -> str:
        off = VARIANTS[self.variant]
        return 'all of ' + ', '.join(SWITCHES) if not off else 'without ' + ', '.join(off)

    @contextmanager
    def applied(self) -> Iterator[str]:
        """The setting in effect for a block (each switch of SWITCHES set to '1' or '0', restored
        afterwards); yields its description with the flags as actually set."""
        old = {env: os.environ.get(env) for env in SWITCHES.values()}
        for name, env in SWITCHES.items():
            os.environ[env] = '1' if name in VARIANTS[self.variant] else '0'
        try:
            with self.flags.applied():
                yield f'{self.describe_variant()}; {describe_current()}'
        finally:
            for env, value in old.items():
                if value is None:
                    os.environ.pop(env, None)
                else:
                    os.environ[env] = value


@dataclasses.dataclass
class StepTiming:
    config: str
    batch: int
    neural_res: int
    precision: str
    ms: dict[str, float]              # median ms per pass: g_main, g_reg, d_main, d_r1
    ms_per_iter: float                # amortised over the lazy intervals
    peak_mib: float                   # peak GPU memory (0 on CPU)
    grad_sync: str = 'overlap'        # gradient exchange mode (BENCH_GRAD_SYNCS)
    syncs: dict[str, int] | None = None   # synchronising CUDA calls per pass (CUDA sync debug mode); None on CPU
    setting: str = ''                 # StepSetting in words (formulations, cuDNN and TF32 flags)
    iqr: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)  # quartiles 1 and 3, ms

    @property
    def images_per_s(self) -> float:
        return self.batch / self.ms_per_iter * 1000

    @property
    def sec_per_kimg(self) -> float:
        return self.ms_per_iter / self.batch * 1000 / 1000

    def lines(self, with_setting: bool = True) -> list[str]:
        """The timing in words; with_setting=False leaves the setting out (a block header that names it)."""
        passes = '  '.join(f'{k} {v:.1f} ms' + (f' (IQR {self.iqr[k][0]:.1f}-{self.iqr[k][1]:.1f})' if k in self.iqr
                                                  else '') for k, v in self.ms.items())
        mem = f'{self.peak_mib:.0f} MiB' if self.peak_mib else '-'
        config = (f'config {self.config}  batch {self.batch}  neural {self.neural_res}  precision {self.precision}  '
                  f'grad-sync {self.grad_sync}')
        lines = [config + (f'  ({self.setting})' if self.setting and with_setting else ''),
                 f'per pass (forward + backward + gradient exchange + Adam): {passes}',
                 f'iteration (regularisers amortised): {self.ms_per_iter:.1f} ms  {self.images_per_s:.1f} img/s  '
                 f'{self.sec_per_kimg:.1f} s/kimg  peak memory {mem}']
        if self.syncs is not None:
            lines.append('host synchronisations per pass (torch.cuda.set_sync_debug_mode): '
                         + '  '.join(f'{k} {v}' for k, v in self.syncs.items()))
        return lines


# Gradient exchange modes a benchmark can time: training's two, plus 'overlap+hooks', the overlap
# path with the per-parameter hooks and bucket bookkeeping it runs with several ranks (nothing is
# exchanged on one rank): what those cost the host.
BENCH_GRAD_SYNCS = ('flat', 'overlap', 'overlap+hooks')


def random_batch(cfg: TrainingConfig, n: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """A real-looking batch: uint8 images, masks and parsing ids, frontal-ish camera labels."""
    from spherehead.camera import lookat
    g = torch.Generator().manual_seed(seed)
    r = cfg.generator.img_resolution
    labels = torch.cat([lookat(float(y), 0) for y in torch.linspace(-60, 60, n)])
    return {'image': torch.randint(0, 256, (n, 3, r, r), generator=g, dtype=torch.uint8).to(device),
            'mask': torch.randint(0, 256, (n, 1, r, r), generator=g, dtype=torch.uint8).to(device),
            'parsing': torch.randint(0, NUM_PARSING_CLASSES, (n, 1, r, r), generator=g, dtype=torch.uint8).to(device),
            'label': labels.to(device)}


def _timer(device: torch.device):
    if device.type == 'cuda':
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        return lambda: (end.record(), end.synchronize(), start.elapsed_time(end))[-1]
    t0 = time.perf_counter()
    return lambda: (time.perf_counter() - t0) * 1000


def train_passes(preset_name: str, batch: int, device: torch.device, neural_res: int | None = None,
                 precision: str = 'fp32', grad_sync: str = 'overlap',
                 capturable: bool = False) -> tuple[TrainingConfig, int, dict]:
    """(config, neural resolution, {pass name: callable running it once}) on random inputs.

    Passes: g_main, g_reg (density regulariser), d_main (with ViCo), d_r1; each callable runs
    the forward, the backward, the gradient exchange (``grad_sync``, one of BENCH_GRAD_SYNCS)
    and the Adam step (profilers and benchmarks call them). capturable: Adam may be captured in
    a CUDA graph (docs/bench/graph_passes.py)."""
    if grad_sync not in BENCH_GRAD_SYNCS:
        raise ValueError(f"grad_sync must be one of {', '.join(BENCH_GRAD_SYNCS)}, got {grad_sync!r}")
    cfg = default_config(preset_name)
    if neural_res is not None:
        cfg = dataclasses.replace(cfg, neural_rendering_resolution_initial=neural_res)
    res = cfg.neural_rendering_resolution_initial
    nets = build_networks(cfg, 0)
    G, D = nets.G.to(device).train().requires_grad_(False), nets.D.to(device).train().requires_grad_(False)
    set_mixed_precision(G, precision == 'mixed')
    set_mixed_precision(D, precision == 'mixed')
    loss = GANLoss(G, D, cfg.loss, autocast=precision == 'bf16' and device.type == 'cuda')
    l = cfg.loss   # the optimisers the trainer builds (lazy-regularisation adjustment, fused on CUDA)
    opt_G = lazy_adam(G.parameters(), 1e-6, cfg.betas, cfg.eps, l.density_reg_interval if l.density_reg > 0 else None,
                      capturable=capturable)
    opt_D = lazy_adam(D.parameters(), 1e-6, cfg.betas, cfg.eps, l.r1_interval, capturable=capturable)
    info = DistInfo(device=device)
    mode, hooks = grad_sync.split('+')[0], grad_sync.endswith('+hooks')
    sync_G = GradientSync(G, info, mode, cfg.grad_bucket_mib, hooks=hooks)
    sync_D = GradientSync(D, info, mode, cfg.grad_bucket_mib, hooks=hooks)
    data = random_batch(cfg, batch, device)
    c = data['label']
    z = lambda: torch.randn(batch, G.z_dim, device=device)

    def run(net, opt, sync, fn, key):
        net.requires_grad_(True)
        optimizer_step(opt, sync, fn, key)
        net.requires_grad_(False)

    passes = {
        'g_main': lambda: run(G, opt_G, sync_G, lambda: loss.g_main(z(), c, 'fused', res, 0.0, 0.7), 'g_main'),
        'g_reg': lambda: run(G, opt_G, sync_G, lambda: loss.g_density_reg(z(), c, 'fused', 0.7, gain=4), 'g_reg'),
        'd_main': lambda: run(D, opt_D, sync_D, lambda: loss.d_main(loss.real_inputs(data, res), c, z(), c, 'fused',
                                                                     res, 0.0, 0.7, vico_weight=1.0), 'd_main'),
        'd_r1': lambda: run(D, opt_D, sync_D, lambda: loss.d_r1(loss.real_inputs(data, res), c, 0.0, gain=16), 'd_r1'),
    }
    return cfg, res, passes


def count_syncs(fn, device: torch.device) -> int | None:
    """How many synchronising CUDA calls (a host waiting for the GPU: .item(), blocking copies, ...)
    one call of fn() makes, by torch.cuda.set_sync_debug_mode; None off CUDA."""
    if device.type != 'cuda':
        return None
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        torch.cuda.set_sync_debug_mode('warn')
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode('default')
    return sum('synchroniz' in str(w.message) for w in caught)


def quartiles(times: Sequence[float]) -> tuple[float, float]:
    """(first, third) quartile of the times (the one time twice when there is one)."""
    if len(times) < 2:
        return float(times[0]), float(times[0])
    q = statistics.quantiles(times, n=4, method='inclusive')
    return q[0], q[2]


def bench_train_step(preset_name: str, batch: int, device: torch.device, neural_res: int | None = None,
                     precision: str = 'fp32', warmup: int = 3, repeat: int = 10,
                     grad_syncs: Sequence[str] = ('overlap',),
                     settings: Sequence[StepSetting] = (StepSetting(),)) -> list[StepTiming]:
    """One StepTiming per setting and gradient-exchange mode (setting after setting, the modes of
    each in the order given), all on the same inputs, timed interleaved (see the module docstring).

    Each exchange mode has its own copy of the networks, built once and used under every setting.
    With several modes every copy stays in memory, so each peak includes the others'. With
    cudnn.benchmark the warm-ups include cuDNN's autotuning of every shape."""
    sets = {mode: train_passes(preset_name, batch, device, neural_res, precision, grad_sync=mode)
            for mode in dict.fromkeys(grad_syncs)}
    cfg, res, first = next(iter(sets.values()))
    l = cfg.loss
    runs = [(si, mode) for si in range(len(settings)) for mode in sets]
    times = {run: {name: [] for name in first} for run in runs}
    peak = {run: 0.0 for run in runs}
    syncs: dict[tuple[int, str], dict[str, int]] = {run: {} for run in runs}
    described = [''] * len(settings)

    def under(si: int, body) -> None:
        with settings[si].applied() as words:
            described[si] = words
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            for mode, (_, _, passes) in sets.items():
                body((si, mode), passes)

    def time_once(run, passes, name):
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        stop = _timer(device)
        passes[name]()
        times[run][name].append(stop())
        if device.type == 'cuda':
            peak[run] = max(peak[run], torch.cuda.max_memory_allocated(device) / 2 ** 20)

    def warm_up(run, passes, name):
        for _ in range(warmup):
            passes[name]()

    def count(run, passes, name):
        syncs[run][name] = count_syncs(passes[name], device)

    for name in first:
        for step, times_each in ((warm_up, 1), (time_once, repeat)) + (((count, 1),) if device.type == 'cuda' else ()):
            for _ in range(times_each):
                for si in range(len(settings)):
                    under(si, lambda run, passes: step(run, passes, name))
    out = []
    for run in runs:
        m = {name: statistics.median(t) for name, t in times[run].items()}
        per_iter = m['g_main'] + m['d_main'] + m['g_reg'] / l.density_reg_interval + m['d_r1'] / l.r1_interval
        out.append(StepTiming(preset_name, batch, res, precision, m, per_iter, peak[run], run[1],
                              syncs[run] if device.type == 'cuda' else None, described[run[0]],
                              {name: quartiles(t) for name, t in times[run].items()}))
    return out

"""Timing of one training iteration, split into its passes, on random inputs (no dataset needed).

One iteration = G main pass + D main pass, plus the lazy regularisers amortised: the density
regulariser every ``density_reg_interval`` G steps and R1 every ``r1_interval`` D steps.
Each pass is timed with its backward and its Adam step (CUDA events on a GPU).

Besides precision and kernels, a timing can vary its `StepSetting`: which formulations of this
round run (R1's convolution autograd, the demodulation and dense-layer formulas; each has a
switch) and the backend flags (cuDNN autotuning, TF32). One set of networks serves every setting
of a precision (settings change no shapes).
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import time
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
    setting: str = ''                 # StepSetting in words (formulations, cuDNN and TF32 flags)

    @property
    def images_per_s(self) -> float:
        return self.batch / self.ms_per_iter * 1000

    @property
    def sec_per_kimg(self) -> float:
        return self.ms_per_iter / self.batch * 1000 / 1000

    def lines(self) -> list[str]:
        passes = '  '.join(f'{k} {v:.1f} ms' for k, v in self.ms.items())
        mem = f'{self.peak_mib:.0f} MiB' if self.peak_mib else '-'
        return [f'config {self.config}  batch {self.batch}  neural {self.neural_res}  precision {self.precision}'
                + (f'  ({self.setting})' if self.setting else ''),
                f'per pass (forward + backward + Adam): {passes}',
                f'iteration (regularisers amortised): {self.ms_per_iter:.1f} ms  {self.images_per_s:.1f} img/s  '
                f'{self.sec_per_kimg:.1f} s/kimg  peak memory {mem}']


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
                 precision: str = 'fp32') -> tuple[TrainingConfig, int, dict]:
    """(config, neural resolution, {pass name: callable running it once}) on random inputs.

    Passes: g_main, g_reg (density regulariser), d_main (with ViCo), d_r1; each callable runs
    the forward, the backward and the Adam step (profilers and benchmarks call them)."""
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
    opt_G = lazy_adam(G.parameters(), 1e-6, cfg.betas, cfg.eps, l.density_reg_interval if l.density_reg > 0 else None)
    opt_D = lazy_adam(D.parameters(), 1e-6, cfg.betas, cfg.eps, l.r1_interval)
    data = random_batch(cfg, batch, device)
    c = data['label']
    z = lambda: torch.randn(batch, G.z_dim, device=device)

    def run(net, opt, fn):
        net.requires_grad_(True)
        optimizer_step(net, opt, DistInfo(device=device), fn)
        net.requires_grad_(False)

    passes = {
        'g_main': lambda: run(G, opt_G, lambda: loss.g_main(z(), c, 'fused', res, 0.0, 0.7)),
        'g_reg': lambda: run(G, opt_G, lambda: loss.g_density_reg(z(), c, 'fused', 0.7, gain=4)),
        'd_main': lambda: run(D, opt_D, lambda: loss.d_main(loss.real_inputs(data, res), c, z(), c, 'fused', res,
                                                             0.0, 0.7, vico_weight=1.0)),
        'd_r1': lambda: run(D, opt_D, lambda: loss.d_r1(loss.real_inputs(data, res), c, 0.0, gain=16)),
    }
    return cfg, res, passes


def bench_train_step(preset_name: str, batch: int, device: torch.device, neural_res: int | None = None,
                     precision: str = 'fp32', warmup: int = 3, repeat: int = 10,
                     settings: Sequence[StepSetting] = (StepSetting(),)) -> list[StepTiming]:
    """One `StepTiming` per setting, in order, all on the same networks and inputs.

    Peak memory is reset before each setting; with cudnn.benchmark the warm-ups include cuDNN's
    autotuning of every shape."""
    cfg, res, passes = train_passes(preset_name, batch, device, neural_res, precision)
    l = cfg.loss
    timings = []
    for setting in settings:
        with setting.applied() as described:
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            ms: dict[str, float] = {}
            for name, fn in passes.items():
                for _ in range(warmup):
                    fn()
                times = []
                for _ in range(repeat):
                    stop = _timer(device)
                    fn()
                    times.append(stop())
                ms[name] = statistics.median(times)
            per_iter = ms['g_main'] + ms['d_main'] + ms['g_reg'] / l.density_reg_interval + ms['d_r1'] / l.r1_interval
            peak = torch.cuda.max_memory_allocated(device) / 2 ** 20 if device.type == 'cuda' else 0.0
        timings.append(StepTiming(preset_name, batch, res, precision, ms, per_iter, peak, described))
    return timings

"""The training loop: one iteration = G step, (lazy) G regulariser, D step, (lazy) R1, EMA.

Randomness is a pure function of (seed, rank, step): each iteration reseeds the torch and
numpy generators from those numbers, and the data order is a seeded permutation read from a
saved position. So a resumed run takes exactly the steps an uninterrupted one would have,
and no RNG state has to be stored. The sphere drawn for an iteration depends on (seed, step)
only, so all ranks render the same sphere.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from spherehead.checkpoint import save_generator
from spherehead.networks.discriminator import DualDiscriminator
from spherehead.networks.generator import Generator
from spherehead.networks.precision import set_mixed_precision
from spherehead.train import distributed as dist_utils
from spherehead.train.backend import BackendFlags, describe_current
from spherehead.train.config import TrainingConfig
from spherehead.train.data import RealStream, open_datasets
from spherehead.train.distributed import DistInfo
from spherehead.train.ema import ema_beta, update_ema
from spherehead.train.grad_sync import GradientSync
from spherehead.train.losses import GANLoss
from spherehead.train.phases import SPHERES, PhaseSchedule
from spherehead.train.runlog import RunLog, StatsCollector, gpu_memory_gib
from spherehead.train.snapshot import (atomic_torch_save, grid_latents, prune_states, render_grid, save_png,
                                       snapshot_name, snapshot_tag, state_name)

STATE_FORMAT = 'spherehead-training-state'
STOP_CHECK_STEPS = 4   # steps between the ranks' votes on a stop signal (several ranks only; read 4 steps later)

LOG_KEYS = ['G/loss', 'G/camera_offset_reg', 'G/density_reg', 'D/loss', 'D/vico', 'D/r1_penalty',
            'D/r1_penalty_seg', 'scores/real', 'scores/fake', 'scores/fake_d', 'scores/real_shuffled']


@dataclass
class Networks:
    """The networks a run trains, and where they came from."""
    G: Generator
    D: DualDiscriminator
    G_ema: Generator
    origin: str = 'random initialisation'     # how the run started (kept in its training states; '' = not recorded)
    resumed_from: str = ''                    # the training state this process continues, if any


@dataclass
class Progress:
    """Counters of a run (saved in the training state)."""
    nimg: int = 0
    step: int = 0
    sphere_counts: dict = field(default_factory=lambda: {s: 0 for s in SPHERES})


def seed_step(seed: int, rank: int, step: int) -> np.random.RandomState:
    """Reseed torch (CPU and CUDA) for this (seed, rank, step); returns a numpy RNG of the same key."""
    rng = np.random.RandomState([seed % 2 ** 31, rank, step % 2 ** 31])
    torch.manual_seed(int(rng.randint(2 ** 31)))
    return rng


def lazy_adam(params, lr: float, betas, eps: float, reg_interval: int | None,
              capturable: bool = False) -> torch.optim.Adam:
    """Adam with the lazy-regularisation adjustment (lr and betas scaled by interval / (interval + 1)).
    On CUDA it is PyTorch's fused Adam (one kernel for all parameters; the same update rule).
    capturable: its step may be captured in a CUDA graph (its step counts live on the GPU)."""
    params = list(params)
    ratio = reg_interval / (reg_interval + 1) if reg_interval else 1.0
    fused = bool(params) and all(p.is_cuda for p in params)
    return torch.optim.Adam(params, lr=lr * ratio, betas=tuple(b ** ratio for b in betas), eps=eps,
                            fused=fused or None, capturable=capturable)


def optimizer_step(opt: torch.optim.Optimizer, sync: GradientSync, run_pass, key: str | None = None) -> dict:
    """One optimiser step: clear the gradients, run_pass() (forward + backward, returns its stats),
    average the gradients over ranks (sync: during the backward, or after it in 'flat' mode), step.
    key names the pass for the exchange (passes that use different parameters need different keys).
    Returns the pass's stats."""
    sync.begin(key)
    stats = run_pass()
    sync.finish()
    opt.step()
    return stats


class Trainer:
    """Runs one training job in ``run_dir`` (rank 0 writes; every rank trains)."""

    def __init__(self, cfg: TrainingConfig, info: DistInfo, run_dir: Path, nets: Networks,
                 state: dict | None = None):
        cfg = cfg.for_world(info.world_size)     # with batch_gpu: the global batch on this many ranks
        self.cfg, self.info, self.run_dir = cfg, info, Path(run_dir)
        dev = info.device
        if dev.type == 'cuda':
            BackendFlags(cudnn_benchmark=cfg.cudnn_benchmark, tf32=cfg.tf32).apply()
        self.G = nets.G.to(dev).train().requires_grad_(False)
        self.D = nets.D.to(dev).train().requires_grad_(False)
        self.G_ema = nets.G_ema.to(dev).eval().requires_grad_(False)
        self.origin, self.resumed_from = nets.origin, nets.resumed_from
        self.batch_gpu = cfg.batch // info.world_size
        self.schedule = PhaseSchedule(cfg)
        # float16 parts of G and D (not G_ema: snapshots, grids and metrics render in float32)
        mixed = cfg.precision == 'mixed' and dev.type == 'cuda'
        self.fp16_parts = ([f'G.{n}' for n in set_mixed_precision(self.G, mixed)]
                           + [f'D.{n}' for n in set_mixed_precision(self.D, mixed)]) if mixed else []
        self.loss = GANLoss(self.G, self.D, cfg.loss, autocast=cfg.precision == 'bf16' and dev.type == 'cuda')
        l = cfg.loss
        self.g_reg_interval = l.density_reg_interval if l.density_reg > 0 else None
        self.d_reg_interval = l.r1_interval if (l.r1_gamma > 0 or l.r1_gamma_seg > 0) else None
        self.opt_G = lazy_adam(self.G.parameters(), cfg.lr_g, cfg.betas, cfg.eps, self.g_reg_interval)
        self.opt_D = lazy_adam(self.D.parameters(), cfg.lr_d, cfg.betas, cfg.eps, self.d_reg_interval)
        # Gradient exchange over the ranks, bucketed and overlapped with the backward ('overlap'), or flat.
        self.sync_G = GradientSync(self.G, info, cfg.grad_sync, cfg.grad_bucket_mib)
        self.sync_D = GradientSync(self.D, info, cfg.grad_sync, cfg.grad_bucket_mib)
        self.progress = Progress()
        self.missing_optimizers: list[str] = []   # set by a resume state without Adam moments
        if state is not None:
            self._load_state(state)
        dist_utils.broadcast_module(self.G, info)
        dist_utils.broadcast_module(self.D, info)
        dist_utils.broadcast_module(self.G_ema, info)
        self.full_data, self.front_data = open_datasets(cfg.data, cfg.phases.front_yaw_deg)
        self._streams: dict[bool, RealStream] = {}
        self.log = RunLog(self.run_dir, info)
        self.stats = StatsCollector()
        self.grid_z = grid_latents(self.G, cfg.grid_seeds)
        self.grid_spheres = SPHERES if cfg.generator.representation == 'dual_sphere' else ('fused',)
        self._stop = False

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        p = self.progress
        return {'format': STATE_FORMAT, 'version': 1, 'config': self.cfg.to_json(), 'origin': self.origin,
                'nimg': p.nimg, 'step': p.step, 'sphere_counts': json.dumps(p.sphere_counts),
                'G': self.G.state_dict(), 'D': self.D.state_dict(), 'G_ema': self.G_ema.state_dict(),
                'opt_G': self.opt_G.state_dict(), 'opt_D': self.opt_D.state_dict()}

    def _load_state(self, state: dict) -> None:
        self.G.load_state_dict(state['G'])
        self.D.load_state_dict(state['D'])
        self.G_ema.load_state_dict(state['G_ema'])
        # A state may come without optimiser moments (a slimmed copy); Adam then starts afresh.
        self.missing_optimizers = [k for k in ('opt_G', 'opt_D') if k not in state]
        for key, opt in (('opt_G', self.opt_G), ('opt_D', self.opt_D)):
            if key in state:
                opt.load_state_dict(state[key])
        self.progress = Progress(nimg=int(state['nimg']), step=int(state['step']),
                                 sphere_counts=json.loads(state['sphere_counts']))

    # ------------------------------------------------------------------ data
    def _steps_in_phase1(self, step: int) -> int:
        """How many of the first ``step`` iterations read the phase-I (near-front) stream."""
        return min(step, math.ceil(self.schedule.end1 / self.cfg.batch))

    def stream(self, front_only: bool) -> RealStream:
        if not front_only:
            self._streams.pop(True, None)   # phase I is over for good: let its loader workers go
        if front_only not in self._streams:
            # A new stream starts where this run's earlier steps left that data (exact resume).
            done1 = self._steps_in_phase1(self.progress.step)
            steps = done1 if front_only else self.progress.step - done1
            data = self.front_data if front_only else self.full_data
            self._streams[front_only] = RealStream(data, self.batch_gpu, self.info, self.cfg.seed + int(front_only),
                                                   self.cfg.workers, consumed=steps * self.batch_gpu)
        return self._streams[front_only]

    # ------------------------------------------------------------------ one iteration
    def step(self) -> None:
        cfg, info, p, sched, loss = self.cfg, self.info, self.progress, self.schedule, self.loss
        G, D = self.G, self.D
        rng = seed_step(cfg.seed, info.rank, p.step)
        sphere_rng = np.random.RandomState([cfg.seed % 2 ** 31, p.step % 2 ** 31, 1])
        phase = sched.at(p.nimg)
        sphere = sched.draw_sphere(sphere_rng, phase)
        res = sched.neural_rendering_resolution(p.nimg)
        blur = sched.blur_sigma(p.nimg)
        swap = sched.gpc_swap_prob(p.nimg)
        G.renderer.density_noise = sched.density_noise(p.nimg)
        stream = self.stream(phase.front_only)
        batch = stream.next()
        real, c_real = loss.real_inputs(batch, res), batch['label']
        n, z_dim, dev = self.batch_gpu, G.z_dim, info.device
        new_z = lambda: torch.randn(n, z_dim, device=dev)

        # G: fool D; every g_reg_interval steps the density regulariser.
        G.requires_grad_(True)
        labels = lambda: stream.random_labels(n, rng)
        self.stats.add(optimizer_step(self.opt_G, self.sync_G, lambda: loss.g_main(new_z(), labels(), sphere, res,
                                                                                   blur, swap), f'g_main/{sphere}'))
        if self.g_reg_interval and p.step % self.g_reg_interval == 0:
            self.stats.add(optimizer_step(self.opt_G, self.sync_G, lambda: loss.g_density_reg(
                new_z(), labels(), sphere, swap, gain=self.g_reg_interval), f'g_reg/{sphere}'))
        G.requires_grad_(False)

        # D: reals up, fakes (and reals under shuffled cameras, with ViCo) down; lazy R1.
        D.requires_grad_(True)
        vico = cfg.phases.vico_weight if phase.vico else 0.0
        self.stats.add(optimizer_step(self.opt_D, self.sync_D, lambda: loss.d_main(
            real, c_real, new_z(), labels(), sphere, res, blur, swap, vico), 'd_main'))
        if self.d_reg_interval and p.step % self.d_reg_interval == 0:
            self.stats.add(optimizer_step(self.opt_D, self.sync_D, lambda: loss.d_r1(real, c_real, blur,
                                                                                     gain=self.d_reg_interval), 'd_r1'))
        D.requires_grad_(False)

        p.nimg += cfg.batch
        p.step += 1
        p.sphere_counts[sphere] += 1
        update_ema(self.G_ema, G, ema_beta(cfg.batch, p.nimg, cfg.ema_kimg_resolved, cfg.ema_rampup))

    # ------------------------------------------------------------------ outputs
    def snapshot(self) -> None:
        """Network snapshot, resume state and sample grid for the current kimg (rank 0 writes)."""
        tag = snapshot_tag(self.progress.nimg) if self.info.is_main else ''
        if self.info.is_main:
            G_out = copy.deepcopy(self.G_ema).cpu()
            G_out.provenance = (f'{self.run_dir.name} at {self.progress.nimg / 1000:.1f} kimg'
                                + (f' ({self.origin})' if self.origin else ''))
            save_generator(G_out, self.run_dir / snapshot_name(tag))
            atomic_torch_save(self.state_dict(), self.run_dir / state_name(tag))
            prune_states(self.run_dir, self.cfg.keep_states)
            self.save_grid(f'fakes-{tag}.png')
            self.log.line(f'snapshot: {snapshot_name(tag)}, {state_name(tag)}, fakes-{tag}.png')
        if self.cfg.metrics:
            self.evaluate(tag)
        dist_utils.barrier(self.info)

    def save_grid(self, name: str) -> None:
        res = self.schedule.neural_rendering_resolution(self.progress.nimg)
        grid = render_grid(self.G_ema, self.grid_z, self.grid_spheres, res, self.info.device)
        save_png(grid, self.run_dir / name)

    def evaluate(self, tag: str) -> None:
        from spherehead.metrics import compute_metrics
        if not self.info.is_main:
            return
        results = compute_metrics(self.G_ema, self.cfg.data, list(self.cfg.metrics), num=self.cfg.metrics_num,
                                  device=self.info.device, inception=self.cfg.inception, progress=False)
        with open(self.run_dir / 'metrics.jsonl', 'a') as f:
            f.write(json.dumps({'kimg': self.progress.nimg / 1000, 'snapshot': snapshot_name(tag),
                                'results': results}) + '\n')
        self.log.record(self.progress.nimg / 1000, {f'Metrics/{k}': v for k, v in results.items()})
        self.log.line('metrics: ' + '  '.join(f'{k} {v:.4g}' for k, v in results.items()))

    def tick_line(self, values: dict, sec_per_kimg: float, mem: float) -> str:
        p = self.progress
        last = max(p.nimg - self.cfg.batch, 0)    # where the tick's last step started: its phase, blur, res
        ph = self.schedule.at(last)
        probs = '/'.join(f'{v:.2f}' for v in ph.sphere_probs)
        counts = '/'.join(str(p.sphere_counts[s]) for s in SPHERES)
        fmt = lambda k: '-' if values.get(k) != values.get(k) else f'{values[k]:.3f}'   # NaN -> '-'
        return (f'kimg {p.nimg / 1000:8.1f}  phase {ph.phase}  A/B/fused p {probs} drawn {counts}  '
                f'vico {"on" if ph.vico else "off"}  sec/kimg {sec_per_kimg:6.2f}  gpumem {mem:5.2f} GiB  '
                f'G {fmt("G/loss")}  D {fmt("D/loss")}  vico_loss {fmt("D/vico")}  r1 {fmt("D/r1_penalty")}  '
                f'density {fmt("G/density_reg")}  blur {self.schedule.blur_sigma(last):.2f}  '
                f'res {self.schedule.neural_rendering_resolution(last)}{self._sync_note(values)}')

    def _sync_note(self, values: dict) -> str:
        """'  ranks K weights equal' (or 'DIFFER by x') on a multi-rank tick, else ''."""
        spread = values.get('Sync/param_spread')
        if spread is None:
            return ''
        return f'  ranks {self.info.world_size} weights ' + ('equal' if spread == 0 else f'DIFFER by {spread:.3g}')

    # ------------------------------------------------------------------ main loop
    def _request_stop(self, signum, frame) -> None:
        if self.info.is_main:
            # At once, unbuffered (os.write is safe inside a signal handler; print is not): the step
            # and the snapshot can take a minute on a CPU.
            within = f' (the ranks agree on it within {STOP_CHECK_STEPS} steps)' if self.info.enabled else ''
            what = 'still stopping' if self._stop else 'stopping'
            msg = (f'\n{signal.Signals(signum).name}: {what}: finishing the step and writing a snapshot{within}; '
                   f'then --resume {self.run_dir} continues\n')
            with contextlib.suppress(OSError, ValueError, AttributeError):   # a lost message must not stop the snapshot
                os.write(sys.stderr.fileno(), msg.encode())
        self._stop = True

    def pace_line(self, first_step_s: float) -> str:
        """When the next log lines and the snapshots come, at the pace of this run's first step (which
        includes starting the data workers, so the estimate errs long)."""
        cfg = self.cfg
        steps = lambda kimg: max(math.ceil(kimg * 1000 / cfg.batch), 1)   # noqa: E731
        dur = lambda s: f'{s:.0f} s' if s < 90 else f'{s / 60:.0f} min' if s < 5400 else f'{s / 3600:.1f} h'  # noqa: E731
        return (f'first step: {first_step_s:.1f} s for {cfg.batch} images; at that pace a log line every '
                f'{cfg.tick_kimg:g} kimg ({steps(cfg.tick_kimg)} steps) comes about every '
                f'{dur(steps(cfg.tick_kimg) * first_step_s)}, a snapshot every {cfg.snap_kimg:g} kimg '
                f'({steps(cfg.snap_kimg)} steps) about every {dur(steps(cfg.snap_kimg) * first_step_s)} '
                f'(--tick, --snap change them)')

    def run(self) -> None:
        cfg, p, info = self.cfg, self.progress, self.info
        total = int(round(cfg.kimg * 1000))
        for s in self.full_data.summary():
            self.log.line(s)
        self.log.line(f'phase I near-front data: {len(self.front_data)} items (|yaw| < {cfg.phases.front_yaw_deg} deg); '
                      f'phases: I to {cfg.phase1_end_kimg:g} kimg, II to {cfg.phase2_end_kimg:g}, III to {cfg.kimg:g}; '
                      f'ViCo from {cfg.vico_start_kimg:g} kimg (weight {cfg.phases.vico_weight:g})')
        origin = self.origin
        if self.resumed_from:
            origin = f'resumed from {self.resumed_from}' + (f'; the run started from {origin}' if origin else '')
        self.log.line(f'networks: {origin}; {info.world_size} rank(s) x batch {self.batch_gpu} on '
                      f'{info.device}; starting at {p.nimg / 1000:g} kimg; a log line after the first step, then '
                      f'every {cfg.tick_kimg:g} kimg, a snapshot every {cfg.snap_kimg:g} kimg')
        if cfg.precision == 'mixed':
            if self.fp16_parts:
                self.log.line(f'mixed precision: float16 in {", ".join(self.fp16_parts)}')
            elif self.info.device.type != 'cuda':
                self.log.line(f'mixed precision: all float32 on {self.info.device.type} (float16 runs on CUDA only)')
            else:
                self.log.line('mixed precision: all float32 (discriminator.num_fp16_res and generator.sr_num_fp16_res are 0)')
        if info.device.type == 'cuda':
            self.log.line(f'CUDA flags: {describe_current()}')
        if self.missing_optimizers:
            self.log.line(f'resume: no {" / ".join(self.missing_optimizers)} moments in the state; those Adam optimisers start afresh')
        if p.nimg == 0 and info.is_main:
            self.save_grid('fakes-init.png')
        handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM):   # stop at the next step boundary, state saved
            handlers[sig] = signal.signal(sig, self._request_stop)
        bar = None
        if info.is_main:
            from tqdm import tqdm
            bar = tqdm(total=total, initial=min(p.nimg, total), unit='img', unit_scale=True, disable=None,
                       dynamic_ncols=True, desc='training')
        tick_start_nimg, tick_start_time = p.nimg, time.time()
        last_snap = p.nimg
        stop_vote = dist_utils.StopVote(info, STOP_CHECK_STEPS)
        first_step = True      # this process's first step gets a log line at once (on a CPU a tick takes minutes)
        try:
            while p.nimg < total:
                self.step()
                if bar is not None:
                    bar.update(cfg.batch)
                done = p.nimg >= total
                # With several ranks the stop request is voted on every STOP_CHECK_STEPS steps and the
                # vote read that many steps later, without a host sync (a signal stops within 2x that).
                stop = stop_vote.poll(self._stop, p.step)
                if done or stop or first_step or p.nimg >= tick_start_nimg + cfg.tick_kimg * 1000:
                    now = time.time()
                    values = self.stats.reduce(info, LOG_KEYS)
                    sec_per_kimg = (now - tick_start_time) / max(p.nimg - tick_start_nimg, 1) * 1000
                    mem = gpu_memory_gib(info.device)
                    if info.enabled:   # every rank must hold the same weights; the log shows it
                        values['Sync/param_spread'] = dist_utils.parameter_spread(
                            [self.G, self.D, self.G_ema], info)
                    values.update({'Timing/sec_per_kimg': sec_per_kimg, 'Resources/gpu_mem_gib': mem,
                                   'Progress/phase': self.schedule.at(max(p.nimg - cfg.batch, 0)).phase,
                                   'Progress/blur_sigma': self.schedule.blur_sigma(max(p.nimg - cfg.batch, 0))})
                    line = self.tick_line(values, sec_per_kimg, mem)
                    if bar is not None and not bar.disable:
                        bar.write(line)
                        self.log.text.write(line + '\n')
                    else:
                        self.log.line(line)
                    self.log.record(p.nimg / 1000, values)
                    if first_step and not (done or stop):     # when the next lines and the snapshots come
                        line = self.pace_line(now - tick_start_time)
                        if bar is not None and not bar.disable:
                            bar.write(line)
                            self.log.text.write(line + '\n')
                        else:
                            self.log.line(line)
                    tick_start_nimg, tick_start_time = p.nimg, time.time()
                first_step = False
                if done or stop or p.nimg >= last_snap + cfg.snap_kimg * 1000:
                    self.snapshot()
                    last_snap = p.nimg
                    tick_start_time = time.time()   # sec/kimg counts training, not snapshot writing
                if stop:
                    self.log.line(f'stopped by signal at {p.nimg / 1000:.1f} kimg; state saved; '
                                  f'continue with --resume {self.run_dir}')
                    break
            stop_vote.close()   # the ranks' last vote, still in flight
        finally:
            if bar is not None:
                bar.close()
            for sig, h in handlers.items():
                signal.signal(sig, h)
            self.log.close()

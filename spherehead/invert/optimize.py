"""The two optimisations of pivotal tuning: the pivot latent (``project_w``) and the generator's
weights around it (``tune_generator``), with the losses they share (``ImageLoss``).

Images are ``[1, 3, H, W]`` in [-1, 1] at the generator's output resolution; cameras are
``[1, 25]`` labels; latents ``ws`` are ``[1, num_ws, w_dim]``.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from spherehead.invert.config import InvertConfig, ProjectConfig, TuneConfig
from spherehead.invert.perceptual import PerceptualFeatures

STATS_SEED = 123            # the projectors draw their z samples for the mean w with this seed
STATS_CHUNK = 1000


@dataclass
class LatentStats:
    """The generator's latent statistics: mean w [1, 1, w_dim], w_std (RMS distance of a w from the
    mean), the mean of the z samples [1, z_dim] and the conditioning camera [1, 25] (front view)."""
    w_avg: torch.Tensor
    w_std: float
    z_mean: torch.Tensor
    c_cond: torch.Tensor


@torch.no_grad()
def latent_stats(G, samples: int, device) -> LatentStats:
    """Mean and spread of w over ``samples`` z (numpy RandomState(123), as the released projectors),
    mapped with the frontal camera as conditioning (as the family's tools do)."""
    import spherehead as sh
    z = torch.from_numpy(np.random.RandomState(STATS_SEED).randn(samples, G.z_dim)).float()
    c = sh.camera.lookat(0, 0, device=device)
    ws = torch.cat([G.mapping(z[i:i + STATS_CHUNK].to(device), c)[:, :1].double()
                    for i in range(0, samples, STATS_CHUNK)])                    # [S, 1, w_dim]
    w_avg = ws.mean(dim=0, keepdim=True)
    w_std = float(((ws - w_avg).square().sum() / samples).sqrt())
    return LatentStats(w_avg.float(), w_std, z.mean(dim=0, keepdim=True).to(device), c)


class ImageLoss:
    """l2_weight * MSE + lpips_weight * LPIPS against a fixed target (its features computed once)."""

    def __init__(self, target: torch.Tensor, perceptual: PerceptualFeatures | None, l2_weight: float,
                 lpips_weight: float):
        self.target, self.l2_weight = target, l2_weight
        self.perceptual = perceptual if lpips_weight > 0 else None
        self.lpips_weight = lpips_weight if self.perceptual is not None else 0.0
        self.target_features = None
        if self.perceptual is not None:
            with torch.no_grad():
                self.target_features = self.perceptual(target)

    def __call__(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """img [N, 3, H, W] -> (loss, mse, lpips) scalars (lpips 0 without a perceptual term)."""
        mse = (img - self.target).square().mean()
        lpips = img.new_zeros(())
        if self.perceptual is not None:
            lpips = self.perceptual.distance(self.perceptual(img), self.target_features).mean()
        return self.l2_weight * mse + self.lpips_weight * lpips, mse, lpips


def lr_at(step: int, steps: int, cfg: ProjectConfig) -> float:
    """The projectors' schedule: cosine ramp-down over the last lr_rampdown of the steps, linear
    ramp-up over the first lr_rampup."""
    t = step / max(steps, 1)
    ramp = min(1.0, (1.0 - t) / cfg.lr_rampdown) if cfg.lr_rampdown > 0 else 1.0
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    if cfg.lr_rampup > 0:
        ramp *= min(1.0, t / cfg.lr_rampup)
    return cfg.lr * ramp


def noise_buffers(G) -> list[torch.Tensor]:
    """The backbone's constant noise images ([R, R] each), the ones noise_mode='const' uses."""
    return [b for name, b in G.backbone.synthesis.named_buffers() if name.endswith('noise_const')]


def noise_regularizer(buffers: list[torch.Tensor]) -> torch.Tensor:
    """StyleGAN2's penalty on spatial autocorrelation of the noise images, at every scale down to 8 px."""
    total = buffers[0].new_zeros(())
    for buf in buffers:
        x = buf[None, None]
        while True:
            total = total + (x * torch.roll(x, shifts=1, dims=3)).mean().square()
            total = total + (x * torch.roll(x, shifts=1, dims=2)).mean().square()
            if x.shape[2] <= 8:
                break
            x = F.avg_pool2d(x, kernel_size=2)
    return total


@dataclass
class PhaseLog:
    """What a phase did: steps run, seconds, and the loss terms of every step (floats)."""
    steps: int = 0
    seconds: float = 0.0
    loss: list[float] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)
    lpips: list[float] = field(default_factory=list)
    locality: list[float] = field(default_factory=list)

    def summary(self) -> dict:
        last = lambda xs: round(xs[-1], 6) if xs else None
        return {'steps': self.steps, 'seconds': round(self.seconds, 3),
                'seconds_per_step': round(self.seconds / self.steps, 4) if self.steps else None,
                'final_loss': last(self.loss), 'final_mse': last(self.mse), 'final_lpips': last(self.lpips),
                'final_locality': last(self.locality)}


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


class _Recorder:
    """Collects the loss terms of each step on the device and copies them to the log at the end (a
    copy to the host every step would make the host wait for the GPU every step)."""

    def __init__(self, log: PhaseLog):
        self.log, self.rows = log, []

    def add(self, terms: list[torch.Tensor]) -> None:
        self.rows.append(torch.stack([t.detach().float() for t in terms]))

    def last(self) -> list[float]:
        return self.rows[-1].tolist()

    def finish(self) -> None:
        for vals in (torch.stack(self.rows).cpu().tolist() if self.rows else []):
            self.log.loss.append(vals[0])
            self.log.mse.append(vals[1])
            self.log.lpips.append(vals[2])
            if len(vals) > 3 and not math.isnan(vals[3]):
                self.log.locality.append(vals[3])
        self.rows = []


def project_w(G, target: torch.Tensor, c: torch.Tensor, cfg: InvertConfig, perceptual: PerceptualFeatures | None,
              stats: LatentStats, progress: bool = True, desc: str = 'w') -> tuple[torch.Tensor, PhaseLog]:
    """Phase 1: the latent whose render at camera c [1, 25] matches target [1, 3, H, W] ([-1, 1]).

    G stays frozen, except its constant noise images when ``optimize_noise`` (they are changed in
    place, so G then keeps the fitted noise). Returns ws [1, num_ws, w_dim] and the phase log.
    """
    from tqdm import tqdm
    p = cfg.project
    device = target.device
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    num_ws = G.num_ws
    start = stats.w_avg if p.space == 'w' else stats.w_avg.repeat(1, num_ws, 1)
    w_opt = start.clone().to(device).requires_grad_(True)               # [1, 1 or num_ws, w_dim]
    params = [w_opt]
    bufs = noise_buffers(G) if p.optimize_noise else []
    if bufs:
        with torch.no_grad():
            for b in bufs:
                b.copy_(torch.randn(b.shape, generator=gen, device=device))
                b.requires_grad_(True)
        params += bufs
    optimizer = torch.optim.Adam(params, betas=(0.9, 0.999), lr=p.lr)
    loss_fn = ImageLoss(target, perceptual, p.l2_weight, p.lpips_weight)
    log = PhaseLog()
    rec = _Recorder(log)
    was_training = G.training
    G.train()                 # same values; plain (not grouped) modulated convolutions: faster gradients
    _sync(device)
    t0 = time.perf_counter()
    try:
        bar = tqdm(range(p.steps), desc=desc, unit='step', disable=not progress, leave=False)
        for step in bar:
            t = step / max(p.steps, 1)
            for group in optimizer.param_groups:
                group['lr'] = lr_at(step, p.steps, p)
            noise_scale = stats.w_std * p.noise_factor * max(0.0, 1.0 - t / p.noise_ramp) ** 2 if p.noise_ramp > 0 else 0.0
            ws = w_opt + torch.randn(w_opt.shape, generator=gen, device=device) * noise_scale
            img = G.synthesis(ws.expand(-1, num_ws, -1), c, noise_mode='const', deterministic=cfg.deterministic)['image']
            loss, mse, lpips = loss_fn(img)
            if p.w_avg_weight > 0:
                loss = loss + p.w_avg_weight * (w_opt - stats.w_avg).square().mean()
            if bufs:
                loss = loss + p.noise_reg_weight * noise_regularizer(bufs)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if bufs:
                with torch.no_grad():          # keep each noise image zero-mean, unit-variance
                    for b in bufs:
                        b -= b.mean()
                        b *= b.square().mean().rsqrt()
            rec.add([loss, mse, lpips])
            log.steps += 1
            if progress and (step % 10 == 0 or step == p.steps - 1):
                vals = rec.last()
                bar.set_postfix(mse=f'{vals[1]:.4f}', lpips=f'{vals[2]:.3f}')
    finally:
        rec.finish()
        for b in bufs:
            b.requires_grad_(False)
        G.train(was_training)
    _sync(device)
    log.seconds = time.perf_counter() - t0
    return w_opt.detach().expand(-1, num_ws, -1).clone(), log


def morph_towards(w_pivot: torch.Tensor, w_other: torch.Tensor, distance: float) -> torch.Tensor:
    """PTI's locality point: from the pivot [1, L, C] towards w_other [N, L, C], ``distance`` away,
    measured as the RMS over layers of the per-layer Euclidean distance."""
    d = w_other - w_pivot
    norm = d.square().sum(dim=2).mean(dim=1).sqrt().clamp(min=1e-8)         # [N]
    return w_pivot + distance * d / norm.view(-1, 1, 1)


def tunable_parameters(G) -> list[torch.nn.Parameter]:
    """Every parameter that shapes a render from a given w: all but the mapping nets (w is fixed)."""
    skip = {id(p) for p in G.backbone.mapping.parameters()}
    if G.t_mapping is not None:
        skip |= {id(p) for p in G.t_mapping.parameters()}
    return [p for p in G.parameters() if id(p) not in skip]


def tune_generator(G, G_orig, target: torch.Tensor, c: torch.Tensor, w_pivot: torch.Tensor, cfg: InvertConfig,
                   perceptual: PerceptualFeatures | None, stats: LatentStats, progress: bool = True,
                   desc: str = 'tune') -> PhaseLog:
    """Phase 2: tune G's weights in place so that G(w_pivot) at camera c matches the target, keeping
    G's renders at latents ``locality_radius * w_std`` away from the pivot close to G_orig's
    (at the same camera). G_orig is not changed. Returns the phase log."""
    from tqdm import tqdm
    t_cfg: TuneConfig = cfg.tune
    device = target.device
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1)
    params = tunable_parameters(G)
    G.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.Adam(params, betas=(0.9, 0.999), lr=t_cfg.lr)
    loss_fn = ImageLoss(target, perceptual, t_cfg.l2_weight, t_cfg.lpips_weight)
    use_lpips_reg = perceptual is not None and t_cfg.locality_lpips_weight > 0
    w_pivot = w_pivot.detach()
    log = PhaseLog()
    rec = _Recorder(log)
    nan = torch.full((), float('nan'), device=device)
    G.train()
    _sync(device)
    t0 = time.perf_counter()
    try:
        bar = tqdm(range(t_cfg.steps), desc=desc, unit='step', disable=not progress, leave=False)
        for step in bar:
            img = G.synthesis(w_pivot, c, noise_mode='const', deterministic=cfg.deterministic)['image']
            loss, mse, lpips = loss_fn(img)
            reg = nan
            if t_cfg.locality_every > 0 and step % t_cfg.locality_every == 0:
                reg = _locality(G, G_orig, w_pivot, c, cfg, perceptual if use_lpips_reg else None, stats, gen)
                loss = loss + reg
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            rec.add([loss, mse, lpips, reg])
            log.steps += 1
            if progress and (step % 10 == 0 or step == t_cfg.steps - 1):
                vals = rec.last()
                bar.set_postfix(mse=f'{vals[1]:.4f}', lpips=f'{vals[2]:.3f}')
    finally:
        rec.finish()
        G.eval().requires_grad_(False)
    _sync(device)
    log.seconds = time.perf_counter() - t0
    return log


def _locality(G, G_orig, w_pivot, c, cfg: InvertConfig, perceptual, stats: LatentStats,
              gen: torch.Generator) -> torch.Tensor:
    """The locality regulariser: renders of G and G_orig alike at random points around the pivot."""
    t_cfg = cfg.tune
    device = w_pivot.device
    z = torch.randn([t_cfg.locality_samples, G.z_dim], generator=gen, device=device)
    with torch.no_grad():
        w_far = G_orig.mapping(z, stats.c_cond, truncation_psi=t_cfg.locality_psi)            # [S, L, C]
        w_reg = morph_towards(w_pivot, w_far, t_cfg.locality_radius * stats.w_std)
        old = G_orig.synthesis(w_reg, c, noise_mode='const', deterministic=True)['image']
        old_features = perceptual(old) if perceptual is not None else None
    new = G.synthesis(w_reg, c, noise_mode='const', deterministic=True)['image']
    reg = t_cfg.locality_l2_weight * (new - old).square().mean()
    if old_features is not None:
        reg = reg + t_cfg.locality_lpips_weight * perceptual.distance(perceptual(new), old_features).mean()
    return reg


def copy_generator(G):
    """A deep copy in eval mode with frozen parameters (the caller chooses what to tune)."""
    return copy.deepcopy(G).eval().requires_grad_(False)

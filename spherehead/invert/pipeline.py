"""One inversion end to end: target image and label -> pivot w -> tuned generator, with the
figures that say how well it went (PSNR and LPIPS at the target's view, before and after tuning)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from spherehead.invert.config import InvertConfig
from spherehead.invert.optimize import (LatentStats, PhaseLog, copy_generator, latent_stats, project_w,
                                        tune_generator)
from spherehead.invert.perceptual import PerceptualFeatures


@dataclass
class Inversion:
    """The result: pivot ws [1, num_ws, w_dim]; G_before (the input generator, with fitted noise images
    if asked for) and G_tuned; the camera used [1, 25]; uint8 [H, W, 3] renders at that camera."""
    ws: torch.Tensor
    G_before: torch.nn.Module
    G_tuned: torch.nn.Module
    camera: torch.Tensor
    target: np.ndarray
    before: np.ndarray
    after: np.ndarray
    project_log: PhaseLog
    tune_log: PhaseLog
    metrics: dict
    seconds: float


def to_tensor(img: np.ndarray, device) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [1, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).to(device).permute(2, 0, 1)[None].float() / 127.5 - 1


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """[1, 3, H, W] in [-1, 1] -> uint8 [H, W, 3] (what a viewer shows)."""
    return ((img[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8 images (peak 255); inf when equal."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float('inf') if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def inversion_camera(G, label: np.ndarray, cfg: InvertConfig, stats: LatentStats, device) -> torch.Tensor:
    """[1, 25] camera to optimise at: the label, moved by the generator's camera-offset net at the
    mean z when ``camera_offset`` (PanoHead's projector does so)."""
    c = torch.as_tensor(np.asarray(label, dtype=np.float32), device=device).view(1, 25)
    if cfg.camera_offset and getattr(G, 't_mapping', None) is not None:
        with torch.no_grad():
            c = G.camera_offset(stats.z_mean, c)
    return c


@torch.no_grad()
def render(G, ws: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """[1, 3, H, W] in [-1, 1]: the image without ray jitter and with the constant noise (what the tools show)."""
    return G.synthesis(ws, c, noise_mode='const', deterministic=True)['image']


def invert(G, image: np.ndarray, label: np.ndarray, cfg: InvertConfig, perceptual: PerceptualFeatures | None,
           stats: LatentStats | None = None, device='cpu', progress: bool = True, name: str = 'image') -> Inversion:
    """Pivotal tuning of G (not changed) on one image uint8 [R, R, 3] (R = G's output side) with its
    label float [25]. ``stats`` (from latent_stats) can be shared between images of one generator."""
    device = torch.device(device)
    t0 = time.perf_counter()
    if stats is None:
        stats = latent_stats(G, cfg.project.w_avg_samples, device)
    target = to_tensor(image, device)
    c = inversion_camera(G, label, cfg, stats, device)
    G_work = copy_generator(G)
    ws, project_log = project_w(G_work, target, c, cfg, perceptual, stats, progress, desc=f'{name}: w')
    G_before = copy_generator(G_work)          # the input generator (with the fitted noise, if any)
    tune_log = tune_generator(G_work, G_before, target, c, ws, cfg, perceptual, stats, progress,
                              desc=f'{name}: tune')
    before, after = to_uint8(render(G_before, ws, c)), to_uint8(render(G_work, ws, c))
    metrics = {'psnr_before_db': round(psnr(before, image), 3), 'psnr_after_db': round(psnr(after, image), 3)}
    if perceptual is not None and perceptual.meaningful:
        with torch.no_grad():
            tf = perceptual(target)
            for key, img in (('lpips_before', before), ('lpips_after', after)):
                metrics[key] = round(float(perceptual.distance(perceptual(to_tensor(img, device)), tf)[0]), 5)
    return Inversion(ws=ws, G_before=G_before, G_tuned=G_work, camera=c, target=image, before=before, after=after,
                     project_log=project_log, tune_log=tune_log, metrics=metrics, seconds=time.perf_counter() - t0)

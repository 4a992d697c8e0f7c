"""The files of one inversion, each written atomically (temporary name, then rename):

    generator.safetensors   the tuned generator (sh.load_generator and the visualizer open it)
    w.npy                   the pivot latent, float32 [num_ws, w_dim] (the visualizer's "load w" reads it;
                            its "save w" writes the same shape)
    turntable.mp4|.gif      360 degrees around the head: before tuning (pivot w, input generator) | after
    view.png                at the target's camera: target | before tuning | after tuning
    report.json             settings, timings, PSNR / LPIPS at the view, the loss of every step
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import torch

from spherehead.checkpoint import atomic_file, save_generator
from spherehead.invert.pipeline import Inversion, render, to_uint8

OUTPUT_FILES = ('generator.safetensors', 'w.npy', 'view.png', 'report.json', 'turntable.mp4', 'turntable.gif')


def clear_outputs(folder: Path) -> None:
    """Remove the files an earlier inversion wrote into ``folder`` (only those; --overwrite)."""
    for name in OUTPUT_FILES:
        (folder / name).unlink(missing_ok=True)


def caption(img: np.ndarray, text: str) -> np.ndarray:
    """A copy of uint8 [H, W, 3] with ``text`` in the top-left corner (white on a dark box)."""
    from PIL import Image, ImageDraw
    im = Image.fromarray(img)
    draw = ImageDraw.Draw(im)
    box = draw.textbbox((3, 2), text)
    draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
    draw.text((3, 2), text, fill=(255, 255, 255))
    return np.asarray(im)


def write_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image
    with atomic_file(path) as tmp:
        Image.fromarray(img).save(tmp, format='PNG')


def write_w(path: Path, ws: torch.Tensor) -> None:
    """ws [1, num_ws, w_dim] -> w.npy float32 [num_ws, w_dim]."""
    with atomic_file(path) as tmp:
        with open(tmp, 'wb') as f:                   # a file object: np.save would append '.npy' to a name
            np.save(f, ws[0].detach().float().cpu().numpy())


def turntable_cameras(label: np.ndarray, frames: int, device) -> list[torch.Tensor]:
    """[1, 25] cameras orbiting the head at the target's pitch and distance, starting at its yaw."""
    import spherehead as sh
    from spherehead.camera import label_to_yaw_pitch
    yaw, pitch, radius = (float(v) for v in label_to_yaw_pitch(np.asarray(label)))
    focal = float(label[16])
    fov = float(np.degrees(2 * np.arctan(1 / (1.414 * focal))))
    fov = sh.camera.RELEASED_FOV_DEG if abs(focal - sh.camera.RELEASED_FOCAL) < 1e-4 else fov
    return [sh.camera.lookat(yaw + 360.0 * i / frames, pitch, radius=radius, fov_deg=fov, device=device)
            for i in range(frames)]


def write_turntable(path: Path, result: Inversion, label: np.ndarray, frames: int, fps: float, z_mean=None,
                    progress: bool = True) -> None:
    """before | after, side by side, ``frames`` views over 360 degrees (no ray jitter)."""
    from tqdm import tqdm
    from spherehead.media import VideoWriter
    ws = result.ws
    cams = turntable_cameras(label, frames, ws.device)
    with torch.no_grad():
        planes = [G.backbone_planes(ws, noise_mode='const') for G in (result.G_before, result.G_tuned)]
        with VideoWriter(path, fps) as writer:
            for c in tqdm(cams, desc='turntable', unit='frame', disable=not progress, leave=False):
                cells = []
                for G, pl, text in zip((result.G_before, result.G_tuned), planes, ('before tuning', 'after tuning')):
                    cam = G.camera_offset(z_mean, c) if z_mean is not None and G.t_mapping is not None else c
                    img = G.synthesis(ws, cam, noise_mode='const', deterministic=True, planes=pl)['image']
                    cells.append(caption(to_uint8(img), text))
                writer.append(np.concatenate(cells, axis=1))


def write_outputs(outdir: Path, result: Inversion, label: np.ndarray, source: str, config: dict, extra: dict,
                  turntable: Path | None, frames: int, fps: float, z_mean=None, progress: bool = True) -> list[Path]:
    """Write the files listed in the module doc into ``outdir``; returns their paths."""
    outdir.mkdir(parents=True, exist_ok=True)
    G = result.G_tuned
    G.provenance = f'pivotal tuning of {getattr(result.G_before, "provenance", "a generator")} on {source}'
    written = []
    save_generator(G, outdir / 'generator.safetensors')
    written.append(outdir / 'generator.safetensors')
    write_w(outdir / 'w.npy', result.ws)
    written.append(outdir / 'w.npy')
    view = np.concatenate([caption(result.target, 'target'), caption(result.before, 'before tuning'),
                           caption(result.after, 'after tuning')], axis=1)
    write_png(outdir / 'view.png', view)
    written.append(outdir / 'view.png')
    if turntable is not None and frames > 0:
        write_turntable(turntable, result, label, frames, fps, z_mean, progress)
        written.append(turntable)
    report = {
        'source': source, 'label': [float(v) for v in label], 'camera_used': result.camera[0].tolist(),
        'network': getattr(result.G_before, 'provenance', ''), 'date': datetime.datetime.now().isoformat(timespec='seconds'),
        'metrics': result.metrics, 'seconds_total': round(result.seconds, 3),
        'phases': {'project': result.project_log.summary(), 'tune': result.tune_log.summary()},
        'config': config, **extra,
        'history': {'project': {k: getattr(result.project_log, k) for k in ('loss', 'mse', 'lpips')},
                    'tune': {k: getattr(result.tune_log, k) for k in ('loss', 'mse', 'lpips', 'locality')}},
    }
    with atomic_file(outdir / 'report.json') as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    written.append(outdir / 'report.json')
    return written

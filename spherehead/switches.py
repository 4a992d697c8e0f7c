"""The rule of every SPHEREHEAD_NO_* switch, which turns a fast path off in favour of its reference.

The switches (each documented where its fast path lives): SPHEREHEAD_NO_CUDA_KERNELS
(spherehead.ops.extension), SPHEREHEAD_NO_FAST_CPU (spherehead.ops.cpu_sampler),
SPHEREHEAD_NO_CONV_AUTOGRAD (spherehead.ops.conv_autograd), SPHEREHEAD_NO_FAST_DEMOD and
SPHEREHEAD_NO_FAST_FC (spherehead.networks.layers), SPHEREHEAD_NO_CUDA_GRAPHS
(spherehead.render.graphed).
"""
from __future__ import annotations

import os


def switch_set(name: str) -> bool:
    """True when the environment variable `name` is set to anything but '' or '0' (the rule of
    every SPHEREHEAD_NO_* switch)."""
    return os.environ.get(name, '') not in ('', '0')

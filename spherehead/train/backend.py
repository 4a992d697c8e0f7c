"""The torch backend flags that change training speed on CUDA: cuDNN autotuning and TF32.

- ``cudnn_benchmark``: cuDNN times its algorithms for each new convolution shape and keeps the
  fastest (``torch.backends.cudnn.benchmark``); the first step of each shape is slower.
- ``tf32``: 'torch' keeps torch's defaults (TF32 in cuDNN convolutions, not in matmuls); 'off'
  computes both in full float32 (the released training loop's choice); 'on' allows TF32 in both.
Float16 layers (mixed precision) are not affected by TF32.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Iterator

import torch

TF32_MODES = ('torch', 'off', 'on')


@dataclasses.dataclass(frozen=True)
class BackendFlags:
    cudnn_benchmark: bool = False
    tf32: str = 'torch'

    def __post_init__(self) -> None:
        if self.tf32 not in TF32_MODES:
            raise ValueError(f'tf32 must be one of {", ".join(TF32_MODES)}, got {self.tf32!r}')

    def apply(self) -> None:
        """Set the flags for this process (they stay set)."""
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        if self.tf32 != 'torch':
            torch.backends.cudnn.allow_tf32 = self.tf32 == 'on'
            torch.backends.cuda.matmul.allow_tf32 = self.tf32 == 'on'

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The flags set for a block, the previous values restored afterwards."""
        old = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        self.apply()
        try:
            yield
        finally:
            (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32) = old


def describe_current() -> str:
    """The flags in effect now, as one line part: 'cudnn.benchmark on, TF32 convolutions off, matmuls off'."""
    onoff = lambda b: 'on' if b else 'off'
    return (f'cudnn.benchmark {onoff(torch.backends.cudnn.benchmark)}, TF32 convolutions '
            f'{onoff(torch.backends.cudnn.allow_tf32)}, matmuls {onoff(torch.backends.cuda.matmul.allow_tf32)}')

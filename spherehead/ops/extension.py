"""Building the CUDA extensions on first use, once per process, with one warning on failure.

Each kernel module owns a `LazyExtension(name, source)`; `.get()` compiles (ninja, through
torch.utils.cpp_extension.load, cached under TORCH_EXTENSIONS_DIR, default
~/.cache/torch_extensions) and returns the module, or None when the build failed or the
kernels are switched off. SPHEREHEAD_NO_CUDA_KERNELS=1 switches every kernel off.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from spherehead.switches import switch_set

__all__ = ['ENV_DISABLE', 'LazyExtension', 'kernels_disabled', 'switch_set']

ENV_DISABLE = 'SPHEREHEAD_NO_CUDA_KERNELS'


def kernels_disabled() -> bool:
    """True when SPHEREHEAD_NO_CUDA_KERNELS is set."""
    return switch_set(ENV_DISABLE)


class LazyExtension:
    """A compiled module built at most once per process; None after a failed build."""

    def __init__(self, name: str, source: Path, what: str):
        self.name, self.source, self.what = name, Path(source), what
        self.tried = False
        self.module = None

    def get(self):
        """The module, building it on the first call; None (after one warning) if the build failed."""
        if not self.tried:
            self.tried = True
            try:
                self.module = self.build()
            except Exception as e:  # noqa: BLE001 - any build failure means: use the reference
                last = str(e).strip().splitlines()[-1] if str(e).strip() else repr(e)
                warnings.warn(f'spherehead: the {self.what} CUDA kernel could not be built ({type(e).__name__}: '
                              f'{last}); using the PyTorch reference', RuntimeWarning, stacklevel=3)
                self.module = None
        return self.module

    def build(self):
        """Compile and load the extension (torch.utils.cpp_extension.load, ninja); raises on failure."""
        from torch.utils.cpp_extension import load
        return load(name=self.name, sources=[str(self.source)], extra_cuda_cflags=['-O3'], extra_cflags=['-O3'],
                    verbose=os.environ.get('SPHEREHEAD_VERBOSE_BUILD') == '1')

    def usable(self, *tensors: torch.Tensor) -> bool:
        """True when every tensor is on CUDA, kernels are on and the build succeeded."""
        if kernels_disabled() or not all(t.is_cuda for t in tensors):
            return False
        return self.get() is not None

    def reset(self) -> None:
        self.tried, self.module = False, None

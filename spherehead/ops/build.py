"""Build every CUDA extension now (in parallel), instead of on first use inside a run.

    python -m spherehead.ops.build

Each extension compiles in its own process (about a minute each on an H100 host, cached under
TORCH_EXTENSIONS_DIR); prints which ones built. Useful before timing anything or before
launching several training processes that would otherwise wait on the same build.
"""
from __future__ import annotations

import importlib
import subprocess
import sys
import time

MODULES = ('spherehead.ops.dual_sphere', 'spherehead.ops.upfirdn2d', 'spherehead.ops.bias_act')


def _build_one(module: str) -> bool:
    return importlib.import_module(module)._extension.get() is not None


def main() -> int:
    import torch
    if not torch.cuda.is_available():
        print('no CUDA device: nothing to build (the PyTorch reference paths are used)')
        return 0
    t0 = time.time()
    procs = {m: subprocess.Popen([sys.executable, '-c', f'import sys; from spherehead.ops.build import _build_one; '
                                                        f'sys.exit(0 if _build_one({m!r}) else 1)'])
             for m in MODULES}
    ok = {m: p.wait() == 0 for m, p in procs.items()}
    for m, good in ok.items():
        print(f'{m.rsplit(".", 1)[-1]}: {"built" if good else "FAILED (the reference will be used)"}')
    print(f'{sum(ok.values())} of {len(ok)} kernels built in {time.time() - t0:.0f} s')
    return 0 if all(ok.values()) else 1


if __name__ == '__main__':
    sys.exit(main())

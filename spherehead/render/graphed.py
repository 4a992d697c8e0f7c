"""G.synthesis replayed from CUDA graphs, for the visualizer's orbit (static shapes, no autograd).

At batch 1 a frame is bound by the host: launching some hundreds of small kernels takes longer
than running them (on an H100, 19.9 ms of host time against 10.7 ms of GPU time per paper-config
orbit frame under the profiler). A CUDA graph records the frame's kernels once and replays them
with one launch. Each call form (batch, sphere, noise mode, resolutions, the planes' shapes)
gets its own graph; every call copies ws, the camera and the planes into the graph's static
input buffers, replays, and returns copies of the outputs. Without planes the backbone runs
inside the graph as well (a whole forward from ws).

Used only on CUDA, with autograd off, deterministic sampling and noise 'const' or 'none' (random
noise would be frozen into the graph). SPHEREHEAD_NO_CUDA_GRAPHS=1 turns it off; a call form
whose capture fails warns once and runs eagerly from then on.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from dataclasses import dataclass

import torch

from spherehead.switches import switch_set

ENV_DISABLE = 'SPHEREHEAD_NO_CUDA_GRAPHS'
MAX_GRAPHS = 6   # call forms kept (A, B and fused side by side at two resolutions); the oldest is dropped


def graphs_disabled() -> bool:
    return switch_set(ENV_DISABLE)


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    ws: torch.Tensor
    c: torch.Tensor
    planes: dict[str, torch.Tensor] | None
    out: dict[str, torch.Tensor]


class GraphedSynthesis:
    """Callable like ``G.synthesis(ws, c, planes=..., sphere=..., ...)`` for no-grad, deterministic
    renders of a fixed generator; returns the same dict, or None when the call must run eagerly
    (the caller then calls G.synthesis itself)."""

    def __init__(self, G: torch.nn.Module):
        self.G = G
        self._graphs: OrderedDict[tuple, _Graph] = OrderedDict()
        self._failed: set[tuple] = set()

    def usable(self, ws: torch.Tensor, noise_mode: str) -> bool:
        return (ws.is_cuda and not graphs_disabled() and not torch.is_grad_enabled()
                and noise_mode in ('const', 'none'))

    def __call__(self, ws: torch.Tensor, c: torch.Tensor, planes: dict[str, torch.Tensor] | None,
                 sphere: str = 'fused', noise_mode: str = 'const', **options) -> dict[str, torch.Tensor] | None:
        """ws [N, num_ws, w_dim], c [N or 1, 25], planes from G.backbone_planes (None: the backbone
        runs inside the graph too); options are G.synthesis's resolution arguments.
        None: not usable here (see the module docstring)."""
        if not self.usable(ws, noise_mode):
            return None
        c = c.to(ws.device, torch.float32).expand(ws.shape[0], -1)
        key = (tuple(ws.shape), ws.dtype, sphere, noise_mode, tuple(sorted(options.items())),
               None if planes is None else tuple((k, tuple(v.shape), v.dtype) for k, v in sorted(planes.items())))
        if key in self._failed:
            return None
        entry = self._graphs.get(key)
        if entry is None:
            entry = self._capture(key, ws, c, planes, sphere, noise_mode, options)
            if entry is None:
                return None
        self._graphs.move_to_end(key)
        entry.ws.copy_(ws)
        entry.c.copy_(c)
        for k, v in (planes or {}).items():
            entry.planes[k].copy_(v)
        entry.graph.replay()
        return {k: v.clone() for k, v in entry.out.items()}

    def _capture(self, key, ws, c, planes, sphere, noise_mode, options) -> _Graph | None:
        static_ws, static_c = ws.clone(), c.clone()
        static_planes = None if planes is None else {k: v.clone() for k, v in planes.items()}

        def run():
            return self.G.synthesis(static_ws, static_c, sphere=sphere, noise_mode=noise_mode, deterministic=True,
                                    planes=static_planes, **options)
        try:
            side = torch.cuda.Stream(ws.device)
            side.wait_stream(torch.cuda.current_stream(ws.device))
            with torch.cuda.stream(side):
                for _ in range(2):   # warm-up outside the graph: kernel builds, cuDNN plans, allocator
                    run()
            torch.cuda.current_stream(ws.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = run()
        except Exception as e:  # noqa: BLE001 - any capture failure means: run this call form eagerly
            self._failed.add(key)
            warnings.warn(f'spherehead: CUDA graph capture of the render failed ({type(e).__name__}: '
                          f'{str(e).strip().splitlines()[0] if str(e).strip() else e!r}); rendering eagerly',
                          RuntimeWarning, stacklevel=3)
            return None
        entry = _Graph(graph, static_ws, static_c, static_planes, out)
        self._graphs[key] = entry
        while len(self._graphs) > MAX_GRAPHS:
            self._graphs.popitem(last=False)
        return entry

"""Reference-versus-fast timings of the generator, the orbit render, the ray marcher and FIR resampling.

Each function runs its workload twice, with the CUDA kernels off (the PyTorch reference:
SPHEREHEAD_NO_CUDA_KERNELS=1) and on, and returns one `PathTiming` per path. Times are
medians over CUDA events after warm-ups; peak memory is the most allocated above what was
in use before the timed calls.
"""
from __future__ import annotations

import dataclasses
import os
import statistics
import time
from contextlib import contextmanager

import torch

from spherehead.ops.extension import ENV_DISABLE


@dataclasses.dataclass
class PathTiming:
    path: str                       # 'reference' or 'fast'
    ms: dict[str, float]            # median ms per measurement
    peak_mib: dict[str, float]      # peak MiB per measurement (nan on CPU)


@contextmanager
def kernels(on: bool):
    """Kernels on or off for a block (restores the variable afterwards)."""
    old = os.environ.get(ENV_DISABLE)
    os.environ[ENV_DISABLE] = '0' if on else '1'
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(ENV_DISABLE, None)
        else:
            os.environ[ENV_DISABLE] = old


def paths(device: torch.device) -> list[tuple[str, bool]]:
    """[(name, kernels on)]: both on CUDA, the reference alone elsewhere."""
    return [('reference', False), ('fast', True)] if device.type == 'cuda' else [('reference', False)]


def graph_paths(device: torch.device) -> list[tuple[str, bool, bool]]:
    """[(name, kernels on, CUDA graph)]: `paths` plus, on CUDA, the kernels replayed from a graph."""
    return [(name, on, False) for name, on in paths(device)] + ([('fast+graph', True, True)]
                                                                if device.type == 'cuda' else [])


def time_ms(fn, device: torch.device, warmup: int, repeat: int) -> tuple[float, float]:
    """(median ms, peak MiB above the memory in use before; nan on CPU) of fn()."""
    for _ in range(warmup):
        fn()
    if device.type != 'cuda':
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn()
            times.append(1000 * (time.perf_counter() - t0))
        return statistics.median(times), float('nan')
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times), (torch.cuda.max_memory_allocated(device) - base) / 2 ** 20


def _generator(preset: str, device: torch.device, precision: str = 'fp32'):
    """Random-weight G of a preset; precision 'mixed' runs its float16-capable parts (the
    super-resolution when sr_num_fp16_res > 0, as the released code does on a GPU) in float16."""
    from spherehead.checkpoint import load_generator
    from spherehead.networks.precision import set_mixed_precision
    torch.manual_seed(0)
    G = load_generator(f'random:{preset}', device)
    set_mixed_precision(G, precision == 'mixed')
    return G


def _inputs(G, batch: int, device: torch.device):
    from spherehead.camera import lookat
    z = torch.randn(batch, G.z_dim, generator=torch.Generator().manual_seed(0)).to(device)
    c = torch.cat([lookat(float(y), 10.0) for y in torch.linspace(-40, 40, batch)]).to(device)
    return z, c


def bench_generator(preset: str, batch: int, neural: int, device: torch.device, warmup: int,
                    repeat: int, precision: str = 'fp32') -> list[PathTiming]:
    """G(z, c) forward (eval, no grad) and forward + backward (train mode, gradients of every
    parameter from a loss on image and image_raw) at neural rendering resolution `neural`. On CUDA
    a third path runs the forward's synthesis (backbone included) from a CUDA graph; its
    forward+backward is the eager one (graphs are for inference)."""
    from spherehead.render.graphed import GraphedSynthesis
    out = []
    for name, on, graphed in graph_paths(device):
        with kernels(on):
            G = _generator(preset, device, precision).requires_grad_(True)
            z, c = _inputs(G, batch, device)
            kw = dict(neural_rendering_resolution=neural, noise_mode='const')
            replay = GraphedSynthesis(G) if graphed else None

            def forward():
                with torch.no_grad():
                    G.eval()
                    if replay is None or replay(G.mapping(z, c), G.camera_offset(z, c), None,
                                                neural_rendering_resolution=neural) is None:
                        G(z, c, **kw)

            def forward_backward():
                res = G.train()(z, c, **kw)
                (res['image'].square().mean() + res['image_raw'].square().mean()).backward()
                G.zero_grad(set_to_none=True)

            f_ms, f_mem = time_ms(forward, device, warmup, repeat)
            b_ms, b_mem = time_ms(forward_backward, device, warmup, repeat)
            out.append(PathTiming(name, {'forward': f_ms, 'forward+backward': b_ms},
                                  {'forward': f_mem, 'forward+backward': b_mem}))
            G = replay = None   # free them before the next path builds its own
    return out


def bench_orbit(preset: str, neural: int, device: torch.device, warmup: int, repeat: int,
                precision: str = 'fp32') -> list[PathTiming]:
    """One visualizer frame with the backbone cached: G.synthesis(ws, c, planes=...) at batch 1,
    deterministic, camera moving by 3 degrees a frame. On CUDA a third path replays the frame
    from a CUDA graph (spherehead.render.graphed), as the visualizer does."""
    from spherehead.camera import lookat
    from spherehead.render.graphed import GraphedSynthesis
    out = []
    for name, on, graphed in graph_paths(device):
        with kernels(on):
            G = _generator(preset, device, precision).eval()
            z, c = _inputs(G, 1, device)
            cams = [lookat(float(y), 10.0, device=device) for y in range(0, 360, 3)]
            with torch.no_grad():
                ws = G.mapping(z, c, truncation_psi=0.7)
                planes = G.backbone_planes(ws)
            frame = iter(range(10 ** 9))
            replay = GraphedSynthesis(G) if graphed else None

            def render():
                cam = cams[next(frame) % len(cams)]
                with torch.no_grad():
                    res = replay(ws, cam, planes, neural_rendering_resolution=neural) if replay else None
                    if res is None:
                        G.synthesis(ws, cam, planes=planes, deterministic=True, neural_rendering_resolution=neural)

            ms, mem = time_ms(render, device, warmup, repeat)
            out.append(PathTiming(name, {'frame': ms}, {'frame': mem}))
            G = replay = None   # free them before the next path builds its own
    return out


def bench_marcher(batch: int, neural: int, samples: int, channels: int, device: torch.device, warmup: int,
                  repeat: int) -> list[PathTiming]:
    """march_rays on [batch, neural^2 rays, samples, channels] random colours and densities,
    forward and forward + backward (gradients of colours and densities)."""
    from spherehead.render.ray_marcher import march_rays
    g = torch.Generator().manual_seed(0)
    R = neural * neural
    colors = torch.rand(batch, R, samples, channels, generator=g).to(device)
    sigma = torch.randn(batch, R, samples, 1, generator=g).to(device)
    depths = torch.sort(2.25 + torch.rand(batch, R, samples, 1, generator=g) * 1.05, dim=2).values.to(device)
    out = []
    for name, on in paths(device):
        with kernels(on):
            def forward():
                with torch.no_grad():
                    march_rays(colors, sigma, depths)

            cg, sg = colors.clone().requires_grad_(True), sigma.clone().requires_grad_(True)

            def forward_backward():
                comp, depth, weights = march_rays(cg, sg, depths)
                torch.autograd.grad(comp.sum() + depth.sum() + weights.sum(), (cg, sg))

            f_ms, f_mem = time_ms(forward, device, warmup, repeat)
            b_ms, b_mem = time_ms(forward_backward, device, warmup, repeat)
            out.append(PathTiming(name, {'forward': f_ms, 'forward+backward': b_ms},
                                  {'forward': f_mem, 'forward+backward': b_mem}))
    return out


FIR_CASES = {   # name: (shape [N, C, H, W], up, down, padding): StyleGAN2 resampling at the paper config's sizes
    'filter': ((4, 64, 512, 512), 1, 1, 1),        # before D's stride-2 3x3 convolution (512 px block)
    'down2': ((4, 64, 512, 512), 1, 2, 1),         # D's 1x1 skip and the image pyramid
    'up2': ((4, 128, 256, 256), 2, 1, (2, 1, 2, 1)),  # super-resolution upsampling to 512 px
}


def bench_fir(case: str, dtype: torch.dtype, device: torch.device, warmup: int,
              repeat: int) -> tuple[list[PathTiming], float]:
    """upfirdn2d with the [1, 3, 3, 1] filter on FIR_CASES[case]: the reference, the general kernel and
    the compile-time (tiled) kernel, forward and forward + backward. Also returns the bytes one
    forward reads and writes, for GB/s."""
    from spherehead.ops import upfirdn2d as U
    shape, up, down, pad = FIR_CASES[case]
    f = U.setup_filter([1, 3, 3, 1], device=device)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device, dtype).requires_grad_(True)
    variants = [('reference', False, False)] + ([('general', True, False), ('tiled', True, True)]
                                                if device.type == 'cuda' else [])
    out, nbytes = [], 0
    old = U.USE_TILED_KERNEL
    try:
        for name, on, tiled in variants:
            U.USE_TILED_KERNEL = tiled
            with kernels(on):
                def forward():
                    with torch.no_grad():
                        return U.upfirdn2d(x, f, up=up, down=down, padding=pad)

                y = forward()
                nbytes = (x.numel() + y.numel()) * x.element_size()
                dy = torch.ones_like(y)

                def forward_backward():
                    torch.autograd.grad(U.upfirdn2d(x, f, up=up, down=down, padding=pad), x, dy)

                f_ms, f_mem = time_ms(forward, device, warmup, repeat)
                b_ms, b_mem = time_ms(forward_backward, device, warmup, repeat)
                out.append(PathTiming(name, {'forward': f_ms, 'forward+backward': b_ms},
                                      {'forward': f_mem, 'forward+backward': b_mem}))
    finally:
        U.USE_TILED_KERNEL = old
    return out, nbytes


def copy_bandwidth_gbs(device: torch.device, mib: int = 1024) -> float:
    """Device-to-device copy bandwidth (bytes read + written per second, GB/s) of a `mib` MiB clone."""
    x = torch.empty(mib * 2 ** 20 // 4, device=device)
    ms, _ = time_ms(lambda: x.clone(), device, 3, 10)
    return 2 * x.numel() * 4 / (ms / 1000) / 1e9


def table(rows: list[PathTiming], batch: int) -> list[str]:
    """Rows of ms, images per second and peak MiB per measurement, and the reference/fast ratio."""
    keys = list(rows[0].ms)
    mib = lambda v: '-' if v != v else f'{v:.0f}'
    lines = [f'{"path":10s} ' + ' '.join(f'{k + " ms":>19s} {"img/s":>8s} {"peak MiB":>9s}' for k in keys)]
    for r in rows:
        lines.append(f'{r.path:10s} ' + ' '.join(f'{r.ms[k]:19.2f} {batch / r.ms[k] * 1000:8.1f} '
                                                 f'{mib(r.peak_mib[k]):>9s}' for k in keys))
    if len(rows) >= 2:
        lines.append(f'speed-up (reference / {rows[-1].path}): '
                     + ', '.join(f'{k} {rows[0].ms[k] / rows[-1].ms[k]:.2f}x' for k in keys))
    return lines

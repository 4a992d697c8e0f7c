"""Whole training passes replayed from CUDA graphs against the same passes run eagerly: what the
first lever of issue 22 would give, measured before it is built into the trainer.

    python docs/bench/graph_passes.py [paper|demo|tiny] [mixed|fp32] [REPEAT]

Builds the bench's passes twice from the same seed (spherehead.train.bench_step.train_passes:
random inputs, batch 4, neural $NEURAL or 64, forward + backward + gradient exchange + Adam, under
train.py's backend flags). One set runs eagerly. The other is captured pass by pass into its own
CUDA graph (torch.cuda.graph, after warm-up runs on a side stream; its Adam is capturable) and
replayed. Eager and graphed runs alternate (CUDA events), and each pass's median and interquartile
range is printed, with the iteration amortised as `spherehead bench train-step` does.
A pass whose capture fails says why in one line and is not timed graphed. Written to
$OUT/graph_passes.json (or ./graph_passes.json) too.

    DEVICE=cpu python docs/bench/graph_passes.py tiny fp32 2   # its plumbing on a CPU: no graphs there,
                                                               # the 'graphed' set runs uncaptured

Timing only: a graph replays the kernels its capture launched, so host-side choices inside a pass
(a branch taken on a Python random number, a Python scalar) are frozen in it. Building graphs into
the trainer needs those as tensors; this script says whether that is worth doing.
"""
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from spherehead.train.backend import BackendFlags, describe_current  # noqa: E402
from spherehead.train.bench_step import _timer, quartiles, train_passes  # noqa: E402
from spherehead.train.config import TrainingConfig  # noqa: E402

WARMUP = 3


def capture(run_pass, device: torch.device):
    """Warm run_pass up on a side stream (cuDNN / cuBLAS workspaces, autotuning, lazy state), then
    capture one run of it into a CUDA graph; returns the graph's replay."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(WARMUP):
            run_pass()
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        run_pass()
    torch.cuda.synchronize(device)
    return graph.replay


def main(argv: list[str]) -> int:
    preset = argv[0] if argv else 'paper'
    precision = argv[1] if len(argv) > 1 else 'mixed'
    repeat = int(argv[2]) if len(argv) > 2 else 10
    device = torch.device(os.environ.get('DEVICE', 'cuda'))
    if device.type == 'cuda' and not torch.cuda.is_available():
        print('Error: graph_passes.py captures CUDA graphs and needs a CUDA GPU; none is visible here '
              '(DEVICE=cpu checks its plumbing without graphs).', file=sys.stderr)
        return 2
    on_gpu = device.type == 'cuda'
    gpu = torch.cuda.get_device_name(device) if on_gpu else 'cpu (plumbing check: nothing captured)'
    neural = int(os.environ.get('NEURAL', 64))
    cfg = TrainingConfig()
    with BackendFlags(cudnn_benchmark=cfg.cudnn_benchmark, tf32=cfg.tf32).applied():
        flags = describe_current()
        print(f'{time.strftime("%Y-%m-%d")}  {gpu}  torch {torch.__version__}  '
              f'config {preset}  batch 4  neural {neural}  precision {precision}  {flags}', flush=True)
        tcfg, _, eager = train_passes(preset, 4, device, neural, precision)
        _, _, to_capture = train_passes(preset, 4, device, neural, precision, capturable=on_gpu)
        graphed, failed = {}, {}
        for name, run_pass in to_capture.items():
            try:
                graphed[name] = capture(run_pass, device) if on_gpu else run_pass
                print(f'{name}: ' + ('captured' if on_gpu else 'stand-in, not captured'), flush=True)
            except Exception as e:  # noqa: BLE001 - reported, the pass stays eager
                failed[name] = f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'
                print(f'{name}: capture failed: {failed[name]}', flush=True)
        times = {kind: {name: [] for name in eager} for kind in ('eager', 'graphed')}
        for name in eager:
            for _ in range(WARMUP):
                eager[name]()
            for _ in range(repeat):
                for kind, runs in (('eager', eager), ('graphed', graphed)):
                    if name in runs:
                        stop = _timer(device)
                        runs[name]()
                        times[kind][name].append(stop())
        peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if on_gpu else 0.0
    loss = tcfg.loss
    weights = {'g_main': 1.0, 'd_main': 1.0, 'g_reg': 1 / loss.density_reg_interval, 'd_r1': 1 / loss.r1_interval}
    result = {'date': time.strftime('%Y-%m-%d'), 'gpu': gpu, 'torch': torch.__version__,
              'config': preset, 'batch': 4, 'neural': neural, 'precision': precision, 'flags': flags,
              'repeat': repeat, 'capture_failed': failed, 'peak_gib_both_sets': round(peak, 2), 'passes': {}}
    for name in eager:
        row = {}
        for kind in times:
            t = times[kind][name]
            if t:
                row[kind] = {'median_ms': statistics.median(t), 'iqr_ms': list(quartiles(t))}
        result['passes'][name] = row
        line = '  '.join(f'{kind} {v["median_ms"]:.1f} ms (IQR {v["iqr_ms"][0]:.1f}-{v["iqr_ms"][1]:.1f})'
                         for kind, v in row.items())
        if len(row) == 2:
            line += f'  graphed / eager {row["graphed"]["median_ms"] / row["eager"]["median_ms"]:.2f}'
        print(f'{name}: {line}')
    for kind in times:
        # a pass that did not capture counts at its eager time in the graphed iteration
        per = {n: result['passes'][n].get(kind, result['passes'][n]['eager'])['median_ms'] for n in eager}
        result[f'iteration_ms_{kind}'] = sum(weights[n] * per[n] for n in eager)
    print(f'iteration (regularisers amortised): eager {result["iteration_ms_eager"]:.1f} ms, graphed '
          f'{result["iteration_ms_graphed"]:.1f} ms ({result["iteration_ms_graphed"] / result["iteration_ms_eager"]:.2f}x)'
          f'{"; not captured: " + ", ".join(failed) if failed else ""}; peak memory of both sets {peak:.1f} GiB')
    out = Path(os.environ.get('OUT', '.'), 'graph_passes.json')
    out.write_text(json.dumps(result, indent=1))
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

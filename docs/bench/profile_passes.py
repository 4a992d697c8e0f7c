"""torch.profiler tables of the training passes (docs/performance.md, "Where the time goes now").

    python docs/bench/profile_passes.py [paper|demo|tiny] [mixed|fp32|bf16] [PASS,...]

Builds the passes of `spherehead bench train-step` (random inputs, batch 4, neural $NEURAL or 64),
runs each of PASS (default g_main,d_main,d_r1; also g_reg) three times, profiles a fourth run,
writes prof_<pass>_<precision>.txt (sorted by self CUDA time) to $OUT or '.', and prints each
pass's summed self CUDA and CPU time over all rows. An operator's kernels count both under the
operator and as rows of their own, so the CUDA sum is about twice the time the GPU spent in kernels.
"""
import os
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from spherehead.train.bench_step import train_passes  # noqa: E402

preset = sys.argv[1] if len(sys.argv) > 1 else 'paper'
precision = sys.argv[2] if len(sys.argv) > 2 else 'mixed'
names = sys.argv[3].split(',') if len(sys.argv) > 3 else ['g_main', 'd_main', 'd_r1']
out = os.environ.get('OUT', '.')
device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
_, _, passes = train_passes(preset, 4, device, int(os.environ.get('NEURAL', 64)), precision)
unknown = sorted(set(names) - set(passes))
if unknown:
    sys.exit(f'Error: unknown pass {", ".join(unknown)}; choose from {", ".join(passes)}')
for name in names:
    for _ in range(3):
        passes[name]()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    with profile(activities=activities) as p:
        passes[name]()
        if device.type == 'cuda':
            torch.cuda.synchronize()
    events = p.key_averages()
    sort = 'self_cuda_time_total' if device.type == 'cuda' else 'self_cpu_time_total'
    Path(out, f'prof_{name}_{precision}.txt').write_text(events.table(sort_by=sort, row_limit=30, max_name_column_width=60))
    print(f'{name} {precision}: summed self CUDA {sum(e.self_device_time_total for e in events) / 1000:.1f} ms, '
          f'self CPU {sum(e.self_cpu_time_total for e in events) / 1000:.1f} ms', flush=True)

"""Wall time of each step of the real training loop (docs/performance.md, "The real training loop").

    python docs/bench/loop_steps.py --data heads.zip --cfg paper --batch 4 --kimg 0.18 --outdir /tmp/runs [train.py options]

Runs train.py with a timer around every Trainer.step (synchronised with the GPU before and after,
so steps do not overlap), and around every fetch of a real batch. Every 40 steps it prints the
median, min and max of the last 30 step times, how many of them took over 1.5x the median, and
the median data wait. With PROFILE=1 it also writes torch.profiler tables of step 40 (sorted by
CPU and by CUDA time) to $OUT or '.'. With GC_FREEZE=1 it calls gc.freeze() before the first step
(the objects alive then are never scanned by the garbage collector again).
"""
import gc
import os
import runpy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import spherehead.train.data as data_module  # noqa: E402
import spherehead.train.loop as loop_module  # noqa: E402

out = os.environ.get('OUT', '.')
step_ms: list[float] = []
wait_ms: list[float] = []
steps_done = [0]
original_step, original_next = loop_module.Trainer.step, data_module.RealStream.next


def timed_next(self):
    t = time.perf_counter()
    batch = original_next(self)
    wait_ms.append((time.perf_counter() - t) * 1000)
    return batch


def timed_step(self):
    k = steps_done[0]
    steps_done[0] += 1
    if k == 0 and os.environ.get('GC_FREEZE'):
        gc.freeze()
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t = time.perf_counter()
    if k == 40 and os.environ.get('PROFILE'):
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
            original_step(self)
            sync()
        table = p.key_averages().table
        Path(out, 'loop_cpu.txt').write_text(table(sort_by='self_cpu_time_total', row_limit=40, max_name_column_width=60))
        Path(out, 'loop_cuda.txt').write_text(table(sort_by='self_cuda_time_total', row_limit=40, max_name_column_width=60))
    else:
        original_step(self)
    sync()
    step_ms.append((time.perf_counter() - t) * 1000)
    if k % 40 == 39:
        last = step_ms[-30:]
        med = statistics.median(last)
        print(f'steps {k - 29}-{k}: median {med:.1f} ms, min {min(last):.1f}, max {max(last):.1f}, '
              f'{sum(t > 1.5 * med for t in last)} over 1.5x the median; '
              f'data wait median {statistics.median(wait_ms[-30:]):.1f} ms', flush=True)


data_module.RealStream.next = timed_next
loop_module.Trainer.step = timed_step
sys.argv = ['train.py'] + sys.argv[1:]
runpy.run_path(str(Path(__file__).resolve().parents[2] / 'train.py'), run_name='__main__')

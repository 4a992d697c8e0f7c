"""NCCL all-reduce time of the paper config's gradient sizes (docs/performance.md, "Several GPUs").

    torchrun --standalone --nproc_per_node=2 docs/scaling/allreduce.py

One flat float32 tensor of G's and one of D's parameter count (what spherehead.train.distributed
all-reduces each optimiser step); median and min of 10 calls after 3 warm-ups, timed on rank 0.
"""
import statistics
import time

import torch
import torch.distributed as dist

SIZES = {'G (paper)': 54_730_944, 'D (paper)': 31_361_088}   # parameter counts of build_networks(paper)

dist.init_process_group('nccl')
rank = dist.get_rank()
torch.cuda.set_device(rank)
for name, n in SIZES.items():
    x = torch.randn(n, device='cuda')
    for _ in range(3):
        dist.all_reduce(x)
    torch.cuda.synchronize()
    times = []
    for _ in range(10):
        t = time.perf_counter()
        dist.all_reduce(x)
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1000)
    if rank == 0:
        print(f'{name}: all_reduce of {n * 4 / 2 ** 20:.0f} MiB float32 on {dist.get_world_size()} GPUs: '
              f'median {statistics.median(times):.2f} ms, min {min(times):.2f} ms', flush=True)
dist.destroy_process_group()

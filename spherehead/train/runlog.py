"""Training statistics: collected per step as device tensors, reduced once per tick, written as a
log line (stdout + log.txt), one JSON line (stats.jsonl) and TensorBoard scalars. Rank 0 writes."""
from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict
from pathlib import Path

import torch

from spherehead.train.distributed import DistInfo, all_reduce_mean


class StatsCollector:
    """Sums of 0-d tensors per name; ``reduce`` gives means over steps and ranks (one GPU sync)."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        for k, v in stats.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v
            self.counts[k] += 1

    def reduce(self, info: DistInfo, keys: list[str] | None = None) -> dict[str, float]:
        values = {k: float(v) / self.counts[k] for k, v in self.sums.items()}
        if keys is not None:   # every rank must reduce the same keys
            values = {k: values.get(k, float('nan')) for k in keys}
        self.sums.clear()
        self.counts.clear()
        return all_reduce_mean(values, info)


class RunLog:
    """log.txt, stats.jsonl and TensorBoard events of one run (no-op on ranks other than 0)."""

    def __init__(self, run_dir: Path, info: DistInfo, tensorboard: bool = True):
        self.enabled = info.is_main
        self.run_dir = run_dir
        self.tb = None
        if not self.enabled:
            return
        self.text = open(run_dir / 'log.txt', 'a', buffering=1)
        self.jsonl = open(run_dir / 'stats.jsonl', 'a', buffering=1)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(run_dir))
            except ImportError as e:  # tensorboard is a declared dependency; keep training without it
                warnings.warn(f'TensorBoard events not written ({e}); pip install tensorboard')

    def line(self, msg: str) -> None:
        if self.enabled:
            print(msg, flush=True)
            self.text.write(msg + '\n')

    def record(self, kimg: float, values: dict) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({'kimg': round(kimg, 3), **values}, sort_keys=True) + '\n')
        if self.tb is not None:
            step = int(round(kimg * 1000))
            for k, v in values.items():
                if isinstance(v, (int, float)) and v == v:
                    self.tb.add_scalar(k, v, global_step=step)
            self.tb.flush()

    def close(self) -> None:
        if self.enabled:
            self.text.close()
            self.jsonl.close()
            if self.tb is not None:
                self.tb.close()


def gpu_memory_gib(device: torch.device) -> float:
    """Peak GPU memory allocated since the last call, in GiB (0 on CPU); resets the peak."""
    if device.type != 'cuda':
        return 0.0
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30
    torch.cuda.reset_peak_memory_stats(device)
    return peak


def next_run_dir(outdir: str | os.PathLike, desc: str) -> Path:
    """<outdir>/<NNNNN>-<desc>, numbered one past the highest existing run (never collides)."""
    outdir = Path(outdir)
    ids = [int(p.name.split('-', 1)[0]) for p in outdir.iterdir() if p.is_dir() and p.name.split('-', 1)[0].isdigit()] \
        if outdir.is_dir() else []
    run_id = max(ids, default=-1) + 1
    return outdir / f'{run_id:05d}-{desc}'

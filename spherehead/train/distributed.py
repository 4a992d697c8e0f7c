"""torch.distributed helpers for training launched by torchrun (one node or several).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; without them the run is a single process.
GPUs use NCCL, CPUs gloo. `average_gradients` is the reference gradient exchange: one
all-reduce of a flat buffer after the backward (parameters without a gradient in this step
contribute zeros, so modules a step did not use, sphere B's head when rendering sphere A, need
no special handling). Training uses spherehead/train/grad_sync.py, which by default overlaps
the exchange with the backward pass and keeps this one as its 'flat' mode.
"""
from __future__ import annotations

import datetime
import importlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device('cpu')

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return 'RANK' in os.environ and 'WORLD_SIZE' in os.environ


def init(device: str = 'auto') -> DistInfo:
    """Join the process group torchrun set up (if any) and pick this rank's device.

    device: 'auto' (this rank's GPU when CUDA is available, else CPU), 'cuda' or 'cpu'.
    """
    rank = int(os.environ.get('RANK', 0))
    world = int(os.environ.get('WORLD_SIZE', 1))
    local = int(os.environ.get('LOCAL_RANK', 0))
    use_cuda = torch.cuda.is_available() if device == 'auto' else device.startswith('cuda')
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device('cuda', local)
    else:
        dev = torch.device('cpu')
    if world > 1 and not dist.is_initialized():
        # torch.optim imports torch._dynamo; done after the group exists, that import keeps the
        # group alive past destroy_process_group (seen with torch 2.13). Its gloo worker threads
        # then outlive the interpreter and abort the process at exit (SIGABRT after a good run)
        # when they release a finished collective's tensors. Imported first, it leaves the group free.
        importlib.import_module('torch._dynamo')
        dist.init_process_group(backend='nccl' if use_cuda else 'gloo', timeout=datetime.timedelta(minutes=30),
                                **({'device_id': dev} if use_cuda else {}))
    return DistInfo(rank, world, local, dev)


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_module(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every rank (same start everywhere)."""
    if not info.enabled:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Average .grad over ranks in one flat all-reduce; a missing grad counts as zeros.
    Also replaces NaN/Inf in gradients by 0 (as the StyleGAN2 family does) on every run."""
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch.cat([g.flatten() for g in grads])
    if info.enabled:
        dist.all_reduce(flat)
        flat /= info.world_size
    torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
    # One multi-tensor copy back (not one launch per parameter: hundreds per optimiser step).
    torch._foreach_copy_(grads, [v.view_as(g) for v, g in zip(flat.split([g.numel() for g in grads]), grads)])


def all_reduce_mean(values: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Mean of per-rank log values over ranks (same keys on every rank)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=info.device)
    dist.all_reduce(t)
    t /= info.world_size
    return dict(zip(keys, t.tolist()))


def any_rank(flag: bool, info: DistInfo) -> bool:
    """True on every rank when any rank says True (e.g. a stop request). Blocks (a host sync)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


class StopVote:
    """The ranks agree on a stop request without making the host wait for the GPU.

    ``poll(flag, step)``: on one rank, ``flag``. With several ranks, every ``every`` steps each rank
    sends its flag (an asynchronous all-reduce, copied back into pinned host memory behind an
    event) and reads the vote it sent ``every`` steps before, long finished by then; so every rank
    gets the same answer at the same step, within 2 x ``every`` steps of the request, and the GPU
    queue is never drained for it (a blocking ``.item()`` waits for all queued work).
    Call ``close()`` after the last poll: it waits for the vote still in flight."""

    def __init__(self, info: DistInfo, every: int):
        self.info, self.every = info, max(int(every), 1)
        self._pending = None

    def poll(self, flag: bool, step: int) -> bool:
        if not self.info.enabled:
            return flag
        if step % self.every:
            return False
        result = self._read() if self._pending is not None else False
        self._pending = self._send(flag)
        return result

    def _send(self, flag: bool):
        dev = self.info.device
        if dev.type != 'cuda':
            t = torch.tensor([1.0 if flag else 0.0])
            return dist.all_reduce(t, async_op=True), t, None
        host = torch.tensor([1.0 if flag else 0.0]).pin_memory()
        t = host.to(dev, non_blocking=True)
        dist.all_reduce(t, async_op=True).wait()     # NCCL: the stream waits for it, the host does not
        out = torch.empty(1, pin_memory=True)
        out.copy_(t, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return None, out, done

    def _read(self) -> bool:
        work, out, done = self._pending
        self._pending = None
        if work is not None:
            work.wait()
        if done is not None:
            done.synchronize()      # recorded `every` steps ago: finished, nothing to wait for
        return bool(out[0] > 0)

    def close(self) -> None:
        if self._pending is not None:
            self._read()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def parameter_spread(modules: list[torch.nn.Module], info: DistInfo) -> float:
    """How far the ranks' weights have drifted apart: the largest difference, over ranks, of a
    float64 checksum of every parameter (each tensor's sum times its position, so that swapped
    or offsetting changes still show). 0.0 when every rank holds the same weights (they should,
    bit for bit: all apply the same averaged gradients); 0.0 on one rank. Buffers are left out:
    tracked statistics such as the mapping's w_avg follow each rank's own latents."""
    if not info.enabled:
        return 0.0
    tensors = [t for m in modules for t in m.parameters()]
    sums = torch.stack([t.detach().double().sum() for t in tensors])
    checksum = (sums * torch.arange(1, len(tensors) + 1, dtype=torch.float64, device=sums.device)).sum().reshape(1)
    gathered = [torch.zeros_like(checksum) for _ in range(info.world_size)]
    dist.all_gather(gathered, checksum)
    values = torch.cat(gathered)
    return float((values - values[0]).abs().max())

"""Averaging one network's gradients over the ranks, overlapped with the backward pass.

A `GradientSync` wraps each optimiser step's forward + backward of one network:

    sync.begin(key)       # every .grad becomes a zeroed view into a flat bucket buffer
    loss.backward()       # a bucket is all-reduced (asynchronously) as soon as its gradients are in
    sync.finish()         # the remaining buckets are sent; wait; / rank count; NaN/Inf -> 0, +-1e5
    opt.step()

Mode 'overlap' (the default) works as torch's DistributedDataParallel does. The gradients live
in buckets of about `bucket_mib` MiB (the first one 1 MiB, so that the exchange starts early), one
flat buffer per network, with each parameter's .grad a view into it; autograd accumulates into
those views in place. A hook on every parameter (`register_post_accumulate_grad_hook`) counts the
gradients that have arrived; a complete bucket is sent while autograd works on the rest of the
graph. Buckets are sent strictly in bucket order, the same on every rank (NCCL and gloo pair
collectives by their order). They are laid out in reverse parameter order at first and, after the
first pass, in the order the gradients arrived on rank 0 (broadcast once), so that the bucket sent
first is the one completed first.

Mode 'flat' is the reference: one all-reduce of all gradients after the whole backward
(`distributed.average_gradients`). Both modes give the same averaged gradients; with two ranks
bit for bit (a + b = b + a), with more within the rounding of a different summation order.

Parameters that get no gradient in a pass (sphere B's head when sphere A is drawn, the parts a
regulariser does not touch) hold zeros, are exchanged like the others and reach Adam as zero
gradients on every rank, as in the flat path: the ranks' weights stay identical.

Keys. A pass may be named (`begin('g_main/A')`); the parameters that got a gradient the last time
a pass of the same name ran are the ones waited for, so a bucket of parameters this pass does not
use is sent at once instead of holding back the buckets after it until the end. A pass must call
backward once, and passes that use different parameters need different names: a gradient that
arrives for a bucket already sent is an error (its value would be lost), named with the parameter.

On one rank nothing is exchanged and no hook is registered: 'overlap' then only keeps the
gradients in the flat buffer (no concatenation and copy back), and NaN/Inf are replaced in place.
"""
from __future__ import annotations

import warnings

import torch
import torch.distributed as dist

from spherehead.train.distributed import DistInfo, average_gradients

GRAD_SYNC_MODES = ('overlap', 'flat')
FIRST_BUCKET_MIB = 1.0

_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def bucket_plan(sizes_bytes: list[int], order: list[int], cap_bytes: int, first_cap_bytes: int) -> list[list[int]]:
    """Split parameter indices, in ``order``, into consecutive buckets: a bucket closes once it holds
    at least its cap (the first bucket ``first_cap_bytes``, the others ``cap_bytes``)."""
    buckets: list[list[int]] = []
    current: list[int] = []
    size, cap = 0, first_cap_bytes
    for i in order:
        current.append(i)
        size += sizes_bytes[i]
        if size >= cap:
            buckets.append(current)
            current, size, cap = [], 0, cap_bytes
    if current:
        buckets.append(current)
    return buckets


class GradientSync:
    """The gradient exchange of one network (see the module docstring).

    module: the network whose parameters the optimiser steps (all of them, trainable or not in a
    given pass). mode: 'overlap' or 'flat'. bucket_mib: bucket size in MiB. hooks: register the
    per-parameter hooks and do the bucket bookkeeping also on one rank (benchmarks of that cost;
    nothing is exchanged); default: only with several ranks.
    """

    def __init__(self, module: torch.nn.Module, info: DistInfo, mode: str = 'overlap', bucket_mib: float = 25.0,
                 hooks: bool | None = None):
        if mode not in GRAD_SYNC_MODES:
            raise ValueError(f"grad_sync must be one of {', '.join(GRAD_SYNC_MODES)}, got {mode!r}")
        if not bucket_mib > 0:
            raise ValueError(f'bucket_mib must be > 0, got {bucket_mib}')
        self.info = info
        named = list(module.named_parameters())
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.mode = mode
        if mode == 'overlap':
            why = self._overlap_unsupported()
            if why:
                _warn_once(f'spherehead: gradient exchange overlapped with the backward pass is off ({why}); '
                           'using one flat all-reduce after it')
                self.mode = 'flat'
        self.cap_bytes = max(int(bucket_mib * 2 ** 20), 1)
        self.first_cap_bytes = min(self.cap_bytes, int(FIRST_BUCKET_MIB * 2 ** 20))
        self.hooks_on = self.mode == 'overlap' and (info.enabled if hooks is None else hooks)
        self._handles = []
        self._expected: dict[str, list[bool]] = {}
        self._active = False
        self._arrival: list[int] | None = [] if self.hooks_on else None   # first pass: order of arrival
        self._relayout_pending = False
        self._first_order: list[int] = []
        self.flat: torch.Tensor | None = None
        if self.mode == 'overlap':
            self._lay_out(list(reversed(range(len(self.params)))))
        if self.hooks_on:
            for i, p in enumerate(self.params):
                trainable = p.requires_grad       # the trainer switches networks on and off per pass;
                p.requires_grad_(True)            # a hook can only be registered while it is on
                self._handles.append(p.register_post_accumulate_grad_hook(lambda _p, i=i: self._arrived(i)))
                p.requires_grad_(trainable)

    # ------------------------------------------------------------------ set-up
    def _overlap_unsupported(self) -> str:
        """Why the bucketed path cannot run here ('' when it can)."""
        if not self.params:
            return 'the network has no parameters'
        if not hasattr(torch.Tensor, 'register_post_accumulate_grad_hook'):
            return f'torch {torch.__version__} has no register_post_accumulate_grad_hook (torch >= 2.1 does)'
        kinds = {(p.dtype, p.device) for p in self.params}
        if len(kinds) > 1:
            return f'parameters of several dtypes or devices: {sorted(str(k) for k in kinds)}'
        if not all(p.is_contiguous() for p in self.params):
            return 'a parameter is not contiguous'
        return ''

    def _lay_out(self, order: list[int]) -> None:
        """Buckets over the parameters in ``order``; one zeroed flat buffer; every .grad a view into it."""
        p0 = self.params[0]
        sizes = [p.numel() * p.element_size() for p in self.params]
        self.buckets = bucket_plan(sizes, order, self.cap_bytes, self.first_cap_bytes)
        self.flat = torch.zeros(sum(p.numel() for p in self.params), dtype=p0.dtype, device=p0.device)
        self.bucket_of = [0] * len(self.params)
        self.bucket_range: list[tuple[int, int]] = []
        self.views: list[torch.Tensor] = [p0] * len(self.params)
        offset = 0
        for b, indices in enumerate(self.buckets):
            start = offset
            for i in indices:
                n = self.params[i].numel()
                self.views[i] = self.flat[offset:offset + n].view_as(self.params[i])
                self.bucket_of[i] = b
                offset += n
            self.bucket_range.append((start, offset))
        for p, v in zip(self.params, self.views):
            p.grad = v

    def _relayout_by_arrival(self) -> None:
        """Lay the buckets out in the order the first pass's gradients arrived on rank 0 (the parameters
        that got none last, in reverse order); every rank takes rank 0's order."""
        arrived = self._first_order
        seen = set(arrived)
        order = arrived + [i for i in reversed(range(len(self.params))) if i not in seen]
        if self.info.enabled:
            t = torch.tensor(order, dtype=torch.int64, device=self.info.device)   # once a run: a host sync is fine
            dist.broadcast(t, src=0)
            order = t.tolist()
        self._lay_out(order)

    def close(self) -> None:
        """Remove the hooks (the gradients stay where they are)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.hooks_on = False

    # ------------------------------------------------------------------ one pass
    def begin(self, key: str | None = None) -> None:
        """Before the pass's forward: gradients zeroed (flat: None, as zero_grad(set_to_none=True))."""
        if self.mode == 'flat':
            for p in self.params:
                p.grad = None
            return
        if self._relayout_pending:
            self._relayout_pending = False
            self._relayout_by_arrival()
        else:
            self.flat.zero_()
            for p, v in zip(self.params, self.views):
                if p.grad is not v:           # someone set it to None (zero_grad) or replaced it
                    p.grad = v
        if not self.hooks_on:
            return
        expected = self._expected.get(key) if key is not None else None
        self._key, self._expect = key, expected
        self._pending = [sum(1 for i in indices if expected is None or expected[i]) for indices in self.buckets]
        self._got = [False] * len(self.params)
        self._works: list = [None] * len(self.buckets)
        self._next = 0
        self._active = True
        self._send_ready()

    def _arrived(self, i: int) -> None:
        """Hook: parameter i's gradient for this pass is complete (it has been accumulated into its view)."""
        if not self._active:
            return        # a backward outside begin()/finish(): not exchanged (begin() zeroes it)
        if self._got[i]:
            raise RuntimeError(f'{self.names[i]} got a second gradient in one pass: a pass must call backward '
                               'once (or train with --grad-sync flat)')
        self._got[i] = True
        if self._arrival is not None:
            self._arrival.append(i)
        b = self.bucket_of[i]
        if b < self._next:
            raise RuntimeError(f'{self.names[i]} got a gradient after its bucket was sent: the pass '
                               f'{self._key!r} used it but did not the last time; give passes that use different '
                               'parameters different keys (or train with --grad-sync flat)')
        if self._expect is None or self._expect[i]:
            self._pending[b] -= 1
            if self._pending[b] == 0:
                self._send_ready()

    def _send_ready(self) -> None:
        """Send the complete buckets at the head of the order."""
        while self._next < len(self.buckets) and self._pending[self._next] == 0:
            self._send(self._next)
            self._next += 1

    def _send(self, b: int) -> None:
        if self.info.enabled:
            start, end = self.bucket_range[b]
            self._works[b] = dist.all_reduce(self.flat[start:end], async_op=True)

    def finish(self) -> None:
        """After the pass's backward: every gradient averaged over the ranks, NaN -> 0, +-Inf -> +-1e5."""
        if self.mode == 'flat':
            average_gradients(self.params, self.info)
            return
        if self.hooks_on:
            self._active = False
            for b in range(self._next, len(self.buckets)):   # buckets with a parameter that got no gradient
                self._send(b)
            self._next = len(self.buckets)
            for work in self._works:
                if work is not None:
                    work.wait()    # NCCL: the current stream waits for the exchange, not the host
            self._works = []       # a finished Work still holds the process group (and its threads)
            if self._key is not None:
                self._expected[self._key] = self._got
            if self._arrival is not None:      # the first pass: lay the buckets out by its order next time
                self._first_order, self._arrival, self._relayout_pending = self._arrival, None, True
        if self.info.enabled:
            self.flat.div_(self.info.world_size)
        torch.nan_to_num(self.flat, nan=0, posinf=1e5, neginf=-1e5, out=self.flat)

"""Data for training: an endless, rank-sharded stream of real batches and of camera labels.

Each rank reads its own shard of one shared random order (rank r takes items r, r + W, ...),
so the ranks together see each item once per pass. Phase I streams the near-front subset of
the data; later phases the whole dataset (two HeadDataset views of the same files).
"""
from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import torch

from spherehead.data.dataset import DatasetOptions, HeadDataset
from spherehead.train.distributed import DistInfo


class InfiniteShardSampler(torch.utils.data.Sampler):
    """Endless indices of one rank's shard of a reshuffled order (new permutation each pass),
    starting after the first ``start`` indices (what a resumed run had already consumed)."""

    def __init__(self, size: int, rank: int, world_size: int, seed: int, start: int = 0):
        self.size, self.rank, self.world, self.seed, self.start = size, rank, world_size, seed, start

    def __iter__(self) -> Iterator[int]:
        shard = len(range(self.rank, self.size, self.world))
        epoch, skip = divmod(self.start, shard) if shard else (0, 0)
        while True:
            order = np.random.RandomState([self.seed, epoch]).permutation(self.size)
            yield from order[self.rank::self.world][skip:].tolist()
            epoch, skip = epoch + 1, 0


class RealStream:
    """Endless batches of ``batch_gpu`` real items for one rank, plus random dataset labels for fakes."""

    def __init__(self, dataset: HeadDataset, batch_gpu: int, info: DistInfo, seed: int, workers: int,
                 consumed: int = 0):
        self.dataset = dataset
        self.info = info
        self.batch_gpu = batch_gpu
        self.consumed = consumed              # items this rank has taken (saved for an exact resume)
        sampler = InfiniteShardSampler(len(dataset), info.rank, info.world_size, seed, start=consumed)
        # Its own generator: an iterator draws its worker base seed from it, and from the global
        # RNG otherwise, which would shift the step's random numbers on whichever step the stream
        # is opened (a resumed run opens it later than an uninterrupted one).
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_gpu, sampler=sampler, num_workers=workers,
            generator=torch.Generator().manual_seed(seed * 1000 + info.rank),
            pin_memory=info.device.type == 'cuda', persistent_workers=workers > 0,
            prefetch_factor=2 if workers > 0 else None)
        self._it = iter(self.loader)
        # Labels of every item (mirrored for flipped copies), for sampling the fakes' cameras; kept
        # on the device, so drawing them needs only the indices copied there.
        self.labels = torch.stack([dataset.get_label(i) for i in range(len(dataset))]).to(info.device)

    def next(self) -> dict[str, torch.Tensor]:
        """Next batch on this rank's device: image [N,3,R,R] uint8, label [N,25], mask, parsing."""
        batch = next(self._it)
        self.consumed += self.batch_gpu
        dev = self.info.device
        return {k: v.to(dev, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}

    def random_labels(self, n: int, rng: np.random.RandomState) -> torch.Tensor:
        """[n, 25] labels drawn uniformly from the dataset's items (cameras for the fakes)."""
        idx = torch.from_numpy(rng.randint(len(self.labels), size=n))
        if self.labels.is_cuda:
            # From pinned memory without blocking: a plain copy from host memory waits until the GPU
            # has finished all queued work, which stalled the pipeline two or three times a step.
            idx = idx.pin_memory().to(self.labels.device, non_blocking=True)
        return self.labels[idx]


def open_datasets(options: DatasetOptions, front_yaw_deg: float) -> tuple[HeadDataset, HeadDataset]:
    """(all data, near-front data |yaw| < front_yaw_deg) of the same files."""
    full = HeadDataset(options)
    front = HeadDataset(dataclasses.replace(options, front_only_deg=front_yaw_deg))
    return full, front

"""View re-balancing: duplicate samples of rare azimuth (yaw) bins.

Rule (SphereHead's re-balancing, constant configurable): split the yaw circle into
``bins`` equal bins; a bin holding ``n > 0`` samples gets the duplication count

    dup(n) = max(1, floor(constant / n))          (optionally capped at ``max_dup``)

so every sample of a bin with ``n >= constant`` appears once, and a rarer bin is
repeated until it holds about ``constant`` samples. The paper uses constant = 2000.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class RebalanceReport:
    """Per-bin counts of a re-balancing; ``edges_deg`` has ``bins + 1`` entries from -180 to 180."""
    edges_deg: np.ndarray
    counts: np.ndarray       # [bins] samples per bin before
    dup: np.ndarray          # [bins] duplication count per bin (0 for an empty bin)
    constant: int

    @property
    def total_before(self) -> int:
        return int(self.counts.sum())

    @property
    def total_after(self) -> int:
        return int((self.counts * self.dup).sum())

    def lines(self) -> list[str]:
        """Human-readable table, one line per non-empty bin plus a total."""
        out = [f'view re-balancing (constant {self.constant}): yaw bin, samples, x duplication -> samples']
        for i in range(len(self.counts)):
            if self.counts[i]:
                out.append(f'  [{self.edges_deg[i]:7.1f}, {self.edges_deg[i + 1]:7.1f})  {self.counts[i]:7d}  '
                           f'x{self.dup[i]:<4d} -> {self.counts[i] * self.dup[i]:7d}')
        out.append(f'  total {self.total_before} -> {self.total_after}')
        return out


def yaw_bin_index(yaw_deg: np.ndarray, bins: int) -> np.ndarray:
    """[N] yaw in degrees (any range) -> [N] bin index in [0, bins); bin 0 starts at -180."""
    wrapped = (np.asarray(yaw_deg, dtype=np.float64) + 180.0) % 360.0
    return np.minimum((wrapped / (360.0 / bins)).astype(np.int64), bins - 1)


def duplication_counts(counts: np.ndarray, constant: int = 2000, max_dup: int | None = None) -> np.ndarray:
    """[bins] samples per bin -> [bins] duplication count (0 for empty bins)."""
    counts = np.asarray(counts, dtype=np.int64)
    dup = np.where(counts > 0, np.maximum(1, constant // np.maximum(counts, 1)), 0)
    if max_dup is not None:
        dup = np.minimum(dup, max_dup)
    return dup.astype(np.int64)


def rebalance(yaw_deg: np.ndarray, bins: int = 36, constant: int = 2000,
              max_dup: int | None = None) -> tuple[np.ndarray, RebalanceReport]:
    """Indices of the re-balanced dataset and the report.

    yaw_deg: [N] yaw of each sample in degrees. Returns int64 [M] indices into the N samples,
    each sample repeated by its bin's duplication count, in ascending order.
    """
    if bins < 1 or constant < 1:
        raise ValueError('rebalance needs bins >= 1 and constant >= 1')
    idx = yaw_bin_index(yaw_deg, bins)
    counts = np.bincount(idx, minlength=bins)
    dup = duplication_counts(counts, constant, max_dup)
    order = np.repeat(np.arange(len(idx), dtype=np.int64), dup[idx])
    report = RebalanceReport(edges_deg=np.linspace(-180.0, 180.0, bins + 1), counts=counts, dup=dup,
                             constant=constant)
    return order, report

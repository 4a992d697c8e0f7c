"""Fréchet distance and kernel inception distance between two feature sets.

Both follow the StyleGAN / EG3D metric code in what they compute (so numbers compare with
published ones): statistics in float64, the population covariance (divided by N, not N-1),
and KID as the unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / d + 1)^3,
averaged over random subsets of at most 1000 items.
"""
from __future__ import annotations

import numpy as np


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite [d, d] matrix (eigenvalues clipped at 0)."""
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2): mu [d], sigma [d, d].

    d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)). The trace of (S1 S2)^(1/2) is taken
    as the sum of square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2), which is symmetric
    PSD with the same spectrum as S1 S2; this avoids the complex round-off a general matrix
    square root produces for nearly singular covariances.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(f'frechet_distance: shapes do not match (mu {mu1.shape}, {mu2.shape}; '
                         f'sigma {s1.shape}, {s2.shape})')
    r = _psd_sqrt(s1)
    eig = np.linalg.eigvalsh(r @ s2 @ r)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    d2 = np.square(mu1 - mu2).sum() + np.trace(s1) + np.trace(s2) - 2 * tr_covmean
    return float(d2)


def kernel_inception_distance(real: np.ndarray, gen: np.ndarray, num_subsets: int = 100,
                              max_subset_size: int = 1000, seed: int = 0) -> float:
    """KID between feature sets real [N, d] and gen [M, d] (unbiased MMD^2, cubic kernel).

    Each of ``num_subsets`` rounds draws m = min(N, M, max_subset_size) items of each set
    without replacement (numpy RandomState(seed), so the result is reproducible).
    """
    real, gen = np.asarray(real, np.float64), np.asarray(gen, np.float64)
    if real.ndim != 2 or gen.ndim != 2 or real.shape[1] != gen.shape[1]:
        raise ValueError(f'kernel_inception_distance: need [N, d] and [M, d] features, got {real.shape}, {gen.shape}')
    n = real.shape[1]
    m = min(real.shape[0], gen.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(f'kernel_inception_distance: need at least 2 items per set, got {real.shape[0]} and {gen.shape[0]}')
    rng = np.random.RandomState(seed)
    total = 0.0
    for _ in range(num_subsets):
        x = gen[rng.choice(gen.shape[0], m, replace=False)]
        y = real[rng.choice(real.shape[0], m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        total += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(total / num_subsets / m)

"""Float32 error bounds for tests that compare two computations of the same maths on the CPU.

Two float32 computations of one expression differ because sums are accumulated in another
order (the BLAS's blocking, the SIMD width, the split between threads: all change with the
CPU and OMP_NUM_THREADS) and because vectorised exp / log / sigmoid round differently from
scalar ones. A tolerance set a little above the differences one machine showed fails on the
next machine (issue 19: an AMD EPYC with 2 threads). The bounds here follow from the
quantities involved instead, so they hold on any CPU, BLAS and thread count:

- ``U = 2**-24``, float32's unit roundoff: a correctly rounded +, -, *, / (and a fused
  multiply-add) gives exact * (1 + d), |d| <= U. One ulp of x is at most 2 U |x|.
- A sum of n terms (products rounded once, or not at all with FMA), accumulated in ANY order
  or tree, is within ``gamma(n) * sum|terms|`` of the exact sum, gamma(n) = n U / (1 - n U)
  (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., section 3.1). For a
  matrix product with reduction length K plus a bias that is n = K + 1, and sum|terms| is
  the product of the absolute values, |a| @ |b| + |bias|: :func:`dot_bound`. Two
  computations in different orders are each within that of the exact value, so they differ
  by at most twice it.
- Vectorised elementwise maths (SLEEF's *_u10 functions in PyTorch's AVX2 / AVX-512 / NEON
  kernels, glibc's libm in scalar loops and tails, MKL's VML in its HA mode where a build uses
  it) is within 1 ulp;
  a composite such as sigmoid = 1 / (1 + exp(-x)) adds two roundings. ``MATH_ULPS`` = 4 ulps
  per function covers all of them with room.

The bounds are worst cases: on random data the measured differences are usually 10-100x
smaller, which is the price of a tolerance that holds everywhere. A real defect in a fast
path (a wrong term, a dropped bias, a missed constant) is orders of magnitude larger.
Bounds are evaluated in float64 (their own rounding is negligible); products of two errors
(relative size (K U)^2, below 1e-8 here) are covered by the factor ``SECOND_ORDER``.
"""
from __future__ import annotations

import torch

U = 2.0 ** -24          # float32 unit roundoff
MATH_ULPS = 4           # ulps of one vectorised elementwise function (exp, log, log1p, sigmoid)
SECOND_ORDER = 1.01     # covers the neglected products of two rounding errors


def gamma(n: int) -> float:
    """Higham's gamma_n = n u / (1 - n u): relative bound of a float32 sum of n terms in any order."""
    return n * U / (1 - n * U)


def dot_bound(a_abs: torch.Tensor, b_abs: torch.Tensor, bias_abs: torch.Tensor | float = 0.0) -> torch.Tensor:
    """Bound on |computed - exact| for float32 ``bias + a @ b`` in any accumulation order, elementwise.

    a_abs [M, K], b_abs [K, N], bias_abs broadcastable to [M, N]: absolute values (float64).
    """
    k = a_abs.shape[-1]
    return gamma(k + 1) * (a_abs @ b_abs + bias_abs)


def chain(*terms: int) -> float:
    """Relative bound of one float32 evaluation of a chain of linear steps, step i a sum of
    terms[i] products (a single rounding, e.g. scaling by a constant, counts 1):
    sum(gamma(t)), to first order, relative to the chain's absolute-value evaluation."""
    return sum(gamma(t) for t in terms)


def difference_bound(magnitude_a: torch.Tensor, terms_a: tuple[int, ...], terms_b: tuple[int, ...],
                     magnitude_b: torch.Tensor | None = None) -> torch.Tensor:
    """Bound on |a - b| for two float32 evaluations of one linear map, elementwise: each within
    chain(*terms) of its absolute-value evaluation (float64; magnitude_b defaults to magnitude_a,
    right when both paths apply the same non-negative kernels, in any order) of the exact value."""
    magnitude_b = magnitude_a if magnitude_b is None else magnitude_b
    return SECOND_ORDER * (chain(*terms_a) * magnitude_a + chain(*terms_b) * magnitude_b)


def math_abs_error(value_abs: torch.Tensor, functions: float = 1.0) -> torch.Tensor:
    """Bound on the error of ``functions`` chained-in-sequence vectorised elementwise functions
    whose result has magnitude value_abs: MATH_ULPS ulps each, an ulp <= 2 U |value|."""
    return functions * MATH_ULPS * 2 * U * value_abs


def assert_within(got: torch.Tensor, ref: torch.Tensor, bound: torch.Tensor, what: str = '') -> float:
    """Assert |got - ref| <= bound elementwise (float64 comparison); returns the largest
    fraction of the bound used (for reports)."""
    assert got.shape == ref.shape, (what, tuple(got.shape), tuple(ref.shape))
    err = (got.double() - ref.double()).abs()
    bound = torch.broadcast_to(bound.double() if torch.is_tensor(bound) else torch.tensor(float(bound)), err.shape)
    used = (err / bound.clamp_min(1e-300)).max().item() if err.numel() else 0.0
    if not bool((err <= bound).all()):
        i = int((err - bound).argmax())
        raise AssertionError(f'{what}: |difference| {err.flatten()[i].item():.3e} above its float32 bound '
                             f'{bound.flatten()[i].item():.3e} at flat index {i} '
                             f'(got {got.flatten()[i].item():.8g}, reference {ref.flatten()[i].item():.8g})')
    return used

"""The dual-sphere kernel's point-gradient maths, mirrored in PyTorch (spherehead.ops.dual_sphere.
_point_grad_mirror), against autograd through the reference sampler on the CPU in float64:
modes A, B, fused and one sphere; odd sizes; points inside and outside the box, near the poles
and seams; at the poles and the origin (where autograd gives NaN) the mirror stays finite."""
import math

import pytest
import torch

from spherehead.ops.dual_sphere import _point_grad_mirror
from spherehead.render.spherical import sample_dual_sphere

D64 = torch.float64


def _planes(N=2, C=5, H=7, W=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(N, 3, C, H, W, generator=g, dtype=D64), torch.randn(N, 3, C, H, W, generator=g, dtype=D64))


def _autograd(pA, pB, points, box, sphere, up=None):
    """(d <features, up> / d points by autograd through the reference, up)."""
    pts = points.detach().requires_grad_(True)
    f, _ = sample_dual_sphere(pA, pB, pts, box, sphere)
    if up is None:
        up = torch.randn(f.shape, generator=torch.Generator().manual_seed(1), dtype=D64)
    (g,) = torch.autograd.grad(f, pts, up)
    return g, up


def _random_points(N, M, spread, box, seed=2):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(N, M, 3, generator=g, dtype=D64) * 2 - 1) * spread * box / 2


@pytest.mark.parametrize('box', [1.0, 0.7])
@pytest.mark.parametrize('sphere', ['A', 'B', 'fused'])
def test_mirror_matches_autograd_inside_box(sphere, box):
    pA, pB = _planes()
    points = _random_points(2, 37, 0.95, box)               # |q| < 1 per axis: inside the box
    ref, up = _autograd(pA, pB, points, box, sphere)
    ours = _point_grad_mirror(pA, pB, points, box, sphere, up)
    assert ours.shape == points.shape and ref.abs().max() > 1.0
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10 * ref.abs().max().item())


@pytest.mark.parametrize('sphere', ['A', 'fused'])
def test_mirror_single_sphere(sphere):
    pA, _ = _planes(N=1, C=3, H=9, W=6)
    points = _random_points(1, 53, 1.4, 1.0)
    ref, up = _autograd(pA, None, points, 1.0, 'A')
    ours = _point_grad_mirror(pA, None, points, 1.0, sphere, up)   # one sphere: mode A whatever asked
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10 * ref.abs().max().item())


@pytest.mark.parametrize('sphere', ['A', 'B', 'fused'])
def test_mirror_outside_box_zero_padding(sphere):
    H = 7
    pA, pB = _planes(H=H, W=10)
    points = _random_points(2, 61, 5.0, 1.0)                 # |q| up to 5: most points outside the box
    q = points * 2
    r_n = q.norm(dim=-1) * 2 / math.sqrt(3) - 1
    far = r_n >= 1 + 1.0 / H                                 # planes (theta, r), (phi, r): all taps outside
    assert far.sum() > 20 and (~far).sum() > 5
    ref, up = _autograd(pA, pB, points, 1.0, sphere)
    ours = _point_grad_mirror(pA, pB, points, 1.0, sphere, up)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10 * ref.abs().max().item())
    # There only the (theta, phi) plane and the weights act, and they do not change along the ray
    # from the origin: the radial component of the gradient is 0.
    radial = (ours * points).sum(-1) / points.norm(dim=-1)
    assert radial[far].abs().max() < 1e-10 * ours.abs().max()
    assert radial[~far].abs().max() > 1e-3                  # and the test would see a radial term


def _near_singular_points(eps: float) -> torch.Tensor:
    """[1, 16, 3] points at distance eps (relative) from each sphere's poles and seam, box 1."""
    g = torch.Generator().manual_seed(3)
    rows = []
    for axis_point in ([0.35, 0, 0], [-0.3, 0, 0],            # A's poles (x axis)
                       [0, 0.35, 0], [0, -0.3, 0],            # B's poles (y axis)
                       [0, 0, -0.35], [0, 0.2, -0.3],         # A's seam: y-z plane, z < 0
                       [0, 0, 0.35], [0.2, 0, 0.3]):          # B's seam: x-z plane, z > 0
        base = torch.tensor(axis_point, dtype=D64)
        for _ in range(2):
            rows.append(base + eps * base.norm() * torch.randn(3, generator=g, dtype=D64))
    return torch.stack(rows)[None]


@pytest.mark.parametrize('eps', [1e-2, 1e-4])
@pytest.mark.parametrize('sphere', ['A', 'B', 'fused'])
def test_mirror_near_poles_and_seams(sphere, eps):
    pA, pB = _planes(N=1, C=4, H=8, W=13)
    points = _near_singular_points(eps)
    ref, up = _autograd(pA, pB, points, 1.0, sphere)
    ours = _point_grad_mirror(pA, pB, points, 1.0, sphere, up)
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(ours, ref, rtol=1e-8, atol=1e-9 * ref.abs().max().item())


@pytest.mark.parametrize('sphere', ['A', 'B', 'fused'])
def test_mirror_exactly_at_poles_seams_and_origin(sphere):
    """Poles (rho = 0 in a frame): phi_n is undefined; autograd through atan2 gives NaN there, the
    mirror (and kernel) drop that sphere's d phi_n and the (a, b) part of d theta_n: finite, and equal
    to autograd in every component autograd gives. Seams: nothing singular, all components agree."""
    pA, pB = _planes(N=1, C=4, H=8, W=13)
    poles = torch.tensor([[0.4, 0, 0], [-0.3, 0, 0], [0, 0.4, 0], [0, -0.3, 0], [0, 0, 0]], dtype=D64)
    seams = torch.tensor([[0, 0, -0.4], [0, 0.25, -0.3], [0, 0, 0.4], [0.25, 0, 0.3], [0.4, 0, -0.2]], dtype=D64)
    points = torch.cat([poles, seams])[None]
    ref, up = _autograd(pA, pB, points, 1.0, sphere)
    ours = _point_grad_mirror(pA, pB, points, 1.0, sphere, up)
    assert torch.isfinite(ours).all()
    assert torch.isfinite(ref[0, len(poles):]).all()
    assert torch.isnan(ref[0, :len(poles)]).any()           # why the kernel has its own rule there
    ok = torch.isfinite(ref)
    torch.testing.assert_close(ours[ok], ref[ok], rtol=1e-10, atol=1e-10 * ref[ok].abs().max().item())
    assert (ours[0, 4] == 0).all()                          # the origin: every Jacobian row is 0


def test_mirror_is_linear_in_upstream_grad():
    """Point gradients of a sum of upstream grads = the sum (the kernel reduces over channels)."""
    pA, pB = _planes(N=1, C=6, H=5, W=5)
    points = _random_points(1, 19, 1.2, 1.0)
    g = torch.Generator().manual_seed(4)
    u1, u2 = (torch.randn(1, 19, 6, generator=g, dtype=D64) for _ in range(2))
    a = _point_grad_mirror(pA, pB, points, 1.0, 'fused', u1)
    b = _point_grad_mirror(pA, pB, points, 1.0, 'fused', u2)
    torch.testing.assert_close(_point_grad_mirror(pA, pB, points, 1.0, 'fused', u1 + u2), a + b)
    assert (_point_grad_mirror(pA, pB, points, 1.0, 'fused', torch.zeros_like(u1)) == 0).all()

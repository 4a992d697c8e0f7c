"""Spherical coordinates, weight map and dual-sphere sampling against hand-computed values
and an independent (gather-based) bilinear sampler."""
import math

import numpy as np
import pytest
import torch

from spherehead.render.spherical import (sample_dual_sphere, sphere_weights, spherical_coordinates,
                                         sphere_weight_map)

BOX = 1.0
R = 0.3  # world units, inside the box


def pt(*xyz):
    return torch.tensor([xyz], dtype=torch.float64)


def test_front_point_belongs_to_A_back_point_to_B():
    wA, wB = sphere_weights(pt(0, 0, R), BOX)
    assert wA.item() == pytest.approx(1.0, abs=1e-12) and wB.item() == pytest.approx(0.0, abs=1e-12)
    wA, wB = sphere_weights(pt(0, 0, -R), BOX)
    assert wA.item() == pytest.approx(0.0, abs=1e-12) and wB.item() == pytest.approx(1.0, abs=1e-12)


def test_ear_axis_is_a_pole_of_A_and_top_a_pole_of_B():
    for x in (R, -R):
        theta_n, _, _ = spherical_coordinates(pt(x, 0, 0), BOX, 'A')
        assert abs(theta_n.item()) == pytest.approx(1.0)
        wA, wB = sphere_weights(pt(x, 0, 0), BOX)
        # B sees the ear axis on its equator at phi_n = -+0.5: weight (1 + cos(pi/2)) / 2 = 0.5
        assert wA.item() == pytest.approx(0.0, abs=1e-12) and wB.item() == pytest.approx(0.5)
    for y in (R, -R):
        theta_n, _, _ = spherical_coordinates(pt(0, y, 0), BOX, 'B')
        assert abs(theta_n.item()) == pytest.approx(1.0)
        wA, wB = sphere_weights(pt(0, y, 0), BOX)
        assert wB.item() == pytest.approx(0.0, abs=1e-12) and wA.item() == pytest.approx(0.5)


def test_coordinates_match_hand_formulas():
    rng = np.random.RandomState(1)
    p = rng.uniform(-0.5, 0.5, size=(50, 3))
    theta_n, phi_n, r_n = spherical_coordinates(torch.tensor(p), BOX, 'B')
    for i, (x, y, z) in enumerate(p * 2 / BOX):
        a, b, c = -z, -x, y
        r = math.sqrt(x * x + y * y + z * z)
        assert r_n[i].item() == pytest.approx(2 * r / math.sqrt(3) - 1)
        assert theta_n[i].item() == pytest.approx(2 * math.atan2(math.hypot(a, b), c) / math.pi - 1)
        assert phi_n[i].item() == pytest.approx(math.atan2(b, a) / math.pi)


def test_weights_never_vanish_together_away_from_origin():
    rng = np.random.RandomState(2)
    d = rng.normal(size=(20000, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    p = torch.tensor(d * rng.uniform(0.01, 0.5, size=(20000, 1)))
    wA, wB = sphere_weights(p, BOX)
    assert (wA + wB).min().item() > 0.2   # the two leathers of a baseball cover each other's seams


def test_weight_map_values():
    t = torch.tensor([0.0, 1.0, -1.0, 0.0, 0.5])
    p = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0])
    assert sphere_weight_map(t, p).tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0, 0.5])


def bilinear_gather(plane, gx, gy):
    """Independent bilinear sampler: plane [C, H, W], grid coords [M] in [-1, 1] (align_corners=False,
    zero padding) -> [M, C], written with explicit corner gathers."""
    C, H, W = plane.shape
    x = (gx + 1) * W / 2 - 0.5
    y = (gy + 1) * H / 2 - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    out = torch.zeros(gx.shape[0], C, dtype=plane.dtype)
    for dx in (0, 1):
        for dy in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            w = (1 - (x - xi).abs()) * (1 - (y - yi).abs())
            ok = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
            v = plane[:, yi.clamp(0, H - 1).long(), xi.clamp(0, W - 1).long()].T
            out = out + v * (w * ok)[:, None]
    return out


def independent_dual_sphere(pA, pB, points, sphere):
    """features [N, M, C] computed per sphere with hand formulas and the gather sampler."""
    N, M, _ = points.shape
    feats = []
    for n in range(N):
        per_sphere, weights = {}, {}
        for name, planes in (('A', pA), ('B', pB)):
            t, ph, r = spherical_coordinates(points[n], BOX, name)
            weights[name] = sphere_weight_map(t, ph)
            coords = [(t, ph), (t, r), (ph, r)]
            per_sphere[name] = torch.stack([bilinear_gather(planes[n, k], *coords[k]) for k in range(3)])
        if sphere == 'fused':
            wA, wB = weights['A'][None, :, None], weights['B'][None, :, None]
            f = (per_sphere['A'] * wA + per_sphere['B'] * wB) / (wA + wB + 1e-8)
        else:
            f = per_sphere[sphere]
        feats.append(f.mean(0))
    return torch.stack(feats)


@pytest.mark.parametrize('sphere', ['A', 'B', 'fused'])
def test_sampler_matches_independent_implementation_values_and_gradients(sphere):
    g = torch.Generator().manual_seed(3)
    pA = torch.randn(2, 3, 4, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    pB = torch.randn(2, 3, 4, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    points = (torch.rand(2, 64, 3, generator=g, dtype=torch.float64) - 0.5) * 0.95
    ours, own = sample_dual_sphere(pA, pB, points, BOX, sphere)
    ref = independent_dual_sphere(pA, pB, points, sphere)
    assert torch.allclose(ours, ref, atol=1e-10)
    wA, wB = sphere_weights(points, BOX)
    assert torch.allclose(own, wA / (wA + wB + 1e-8))
    upstream = torch.randn_like(ours)
    gA, gB = torch.autograd.grad((ours * upstream).sum(), (pA, pB), allow_unused=True)
    rA, rB = torch.autograd.grad((ref * upstream).sum(), (pA, pB), allow_unused=True)
    for a, b in ((gA, rA), (gB, rB)):
        if a is None or b is None:
            assert (a is None or a.abs().max() == 0) and (b is None or b.abs().max() == 0)
        else:
            assert torch.allclose(a, b, atol=1e-10)


def test_fused_equals_A_where_B_weight_is_zero():
    # x = 0, z > 0 is sphere B's seam (in front of the face): wB = 0 there.
    g = torch.Generator().manual_seed(4)
    pA = torch.randn(1, 3, 4, 8, 8, generator=g, dtype=torch.float64)
    pB = torch.randn(1, 3, 4, 8, 8, generator=g, dtype=torch.float64)
    y = torch.linspace(-0.3, 0.3, 7, dtype=torch.float64)
    points = torch.stack([torch.zeros_like(y), y, torch.full_like(y, 0.25)], -1)[None]
    _, wB = sphere_weights(points, BOX)
    assert wB.abs().max() < 1e-12
    fused, _ = sample_dual_sphere(pA, pB, points, BOX, 'fused')
    only_a, _ = sample_dual_sphere(pA, pB, points, BOX, 'A')
    assert torch.allclose(fused, only_a, atol=1e-7)

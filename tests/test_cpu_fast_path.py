"""The CPU inference fast path (spherehead.ops.cpu_sampler, FeatureDecoder._forward_fast, the
importance renderer's merge, the visualizer's background memo) against the reference: values
within a stated tolerance, taken only with autograd off, off with SPHEREHEAD_NO_FAST_CPU=1,
and gradients unchanged.

Tolerances. The fast sampler and decoder do the reference's maths in another float32 order
(and softplus as relu(x) + log(1 + exp(-|x|))); how sums accumulate depends on the CPU, its
SIMD width, the BLAS and OMP_NUM_THREADS. Their outputs are held to bounds derived from
float32 rounding and the quantities involved (_sampler_difference_bound,
_decoder_difference_bound, tests/float32_bounds.py), which hold on any CPU and thread count
(issue 19: a tolerance set from one machine's differences failed on an AMD EPYC with 2
threads). Whole images are held to what a user could see instead: 1e-3 on [-1, 1] images
is 1/8 of a uint8 display level (docs/benchmarks.md has the measured differences).
The merge and the background memo move / reuse exactly the same numbers: bit-exact.
"""
import math

import numpy as np
import pytest
import torch

import spherehead as sh
from spherehead.networks.decoder import FeatureDecoder
from spherehead.ops import cpu_sampler as cs
from spherehead.ops import dual_sphere as ds
from spherehead.render import importance
from spherehead.render.spherical import (WEIGHT_EPS, sample_dual_sphere, sample_sphere, sphere_weight_map,
                                         spherical_from_frame, to_sphere_frame)

import float32_bounds as fb   # tests/float32_bounds.py

BOX = 1.0


def _inputs(N=2, M=700, C=8, H=16, W=None, spread=0.7, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = W or H
    pA = torch.randn(N, 3, C, H, W, generator=g)
    pB = torch.randn(N, 3, C, H, W, generator=g)
    points = (torch.rand(N, M, 3, generator=g) * 2 - 1) * spread * BOX
    return pA, pB, points


@pytest.fixture
def fast_on(monkeypatch):
    monkeypatch.delenv(cs.ENV_DISABLE_FAST_CPU, raising=False)
    monkeypatch.delenv(ds.ENV_DISABLE, raising=False)


# ----------------------------------------------------------------------------- sampler
def _plane_slopes(planes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, 3, C, H, W] -> (largest |step| along the width, along the height), each [N, 3, C]:
    bilinear interpolation moves by at most that per pixel of coordinate error (zero padding
    included, so the step from the border pixel to 0 counts)."""
    p = torch.nn.functional.pad(planes.double(), (1, 1, 1, 1))
    return (p.diff(dim=-1).abs().amax(dim=(-2, -1)), p.diff(dim=-2).abs().amax(dim=(-2, -1)))


def _sampler_difference_bound(planes_A, planes_B, points, box_warp, sphere):
    """Elementwise bounds on |fast_dual_sphere - sample_dual_sphere| in float32: (features
    [N, M, C], ownership [N, M]). Each path is held to the exact (float64) maths; the two
    differ by at most twice that. q = MATH_ULPS (tests/float32_bounds.py), u = 2^-24.

    Coordinates. theta_n = 2 atan2(rho, c) / pi - 1: atan2's q ulps (<= 2 q u pi), rho's relative
    2 u (u after the square root, u of its own rounding) moving the angle by <= u, then /pi and
    -1: d_theta = (4 q + 5) u. phi_n = atan2(b, a) / pi from exact components: (2 q + 2) u.
    r_n = 2 |q| / sqrt(3) - 1: |q| to relative 2.5 u, two more roundings: 6 u (|r_n| + 1).
    Pixel coordinates ((g + 1) W - 1) / 2 (+ 1 for the fast path's frame): (W / 2) d_g plus
    four roundings of values up to W + 2. Bilinear interpolation is continuous and moves by at
    most the plane's largest neighbour step (_plane_slopes) per pixel of coordinate error.
    Sums. Each path adds at most 4 P taps (P planes) with coefficients rounded a few times:
    gamma(4 P + 8) of sum |coefficient| |value|, which is the reference evaluated on |planes|.
    Fused weights. w = (1 + cos pi theta_n) (1 + cos pi phi_n) / 4: cos's q ulps and the angle
    error, d_w <= (pi / 2) (d_theta + d_phi + 2 u) + (2 q + 3) u; the share wA / D
    (D = wA + wB + eps) moves by (d_wA (wB + eps) + d_wB wA) / D^2 + 2 u share = d_w / D + 2 u
    share, times the sphere's sampled magnitude. The ownership output is A's share.
    """
    P64 = torch.float64
    q = points.double() * (2.0 / box_warp)
    u, m = fb.U, fb.MATH_ULPS
    d_theta, d_phi = (4 * m + 5) * u, (2 * m + 2) * u
    N, _, C, H, W = planes_A.shape
    spheres = ['A'] if planes_B is None else ['A', 'B']
    coords = {s: spherical_from_frame(to_sphere_frame(q, s)) for s in spheres}    # (theta_n, phi_n, r_n) [N, M]
    ones, zeros = torch.ones_like(q[..., 0]), torch.zeros_like(q[..., 0])
    if planes_B is None:                                  # ownership: ones in both paths, exactly
        shares, d_share, d_own = {'A': ones}, {'A': zeros}, zeros
    else:
        w = {s: sphere_weight_map(*coords[s][:2]) for s in spheres}
        d_w = math.pi / 2 * (d_theta + d_phi + 2 * u) + (2 * m + 3) * u
        D = w['A'] + w['B'] + WEIGHT_EPS
        shares = {s: w[s] / D for s in spheres}
        d_share = {s: d_w / D + 2 * u * shares[s] for s in spheres}
        d_own = d_share['A']
        if sphere != 'fused':                             # one sphere's planes, weight 1
            shares, d_share = {sphere: ones}, {sphere: zeros}
    err = torch.zeros(N, q.shape[1], C, dtype=P64)
    abs_sum = torch.zeros_like(err)
    taps = 0
    for s, share in shares.items():
        planes = (planes_A if s == 'A' else planes_B).double()
        theta, phi, r = coords[s]
        d_r = 6 * u * (r.abs() + 1)
        slope_x, slope_y = _plane_slopes(planes)                               # [N, 3, C]
        # (grid x = width axis, grid y = height axis) per plane: (theta, phi), (theta, r), (phi, r)
        d_g = [(d_theta, d_phi), (d_theta, d_r), (d_phi, d_r)]
        for k, (dx, dy) in enumerate(d_g):
            d_ix = W / 2 * dx + 4 * u * (W + 2)
            d_iy = H / 2 * dy + 4 * u * (H + 2)
            move = slope_x[:, k, None, :] * torch.as_tensor(d_ix)[..., None] \
                + slope_y[:, k, None, :] * torch.as_tensor(d_iy)[..., None]    # [N, M, C]
            err += share[..., None] / 3 * move
        magnitude = sample_sphere(planes.abs(), theta, phi, r).mean(1)          # [N, M, C]
        abs_sum += share[..., None] * magnitude
        err += d_share[s][..., None] * magnitude
        taps += 12
    err += fb.gamma(taps + 8) * abs_sum
    return 2 * fb.SECOND_ORDER * err, 2 * fb.SECOND_ORDER * d_own


@pytest.mark.parametrize('sphere', ['A', 'B', 'fused'])
@pytest.mark.parametrize('shape', [(2, 8, 16, 16), (1, 5, 12, 20), (1, 32, 64, 64)])
@pytest.mark.parametrize('spread', [0.7, 2.5])          # 2.5: many points beyond the planes (zero padding)
def test_fast_sampler_matches_reference(sphere, shape, spread):
    """Features and ownership within the float32 bound of _sampler_difference_bound (any CPU,
    SIMD width and thread count); it grows with the plane size, as coordinate rounding does."""
    N, C, H, W = shape
    pA, pB, points = _inputs(N=N, C=C, H=H, W=W, spread=spread)
    with torch.no_grad():
        f, o = cs.fast_dual_sphere(pA, pB, points, BOX, sphere)
        rf, ro = sample_dual_sphere(pA, pB, points, BOX, sphere)
    assert f.shape == rf.shape and o.shape == ro.shape and f.dtype == rf.dtype == torch.float32
    f_bound, o_bound = _sampler_difference_bound(pA, pB, points, BOX, sphere)
    fb.assert_within(f, rf, f_bound, 'features')
    fb.assert_within(o, ro, o_bound, 'ownership')
    # Tight enough to matter: a tenth of a bilinear step of these N(0, 1) planes (a wrong tap,
    # weight or plane moves a feature by ~1).
    assert f_bound.max() < 0.1 and o_bound.max() < 1e-4
    if spread > 1:                      # beyond r_n = 1 the (theta, r) and (phi, r) planes read zeros
        far = points.norm(dim=-1) > 2.0   # r_n > 1.3
        pA[:, 0], pB[:, 0] = 0, 0         # keep only those planes
        with torch.no_grad():
            f, _ = cs.fast_dual_sphere(pA, pB, points, BOX, sphere)
            rf, _ = sample_dual_sphere(pA, pB, points, BOX, sphere)
        assert far.any() and rf[far].abs().max() == 0 and f[far].abs().max() == 0
        assert f[~far].abs().max() > 0


def test_fast_sampler_single_sphere_edges_and_box_warp():
    pA, _, points = _inputs(N=1, M=500, C=4, H=9, W=7, spread=1.0)
    edge = torch.tensor([[[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, -0.8], [0.0, 0.9, 0.0]]])  # centre, seam, poles
    points = torch.cat([points, edge], 1)
    with torch.no_grad():
        f, o = cs.fast_dual_sphere(pA, None, points, 2.0, 'A')
        rf, ro = sample_dual_sphere(pA, None, points, 2.0, 'A')
        fb.assert_within(f, rf, _sampler_difference_bound(pA, None, points, 2.0, 'A')[0], 'features')
        assert torch.equal(o, ro)                                          # ones, both
        with pytest.raises(ValueError, match="single sphere"):
            cs.fast_dual_sphere(pA, None, points, 2.0, 'B')
        empty, own = cs.fast_dual_sphere(pA, pA, points[:, :0], 1.0, 'fused')
        assert empty.shape == (1, 0, 4) and own.shape == (1, 0)


def test_plane_rows_layout():
    pA, pB, _ = _inputs(N=2, C=3, H=4, W=5)
    rows = cs.plane_rows([pA, pB]).reshape(2, 6, 4 + cs.PAD, 5 + cs.PAD, 3)
    assert torch.equal(rows[1, 4, 1:5, 1:6], pB[1, 1].permute(1, 2, 0))
    frame = rows.clone()
    frame[:, :, 1:5, 1:6] = 0
    assert frame.abs().max() == 0


def test_dispatch_takes_fast_path_only_without_autograd(fast_on, monkeypatch):
    calls = []
    real = cs.fast_dual_sphere
    monkeypatch.setattr(cs, 'fast_dual_sphere', lambda *a: calls.append(1) or real(*a))
    pA, pB, points = _inputs()
    ref = sample_dual_sphere(pA, pB, points, BOX, 'fused')
    f, _ = ds.dual_sphere_features(pA, pB, points, BOX, 'fused')          # grad mode on: the reference
    assert not calls and torch.equal(f, ref[0])
    with torch.no_grad():
        f, _ = ds.dual_sphere_features(pA, pB, points, BOX, 'fused')
    assert len(calls) == 1
    fb.assert_within(f, ref[0], _sampler_difference_bound(pA, pB, points, BOX, 'fused')[0], 'features')
    with torch.inference_mode():
        ds.dual_sphere_features(pA, pB, points, BOX, 'A')
    assert len(calls) == 2
    with torch.no_grad():                                                  # float64: the reference
        ds.dual_sphere_features(pA.double(), pB.double(), points.double(), BOX, 'fused')
    assert len(calls) == 2
    for env in (cs.ENV_DISABLE_FAST_CPU, ds.ENV_DISABLE):
        monkeypatch.setenv(env, '1')
        with torch.no_grad():
            f, _ = ds.dual_sphere_features(pA, pB, points, BOX, 'fused')
        assert len(calls) == 2 and torch.equal(f, ref[0])
        monkeypatch.setenv(env, '0')
    assert cs.use_fast_sampler(pA, pB, points) is False                    # grad mode on here
    with torch.no_grad():
        assert cs.use_fast_sampler(pA, pB, points)
        assert not cs.use_fast_sampler(pA, pB[:, :, :4], points)           # mismatched spheres
        assert not cs.use_fast_sampler(pA, pB, points[:1])                 # batch mismatch


def test_gradients_unchanged_with_fast_path_available(fast_on):
    """Training needs gradients: with autograd on, the dispatcher is the reference, planes and points alike."""
    pA, pB, points = _inputs(N=1, M=300)
    grads = []
    for fn in (ds.dual_sphere_features, sample_dual_sphere):
        a, b = pA.clone().requires_grad_(True), pB.clone().requires_grad_(True)
        p = points.clone().requires_grad_(True)
        f, _ = fn(a, b, p, BOX, 'fused')
        f.pow(2).sum().backward()
        grads.append((a.grad, b.grad, p.grad))
    for g, r in zip(*grads):
        assert g is not None and torch.equal(g, r)


# ----------------------------------------------------------------------------- decoder
def _softplus_error(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Bound on |fast softplus - torch softplus| (both float32) at pre-activations x, softplus s (float64).

    Fast (_forward_fast): relu(x) + L, L = log(1 + e), e = exp(max(-|x|, -20)) in (0, 1]:
    exp's MATH_ULPS ulps (relative 2 q U) reach L damped by e / (1 + e) <= 1/2: q U; 1 + e
    rounds once (U, absolute in L); log's own q ulps of L <= ln 2: 2 q U ln 2; the clamp at -20
    drops at most log1p(exp(-20)) = 2.1e-9 < 0.04 U; the final add rounds once: U s.
    So |fast - s| <= (1.04 + q (1 + 2 ln 2)) U + U s.
    torch (threshold 20): x > 20 returns x, off by log1p(exp(-x)) < 0.04 U; else log1p(exp(x)):
    exp's error damped by e / (1 + e) = sigmoid(x) <= 1, plus log1p's own q ulps of s:
    |torch - s| <= 2 q U (1 + s) for x <= 20.
    """
    q = fb.MATH_ULPS
    fast = (1.04 + q * (1 + 2 * math.log(2))) * fb.U + fb.U * s
    ref = torch.where(x > 20, torch.full_like(s, 0.04 * fb.U), 2 * q * fb.U * (1 + s))
    return fast + ref


def _decoder_difference_bound(d: FeatureDecoder, features: torch.Tensor) -> dict[str, torch.Tensor]:
    """Elementwise bound on |_forward_fast - reference forward| in float32, for every output.

    Both paths compute the same maths with the same float32 weights (weight * gain rounds the
    same way in both); they differ in how the two matrix products accumulate (addmm over 4,096-
    or 7-row chunks vs one call: MKL / OpenBLAS blocking, SIMD width and thread split decide the
    order) and in the softplus formula. Per layer, with C inputs and H hidden units
    (tests/float32_bounds.py):

      d_x = 2 gamma(C + 1) (|f| @ |W0| + |b0|)             first product: each path within half of it
      d_s = d_x + E_softplus(x)                           softplus' = sigmoid <= 1; the two formulas'
                                                          own errors (_softplus_error)
      d_y = d_s @ |W1| + 2 gamma(H + 1) (s @ |W1| + |b1|)  second product: the inputs' difference
                                                          carried through, plus each path's rounding
      sigma:   d_y[0]
      sigmoid: 1.002 (sigmoid' d_y + 2 x q ulps of sigmoid) + the scale and shift's roundings,
               sigmoid' the largest over [y - d_y, y + d_y]: min(1/4, sigmoid'(y) exp(d_y))
               (|d log sigmoid'(y) / dy| <= 1)
      lrelu:   sqrt(2) d_y (slope <= 1) + 2 roundings of each path's result
      linear:  d_y
    """
    N, M, C = features.shape
    fc0, fc1 = d.net[0], d.net[2]
    w0 = (fc0.weight * fc0.weight_gain).detach().double().t()          # [C, H]
    b0 = (fc0.bias * fc0.bias_gain).detach().double()
    w1 = (fc1.weight * fc1.weight_gain).detach().double().t()          # [H, 1 + out]
    b1 = (fc1.bias * fc1.bias_gain).detach().double()
    f = features.reshape(N * M, C).double()
    x = f @ w0 + b0                                                    # exact (float64) pre-activations
    s = torch.nn.functional.softplus(x)
    d_s = 2 * fb.dot_bound(f.abs(), w0.abs(), b0.abs()) + _softplus_error(x, s)
    d_y = d_s @ w1.abs() + 2 * fb.dot_bound(s, w1.abs(), b1.abs())
    y = s @ w1 + b1
    d_rgb, y_rgb = d_y[:, 1:], y[:, 1:]
    if d.activation == 'sigmoid':
        sig = torch.sigmoid(y_rgb)
        slope = (sig * (1 - sig) * d_rgb.exp()).clamp(max=0.25)
        d_rgb = 1.002 * (slope * d_rgb + 2 * fb.math_abs_error(sig)) + 2 * 2 * fb.U * 1.002
    elif d.activation == 'lrelu':
        r = torch.nn.functional.leaky_relu(y_rgb, 0.2) * math.sqrt(2)
        d_rgb = math.sqrt(2) * d_rgb + 2 * 2 * fb.U * r.abs()
    return {'rgb': fb.SECOND_ORDER * d_rgb.reshape(N, M, -1), 'sigma': fb.SECOND_ORDER * d_y[:, :1].reshape(N, M, 1)}


@pytest.mark.parametrize('activation', ['sigmoid', 'lrelu', 'linear'])
def test_fast_decoder_matches_reference(activation, fast_on, monkeypatch):
    """Fast decoder vs reference, within the float32 bound of _decoder_difference_bound (which
    holds on any CPU, BLAS and thread count; issue 19: a fixed 2e-6 x scale failed on an AMD
    EPYC with 2 threads, 3.5e-6 measured)."""
    torch.manual_seed(1)
    d = FeatureDecoder(32, 32, activation=activation, lr_multiplier=0.7)
    with torch.no_grad():
        d.net[0].bias.normal_()
        d.net[2].bias.normal_()
    f = torch.randn(2, 5001, 32) * 25                    # pre-activations up to ~+-150, as a trained decoder's
    ref = d(f)                                            # grad mode on: the reference
    calls = []
    fast_forward = d._forward_fast
    d._forward_fast = lambda *a, **k: calls.append(1) or fast_forward(*a, **k)
    with torch.no_grad():
        fast = d(f)
    assert calls == [1]
    monkeypatch.setenv(cs.ENV_DISABLE_FAST_CPU, '1')
    with torch.no_grad():
        assert torch.equal(d(f)['rgb'], ref['rgb']) and calls == [1]
    with torch.no_grad():
        small_chunks = d._forward_fast(f, chunk=7)
        bound = _decoder_difference_bound(d, f)
    for k in ('rgb', 'sigma'):
        assert fast[k].shape == ref[k].shape
        fb.assert_within(fast[k], ref[k], bound[k], k)
        fb.assert_within(small_chunks[k], ref[k], bound[k], f'{k}, 7-point chunks')   # chunk edges: any size
    # Even in the worst case the two paths' colours differ by under half a uint8 level here
    # (worst where sigmoid is steepest); where sigmoid saturates the bound is ~1e-6, so a
    # decoder defect (a dropped bias, the -0.001 shift, the 1.002 scale) is far outside it.
    if activation == 'sigmoid':
        assert bound['rgb'].max() < 0.5 / 255 and bound['rgb'].median() < 1e-4
    # The softplus form alone, against torch's, over the range a decoder meets.
    x = torch.linspace(-200, 200, 400001)
    with torch.no_grad():
        soft = x.abs().neg_().clamp_(min=-20.0).exp_().add_(1.0).log_() + x.clamp(min=0)
    x64 = x.double()
    bound = _softplus_error(x64, torch.nn.functional.softplus(x64))
    fb.assert_within(soft, torch.nn.functional.softplus(x), bound, 'softplus')
    assert bound.max() < 1.5e-5                                         # about an ulp of 200: tight


def test_decoder_gradients_still_flow(fast_on):
    d = FeatureDecoder(8, 4)
    f = torch.randn(1, 50, 8, requires_grad=True)
    out = d(f)
    (out['rgb'].sum() + out['sigma'].sum()).backward()
    assert f.grad is not None and d.net[0].weight.grad is not None and f.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- importance merge
def test_merge_samples_equals_gather():
    g = torch.Generator().manual_seed(3)
    colors, colors_f = torch.rand(2, 30, 5, 6, generator=g), torch.rand(2, 30, 4, 6, generator=g)
    own, own_f = torch.rand(2, 30, 5, 1, generator=g), torch.rand(2, 30, 4, 1, generator=g)
    order = torch.sort(torch.rand(2, 30, 9, 1, generator=g), dim=-2).indices
    ref = torch.cat([torch.gather(torch.cat([colors, colors_f], -2), -2, order.expand(-1, -1, -1, 6)),
                     torch.gather(torch.cat([own, own_f], -2), -2, order)], -1)
    assert torch.equal(importance.merge_samples(order, colors, colors_f, own, own_f), ref)
    assert torch.equal(importance.merge_samples(order, colors, colors_f, None, None), ref[..., :6])


def test_renderer_without_autograd_is_bit_exact_when_fast_path_is_off(monkeypatch):
    """The importance renderer's inference changes (merge, one-channel coarse march, crop mask) move
    the same numbers: with the fast sampler and decoder off, no-grad equals the grad-mode render."""
    G = sh.load_generator('random:tiny')
    ws = G.mapping(torch.randn(1, G.z_dim), sh.camera.lookat(0, 0))
    c = sh.camera.lookat(40, 10)
    ref = G.synthesis(ws, c, deterministic=True)
    monkeypatch.setenv(cs.ENV_DISABLE_FAST_CPU, '1')
    with torch.no_grad():
        out = G.synthesis(ws, c, deterministic=True)
    assert all(torch.equal(ref[k], out[k]) for k in ref)


# ----------------------------------------------------------------------------- end to end
def _views(G, fast: bool, monkeypatch, yaws=(0, 100, 180), spheres=('fused',)):
    if fast:
        monkeypatch.delenv(cs.ENV_DISABLE_FAST_CPU, raising=False)
    else:
        monkeypatch.setenv(cs.ENV_DISABLE_FAST_CPU, '1')
    z = torch.from_numpy(np.random.RandomState(0).randn(1, G.z_dim)).float()
    outs = []
    with torch.inference_mode():
        ws = G.mapping(z, sh.camera.lookat(0, 0), truncation_psi=0.7)
        planes = G.backbone_planes(ws)
        for sphere in spheres:
            for yaw in yaws:
                outs.append(G.synthesis(ws, sh.camera.lookat(yaw, 10), sphere=sphere, deterministic=True,
                                        planes=planes))
    return outs


@pytest.mark.parametrize('network,spheres', [('demo', ('fused',)), ('random:tiny', ('A', 'B', 'fused'))])
def test_images_match_reference(network, spheres, monkeypatch):
    G = sh.load_generator(network)
    G.requires_grad_(False)
    ref = _views(G, False, monkeypatch, spheres=spheres)
    fast = _views(G, True, monkeypatch, spheres=spheres)
    # Whole renders: held to what a user could see, not to a rounding bound (a worst-case bound
    # carried through the renderer and the super-resolution convolutions would be meaningless):
    # 1e-3 on [-1, 1] is 1/8 of a uint8 level. Measured on the demo: <= 4.7e-5 on a Xeon,
    # <= 4.3e-5 on an AMD EPYC at 1 and 2 threads (docs/benchmarks.md), 20x inside.
    for r, f in zip(ref, fast):
        for k in ('image', 'image_raw'):
            assert (f[k] - r[k]).abs().max() < 1e-3, k
        for k in ('image_mask', 'sphere_weight', 'image_parsing'):
            assert (f[k] - r[k]).abs().max() < 2e-3, k
        assert (f['image_depth'] - r['image_depth']).abs().max() < 5e-3          # world units (~2.7 away)


# ----------------------------------------------------------------------------- visualizer
def test_background_memo_is_exact_and_only_for_same_ws():
    from viz.renderer import BackgroundMemo
    G = sh.load_generator('random:tiny')
    net = G.bcg_synthesis
    assert net is not None
    memo = BackgroundMemo(net)
    ws = torch.randn(1, net.num_ws, G.w_dim)
    calls = []
    net.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        ref = net(ws, noise_mode='const')
        a = memo(ws, noise_mode='const')
        b = memo(ws.clone(), noise_mode='const')                  # equal values: reused
        assert len(calls) == 2 and b is a and torch.equal(a, ref)
        memo(ws + 1e-3, noise_mode='const')                       # new latent: recomputed
        memo(ws, noise_mode='random')                             # random noise: never reused
        memo(ws, noise_mode='random')
        assert len(calls) == 5
    memo(ws, noise_mode='const')                                  # autograd on: the net itself
    assert len(calls) == 6 and memo.num_ws == net.num_ws


def test_visualizer_orbit_frames_match_reference(monkeypatch):
    from viz.render_args import RenderArgs
    from viz.renderer import Renderer
    images = {}
    for fast in (False, True):
        if fast:
            monkeypatch.delenv(cs.ENV_DISABLE_FAST_CPU, raising=False)
        else:
            monkeypatch.setenv(cs.ENV_DISABLE_FAST_CPU, '1')
        r = Renderer('cpu')
        base = RenderArgs(network='random:tiny')
        images[fast] = [r.render(base.replace(yaw=y)) for y in (0, 90)]
    for ref, fast in zip(images[False], images[True]):
        assert ref.error is None and fast.error is None
        assert fast.backbone_cached == ref.backbone_cached
        assert np.abs(fast.image.astype(int) - ref.image.astype(int)).max() <= 1      # one uint8 level at most


def test_allocator_tuning_respects_the_switch(monkeypatch):
    from viz import renderer
    monkeypatch.setenv(cs.ENV_DISABLE_FAST_CPU, '1')
    monkeypatch.setattr(renderer.ctypes, 'CDLL', lambda *a: pytest.fail('must not touch malloc when disabled'))
    assert renderer.keep_freed_cpu_memory() is False

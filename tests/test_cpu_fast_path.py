"""The CPU inference fast path (spherehead.ops.cpu_sampler, FeatureDecoder._forward_fast, the
importance renderer's merge, the visualizer's background memo) against the reference: values
within a stated tolerance, taken only with autograd off, off with SPHEREHEAD_NO_FAST_CPU=1,
and gradients unchanged.

Tolerances: the fast sampler and decoder do the reference's maths in another float32 order
(and softplus as relu(x) + log(1 + exp(-|x|))), so their outputs differ from the reference by
a few float32 ulps of the values involved; images in [-1, 1] are held to 1e-3 (1/8 of a uint8
display level), the parts to tolerances a few times above the differences measured here.
The merge and the background memo move / reuse exactly the same numbers: bit-exact.
"""
import numpy as np
import pytest
import torch

import spherehead as sh
from spherehead.networks.decoder import FeatureDecoder
from spherehead.ops import cpu_sampler as cs
from spherehead.ops import dual_sphere as ds
from spherehead.render import importance
from spherehead.render.spherical import sample_dual_sphere

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
@pytest.mark.parametrize('sphere', ['A', 'B', 'fused'])
@pytest.mark.parametrize('shape', [(2, 8, 16, 16), (1, 5, 12, 20), (1, 32, 64, 64)])
@pytest.mark.parametrize('spread', [0.7, 2.5])          # 2.5: many points beyond the planes (zero padding)
def test_fast_sampler_matches_reference(sphere, shape, spread):
    N, C, H, W = shape
    pA, pB, points = _inputs(N=N, C=C, H=H, W=W, spread=spread)
    with torch.no_grad():
        f, o = cs.fast_dual_sphere(pA, pB, points, BOX, sphere)
        rf, ro = sample_dual_sphere(pA, pB, points, BOX, sphere)
    assert f.shape == rf.shape and o.shape == ro.shape and f.dtype == rf.dtype == torch.float32
    # 64 px planes: pixel coordinates up to 64 carry float32 rounding of ~4e-6 into the weights.
    assert (f - rf).abs().max() < (1e-4 if H == 64 else 2e-5)
    assert (o - ro).abs().max() < 2e-6
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
        assert (f - rf).abs().max() < 2e-5 and torch.equal(o, ro)
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
    assert len(calls) == 1 and (f - ref[0]).abs().max() < 2e-5
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
@pytest.mark.parametrize('activation', ['sigmoid', 'lrelu', 'linear'])
def test_fast_decoder_matches_reference(activation, fast_on, monkeypatch):
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
    for k in ('rgb', 'sigma'):
        scale = ref[k].abs().max().clamp_min(1.0)
        assert fast[k].shape == ref[k].shape
        assert (fast[k] - ref[k]).abs().max() < 2e-6 * scale
        assert (small_chunks[k] - ref[k]).abs().max() < 2e-6 * scale           # chunk edges: any size
    # The softplus form alone, against torch's, over the range a decoder meets.
    x = torch.linspace(-200, 200, 400001)
    with torch.no_grad():
        soft = x.abs().neg_().clamp_(min=-20.0).exp_().add_(1.0).log_() + x.clamp(min=0)
    assert (soft - torch.nn.functional.softplus(x)).abs().max() < 2e-5     # ulp of 200 is 1.5e-5
    mid = x.abs() < 30
    assert (soft[mid] - torch.nn.functional.softplus(x[mid])).abs().max() < 3e-6


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

"""The dual-sphere sampler dispatcher (spherehead.ops.dual_sphere): on CPU it is the reference;
on CUDA the kernel matches the reference in values and in gradients w.r.t. the planes and the
points, it is used when the points need gradients, and the generator renders (and trains) the
same with and without it. On the CPU, the autograd Function's wiring runs on a stand-in
extension made of the reference and the point-gradient mirror."""
import warnings

import pytest
import torch

from spherehead.ops import dual_sphere as ds
from spherehead.ops.dual_sphere import _point_grad_mirror
from spherehead.render.spherical import sample_dual_sphere

BOX = 1.0


def _inputs(N=2, M=500, C=8, H=16, W=None, device='cpu', spread=0.7, dtype=torch.float32):
    W = W or H
    pA = torch.randn(N, 3, C, H, W, device=device, dtype=dtype)
    pB = torch.randn(N, 3, C, H, W, device=device, dtype=dtype)
    points = (torch.rand(N, M, 3, device=device) * 2 - 1) * spread * BOX
    return pA, pB, points


@pytest.fixture
def fresh_extension():
    ds._extension.reset()
    yield
    ds._extension.reset()


# ----------------------------------------------------------------------------- CPU (CI)
@pytest.mark.parametrize('sphere', ['A', 'B', 'fused'])
def test_cpu_dispatcher_equals_reference_exactly(sphere):
    pA, pB, points = _inputs()
    f, o = ds.dual_sphere_features(pA, pB, points, BOX, sphere)
    rf, ro = sample_dual_sphere(pA, pB, points, BOX, sphere)
    assert torch.equal(f, rf) and torch.equal(o, ro)
    f1, o1 = ds.dual_sphere_features(pA, None, points, BOX, 'A')
    r1, q1 = sample_dual_sphere(pA, None, points, BOX, 'A')
    assert torch.equal(f1, r1) and torch.equal(o1, q1)


def test_cpu_never_builds(monkeypatch, fresh_extension):
    def boom():
        raise AssertionError('must not build for CPU tensors')
    monkeypatch.setattr(ds._extension, 'build', boom)
    pA, pB, points = _inputs()
    ds.dual_sphere_features(pA, pB, points, BOX, 'fused')
    assert not ds._extension.tried


def test_env_var_forces_reference(monkeypatch, fresh_extension):
    monkeypatch.setenv(ds.ENV_DISABLE, '1')
    assert ds.kernels_disabled()
    assert not ds.kernel_available()
    monkeypatch.setattr(ds._extension, 'build', lambda: pytest.fail('must not build when disabled'))
    pA, pB, points = _inputs()
    # Even tensors that claim CUDA would not reach the kernel: the check comes first.
    assert not ds._use_kernel(pA, pB, points)
    monkeypatch.setenv(ds.ENV_DISABLE, '0')
    assert not ds.kernels_disabled()


def test_build_failure_warns_once_and_falls_back(monkeypatch, fresh_extension):
    calls = []

    def failing_build():
        calls.append(1)
        raise RuntimeError('Error building extension: nvcc not found')
    monkeypatch.setattr(ds._extension, 'build', failing_build)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        assert ds._extension.get() is None
        assert ds._extension.get() is None
        assert ds._extension.get() is None
    msgs = [w for w in caught if 'dual-sphere CUDA kernel could not be built' in str(w.message)]
    assert len(msgs) == 1 and 'nvcc not found' in str(msgs[0].message)
    assert len(calls) == 1


def test_bad_sphere_names_raise():
    pA, pB, points = _inputs()
    with pytest.raises(ValueError):
        ds.dual_sphere_features(pA, pB, points, BOX, 'C')
    with pytest.raises(ValueError):
        ds.dual_sphere_features(pA, None, points, BOX, 'B')


class _StandInExtension:
    """The compiled module's three entry points in PyTorch (same layouts and conventions)."""
    SPHERES = {0: 'A', 1: 'B', 2: 'fused'}

    def __init__(self):
        self.calls = []

    @staticmethod
    def _planes(cl):
        return cl.permute(0, 1, 4, 2, 3) if cl.numel() else None

    def forward(self, cl_A, cl_B, pts, box, mode):
        self.calls.append('forward')
        return sample_dual_sphere(self._planes(cl_A), self._planes(cl_B), pts, box, self.SPHERES[mode])

    def backward(self, gf, pts, gA, gB, box, mode):
        # The features are linear in the planes: their gradient does not depend on the plane values.
        self.calls.append('backward')
        shape = (gA if gA.numel() else gB).shape
        zA = torch.zeros(shape, requires_grad=True)
        zB = torch.zeros(shape, requires_grad=True)
        with torch.enable_grad():   # a backward runs with grad mode off
            f, _ = sample_dual_sphere(self._planes(zA), self._planes(zB), pts, box, self.SPHERES[mode])
            dA, dB = torch.autograd.grad(f, (zA, zB), gf, allow_unused=True)
        for buf, d in ((gA, dA), (gB, dB)):
            if buf.numel() and d is not None:
                buf += d

    def point_grad(self, cl_A, cl_B, gf, pts, box, mode):
        self.calls.append('point_grad')
        return _point_grad_mirror(self._planes(cl_A), self._planes(cl_B), pts, box, self.SPHERES[mode], gf)


@pytest.mark.parametrize('needs', ['points', 'planes', 'both'])
@pytest.mark.parametrize('sphere', ['A', 'B', 'fused', 'single'])
def test_function_wiring_with_stand_in_extension(monkeypatch, sphere, needs):
    """dual_sphere_features routes through _DualSphereFunction when points need grad, and its backward
    returns the reference's gradients for the planes and/or the points."""
    ext = _StandInExtension()
    monkeypatch.setattr(ds._extension, 'get', lambda: ext)
    monkeypatch.setattr(ds, '_use_kernel', lambda *a: True)
    pA, pB, points = _inputs(N=2, M=41, C=5, H=6, W=9, spread=1.3)
    if sphere == 'single':
        pB, sphere = None, 'A'
    planes = [p for p in (pA, pB) if p is not None]
    for p in planes:
        p.requires_grad_(needs != 'points')
    points.requires_grad_(needs != 'planes')
    f, o = ds.dual_sphere_features(pA, pB, points, BOX, sphere)
    assert type(f.grad_fn).__name__ == '_DualSphereFunctionBackward'
    assert not o.requires_grad
    rf, _ = sample_dual_sphere(pA, pB, points, BOX, sphere)
    up = torch.randn_like(rf)
    inputs = [t for t in planes + [points] if t.requires_grad]
    got = torch.autograd.grad(f, inputs, up, allow_unused=True)
    want = torch.autograd.grad(rf, inputs, up, allow_unused=True)
    for a, b, t in zip(got, want, inputs):
        a = torch.zeros_like(t) if a is None else a
        b = torch.zeros_like(t) if b is None else b
        if t is points:
            # The mirror's float32 maths vs autograd's, in another order: a point gradient sums <= 120
            # products (2 spheres x 3 planes x 4 taps x 5 channels) of ~6 rounded factors each, so
            # the two differ by ~(gamma(120) + 12 q u) = 1e-5 of the gradients' scale, on any CPU.
            # Held to 1e-4 of that scale: a fixed atol would not scale with these ~10-30 gradients.
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())
        else:
            assert torch.equal(a, b)      # the planes' gradients: the same autograd ops on the same numbers
    assert ('point_grad' in ext.calls) == (needs != 'planes')
    assert ('backward' in ext.calls) == (needs != 'points')


def test_function_backward_is_once_differentiable(monkeypatch):
    """No silent wrong second-order terms: double backward through the kernel raises."""
    ext = _StandInExtension()
    monkeypatch.setattr(ds._extension, 'get', lambda: ext)
    monkeypatch.setattr(ds, '_use_kernel', lambda *a: True)
    pA, pB, points = _inputs(N=1, M=9, C=3, H=5)
    points.requires_grad_(True)
    pA.requires_grad_(True)
    f, _ = ds.dual_sphere_features(pA, pB, points, BOX, 'fused')
    up = torch.ones_like(f, requires_grad=True)       # upstream that depends on a leaf, as in a penalty
    (g,) = torch.autograd.grad(f, points, up, create_graph=True)
    with pytest.raises(RuntimeError, match='once_differentiable'):
        g.sum().backward()


# ----------------------------------------------------------------------------- CUDA
# Odd sizes: C = 1 (one lane per point), 5, 33 (lanes do 2 channels), M not a multiple of the block.
SHAPES = [dict(N=1, M=1, C=1, H=4), dict(N=2, M=1000, C=8, H=16), dict(N=3, M=777, C=32, H=32, W=24),
          dict(N=1, M=4096, C=32, H=64), dict(N=1, M=53, C=5, H=7, W=5), dict(N=2, M=333, C=33, H=9, W=14)]
KERNEL_NODE = '_DualSphereFunctionBackward'


def _kernel_or_skip():
    if not ds.kernel_available():
        pytest.fail('CUDA kernel did not build on a CUDA machine')


def _close_points(got, want, rtol=1e-3, rel_atol=1e-4):
    """Point gradients: tight where the reference is finite (it is NaN at poles and the origin,
    where the kernel gives finite values by its own rule); atol relative to the gradients' scale."""
    assert torch.isfinite(got).all(), 'kernel point gradients must be finite everywhere'
    ok = torch.isfinite(want).all(-1)
    assert ok.any()
    scale = want[ok].abs().max().item()
    torch.testing.assert_close(got[ok], want[ok], rtol=rtol, atol=rel_atol * max(scale, 1e-6))


def _check(pA, pB, points, sphere, atol=1e-5, grad_atol=1e-4):
    """Kernel vs reference: values, ownership, gradients w.r.t. the planes and the points (fp32);
    the point gradients also against the mirror of the kernel's maths, everywhere."""
    pA = pA.detach().requires_grad_(True)
    pB = pB.detach().requires_grad_(True) if pB is not None else None
    points = points.detach().requires_grad_(True)
    f, o = ds.dual_sphere_features(pA, pB, points, BOX, sphere)
    assert type(f.grad_fn).__name__ == KERNEL_NODE
    rf, ro = sample_dual_sphere(pA, pB, points, BOX, sphere)
    assert f.shape == rf.shape and f.dtype == rf.dtype and o.shape == ro.shape
    torch.testing.assert_close(f, rf, atol=atol, rtol=1e-4)
    torch.testing.assert_close(o, ro, atol=atol, rtol=1e-4)
    up = torch.randn_like(rf)
    inputs = [pA] + ([pB] if pB is not None else [])
    g = torch.autograd.grad(f, inputs + [points], up, allow_unused=True)
    rg = torch.autograd.grad(rf, inputs + [points], up, allow_unused=True)
    for a, b in zip(g[:-1], rg[:-1]):
        a = torch.zeros_like(inputs[0]) if a is None else a
        b = torch.zeros_like(inputs[0]) if b is None else b
        torch.testing.assert_close(a, b, atol=grad_atol, rtol=1e-4)
    _close_points(g[-1], rg[-1])
    mirror = _point_grad_mirror(pA.detach(), None if pB is None else pB.detach(), points.detach(), BOX,
                                sphere if pB is not None else 'A', up)
    torch.testing.assert_close(g[-1], mirror, rtol=1e-3, atol=1e-4 * max(mirror.abs().max().item(), 1e-6))


@pytest.mark.cuda
@pytest.mark.parametrize('shape', SHAPES, ids=lambda s: 'x'.join(map(str, s.values())))
@pytest.mark.parametrize('sphere', ['A', 'B', 'fused'])
def test_kernel_matches_reference(shape, sphere):
    _kernel_or_skip()
    pA, pB, points = _inputs(device='cuda', spread=1.2, **shape)   # some points outside the box
    _check(pA, pB, points, sphere)


@pytest.mark.cuda
@pytest.mark.parametrize('sphere', ['A', 'B', 'fused'])
def test_kernel_far_outside_box(sphere):
    """Points with |q| up to 6: most sample the (theta, r) and (phi, r) planes in the zero padding."""
    _kernel_or_skip()
    pA, pB, points = _inputs(N=2, M=900, C=16, H=12, W=10, device='cuda', spread=3.0)
    _check(pA, pB, points, sphere)


@pytest.mark.cuda
@pytest.mark.parametrize('sphere', ['A', 'fused'])
def test_kernel_single_sphere(sphere):
    _kernel_or_skip()
    pA, _, points = _inputs(N=2, M=2000, C=16, H=32, device='cuda', spread=1.2)
    _check(pA, None, points, sphere)


def _special_points(N, M, device):
    points = (torch.rand(N, 3, M, device=device) * 2 - 1).transpose(1, 2) * 1.5  # non-contiguous
    points[:, 0] = 0.0                                     # origin
    points[:, 1] = torch.tensor([0.0, 0.0, 0.4], device=device)   # on B's seam
    points[:, 2] = torch.tensor([0.0, 0.0, -0.4], device=device)  # on A's seam
    points[:, 3] = torch.tensor([0.4, 0.0, 0.0], device=device)   # A's pole
    points[:, 4] = torch.tensor([0.0, 0.4, 0.0], device=device)   # B's pole
    points[:, 5] = torch.tensor([5.0, -5.0, 5.0], device=device)  # far outside
    points[:, 6] = torch.tensor([0.4, 1e-3, -2e-3], device=device)  # near A's pole
    points[:, 7] = torch.tensor([2e-3, -0.3, 1e-3], device=device)  # near B's pole
    points[:, 8] = torch.tensor([0.0, 0.2, -0.3], device=device)    # on A's seam, off the axis
    return points


@pytest.mark.cuda
def test_kernel_non_contiguous_inputs_and_special_points():
    _kernel_or_skip()
    N, M, C, H = 2, 1500, 12, 20
    pA = torch.randn(N, 3, H, H, C, device='cuda').permute(0, 1, 4, 2, 3)       # channels-last view
    pB = torch.randn(N, 3, C, 2 * H, H, device='cuda')[:, :, :, ::2]            # strided rows
    points = _special_points(N, M, 'cuda')
    assert not pA.is_contiguous() and not pB.is_contiguous() and not points.is_contiguous()
    for sphere in ('A', 'B', 'fused'):
        _check(pA, pB, points, sphere)


@pytest.mark.cuda
def test_kernel_pole_and_origin_point_gradients_finite():
    """At the poles and the origin the reference's point gradients are NaN; the kernel's are finite
    and equal the mirror's rule (that sphere's d phi_n and the (a, b) part of d theta_n dropped)."""
    _kernel_or_skip()
    pA, pB, _ = _inputs(N=1, M=1, C=8, H=16, device='cuda')
    points = _special_points(1, 16, 'cuda').contiguous().requires_grad_(True)
    for sphere in ('A', 'B', 'fused'):
        f, _ = ds.dual_sphere_features(pA, pB, points, BOX, sphere)
        up = torch.randn_like(f)
        (g,) = torch.autograd.grad(f, points, up)
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, _point_grad_mirror(pA, pB, points.detach(), BOX, sphere, up),
                                   rtol=1e-3, atol=1e-4 * g.abs().max().item())
        assert (g[0, 0] == 0).all()   # the origin


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize('sphere', ['A', 'fused'])
def test_kernel_half_planes_computed_in_fp32(dtype, sphere):
    """Half planes: the kernel upcasts them and computes in fp32, so it is compared with the reference
    on the upcast planes (the reference on half planes also rounds the grid to half); gradients loose."""
    _kernel_or_skip()
    pA, pB, points = _inputs(N=1, M=1000, C=8, H=32, device='cuda', spread=1.2)
    hA, hB = pA.to(dtype).requires_grad_(True), pB.to(dtype).requires_grad_(True)
    points.requires_grad_(True)
    f, _ = ds.dual_sphere_features(hA, hB, points, BOX, sphere)
    assert type(f.grad_fn).__name__ in (KERNEL_NODE, 'ToCopyBackward0')
    uA, uB = hA.detach().float().requires_grad_(True), hB.detach().float().requires_grad_(True)
    ref, _ = sample_dual_sphere(uA, uB, points, BOX, sphere)
    torch.testing.assert_close(f.float(), ref, atol=1e-5 if f.dtype == torch.float32 else 1e-2, rtol=1e-2)
    up = torch.randn_like(ref).to(f.dtype)
    gA, gB, gp = torch.autograd.grad(f, (hA, hB, points), up, allow_unused=True)
    rA, rB, rp = torch.autograd.grad(ref, (uA, uB, points), up.float(), allow_unused=True)
    assert gA.dtype == dtype
    for a, b in ((gA, rA), (gB, rB)):
        if b is None:
            assert a is None or (a == 0).all()
        else:
            torch.testing.assert_close(a.float(), b, atol=1e-2, rtol=1e-2)
    _close_points(gp, rp, rtol=1e-2, rel_atol=1e-3)


@pytest.mark.cuda
@pytest.mark.parametrize('sphere', ['A', 'B', 'fused'])
def test_kernel_used_when_points_require_grad(monkeypatch, sphere):
    """Training (points need grad) runs the kernel, not the reference; points-only gradients work."""
    _kernel_or_skip()
    monkeypatch.setattr(ds, 'sample_dual_sphere', lambda *a, **k: pytest.fail('the reference ran'))
    pA, pB, points = _inputs(N=1, M=300, C=4, H=16, device='cuda')
    points.requires_grad_(True)                      # planes need no grad: only the point kernel runs
    f, _ = ds.dual_sphere_features(pA, pB, points, BOX, sphere)
    assert type(f.grad_fn).__name__ == KERNEL_NODE
    (gp,) = torch.autograd.grad(f.sum(), points)
    rf, _ = sample_dual_sphere(pA, pB, points, BOX, sphere)   # the module's own import, unpatched
    (rgp,) = torch.autograd.grad(rf.sum(), points)
    _close_points(gp, rgp)


@pytest.mark.cuda
def test_generator_renders_same_with_and_without_kernel(monkeypatch):
    _kernel_or_skip()
    from spherehead.camera import lookat
    from spherehead.checkpoint import random_generator
    G = random_generator('tiny').eval().requires_grad_(False).cuda()
    z = torch.randn(2, G.z_dim, device='cuda')
    c = torch.as_tensor(lookat(30.0, 10.0), dtype=torch.float32, device='cuda').reshape(1, -1).expand(2, -1)
    ws = G.mapping(z, c)
    outs = {}
    for key, env in (('kernel', '0'), ('reference', '1')):
        monkeypatch.setenv(ds.ENV_DISABLE, env)
        outs[key] = G.synthesis(ws, c, deterministic=True, noise_mode='const')
    for name in ('image', 'image_raw', 'image_depth', 'sphere_weight'):
        torch.testing.assert_close(outs['kernel'][name], outs['reference'][name], atol=2e-4, rtol=1e-3)


@pytest.mark.cuda
def test_generator_training_gradients_same_with_and_without_kernel(monkeypatch):
    """G(z, c) as in training: the camera-offset net makes the points need grad; the kernel runs
    (the reference never does) and the parameter gradients, the offset net's included, match."""
    _kernel_or_skip()
    from spherehead.camera import lookat
    from spherehead.checkpoint import random_generator
    # True fp32 in both runs: cuDNN's TF32 convolutions (on by default) round to ~1e-3 in every
    # layer, and the offset net's gradient (a sum over all samples with cancellations) then
    # differs by ~2e-2 between any two paths whose convolutions differ (the FIR kernel vs cuDNN).
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    monkeypatch.setattr(torch.backends.cuda.matmul, 'allow_tf32', False)
    G = random_generator('tiny').cuda()
    assert G.t_mapping is not None
    z = torch.randn(2, G.z_dim, device='cuda')
    c = torch.as_tensor(lookat(30.0, 10.0), dtype=torch.float32, device='cuda').reshape(1, -1).expand(2, -1)
    real, calls = ds.sample_dual_sphere, []

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)
    monkeypatch.setattr(ds, 'sample_dual_sphere', counting)
    names = [n for n, p in G.named_parameters() if p.requires_grad]
    params = [p for p in G.parameters() if p.requires_grad]
    grads = {}
    for key, env in (('kernel', '0'), ('reference', '1')):
        monkeypatch.setenv(ds.ENV_DISABLE, env)
        calls.clear()
        out = G(z, c, deterministic=True, noise_mode='const')
        weights = torch.Generator(device='cuda').manual_seed(5)
        # Not image_depth: its gradient is NaN where a ray's weights sum to 0 (the marcher's division),
        # with either sampler; training losses do not use it.
        loss = sum((out[k].float() * torch.randn(out[k].shape, device='cuda', generator=weights)).sum()
                   for k in ('image', 'image_raw', 'image_mask'))
        grads[key] = dict(zip(names, torch.autograd.grad(loss, params, allow_unused=True)))
        assert (len(calls) == 0) == (key == 'kernel')
    # The offset net's gradients reach it only through the points: each tensor tight.
    offset_names = [n for n in names if n.startswith('t_mapping.')]
    assert offset_names
    for n in offset_names:
        a, b = grads['kernel'][n], grads['reference'][n]
        assert b.norm() > 0, n
        err = (a - b).norm() / b.norm()
        assert err < 2e-3, f'{n}: relative error {err:.2e}'
    # All parameters together (a few may hold near-zero gradients, so not tensor by tensor).
    flat = {k: torch.cat([g[n].flatten() for n in names if grads['reference'][n] is not None]) for k, g in
            grads.items()}
    assert ((flat['kernel'] - flat['reference']).norm() / flat['reference'].norm()) < 2e-3

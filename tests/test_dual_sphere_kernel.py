"""The dual-sphere sampler dispatcher (spherehead.ops.dual_sphere): on CPU it is the reference;
on CUDA the kernel matches the reference in values and plane gradients, and the generator
renders the same images with and without it."""
import warnings

import pytest
import torch

from spherehead.ops import dual_sphere as ds
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
    monkeypatch.setattr(ds, '_build', boom)
    pA, pB, points = _inputs()
    ds.dual_sphere_features(pA, pB, points, BOX, 'fused')
    assert not ds._extension.tried


def test_env_var_forces_reference(monkeypatch, fresh_extension):
    monkeypatch.setenv(ds.ENV_DISABLE, '1')
    assert ds.kernels_disabled()
    assert not ds.kernel_available()
    monkeypatch.setattr(ds, '_build', lambda: pytest.fail('must not build when disabled'))
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
    monkeypatch.setattr(ds, '_build', failing_build)
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


# ----------------------------------------------------------------------------- CUDA
SHAPES = [dict(N=1, M=1, C=1, H=4), dict(N=2, M=1000, C=8, H=16), dict(N=3, M=777, C=32, H=32, W=24),
          dict(N=1, M=4096, C=32, H=64)]


def _kernel_or_skip():
    if not ds.kernel_available():
        pytest.fail('CUDA kernel did not build on a CUDA machine')


def _check(pA, pB, points, sphere, atol=1e-5, grad_atol=1e-4):
    pA = pA.detach().requires_grad_(True)
    pB = pB.detach().requires_grad_(True) if pB is not None else None
    f, o = ds.dual_sphere_features(pA, pB, points, BOX, sphere)
    rf, ro = sample_dual_sphere(pA, pB, points, BOX, sphere)
    assert f.shape == rf.shape and f.dtype == rf.dtype and o.shape == ro.shape
    torch.testing.assert_close(f, rf, atol=atol, rtol=1e-4)
    torch.testing.assert_close(o, ro, atol=atol, rtol=1e-4)
    up = torch.randn_like(rf)
    inputs = [pA] + ([pB] if pB is not None else [])
    g = torch.autograd.grad(f, inputs, up, allow_unused=True)
    rg = torch.autograd.grad(rf, inputs, up, allow_unused=True)
    for a, b in zip(g, rg):
        a = torch.zeros_like(inputs[0]) if a is None else a
        b = torch.zeros_like(inputs[0]) if b is None else b
        torch.testing.assert_close(a, b, atol=grad_atol, rtol=1e-4)


@pytest.mark.cuda
@pytest.mark.parametrize('shape', SHAPES, ids=lambda s: 'x'.join(map(str, s.values())))
@pytest.mark.parametrize('sphere', ['A', 'B', 'fused'])
def test_kernel_matches_reference(shape, sphere):
    _kernel_or_skip()
    pA, pB, points = _inputs(device='cuda', spread=1.2, **shape)   # some points outside the box
    _check(pA, pB, points, sphere)


@pytest.mark.cuda
@pytest.mark.parametrize('sphere', ['A', 'fused'])
def test_kernel_single_sphere(sphere):
    _kernel_or_skip()
    pA, _, points = _inputs(N=2, M=2000, C=16, H=32, device='cuda', spread=1.2)
    _check(pA, None, points, sphere)


@pytest.mark.cuda
def test_kernel_non_contiguous_inputs_and_special_points():
    _kernel_or_skip()
    N, M, C, H = 2, 1500, 12, 20
    pA = torch.randn(N, 3, H, H, C, device='cuda').permute(0, 1, 4, 2, 3)       # channels-last view
    pB = torch.randn(N, 3, C, 2 * H, H, device='cuda')[:, :, :, ::2]            # strided rows
    points = (torch.rand(N, 3, M, device='cuda') * 2 - 1).transpose(1, 2) * 1.5  # non-contiguous
    points[:, 0] = 0.0                                     # origin
    points[:, 1] = torch.tensor([0.0, 0.0, 0.4], device='cuda')   # on B's seam
    points[:, 2] = torch.tensor([0.0, 0.0, -0.4], device='cuda')  # on A's seam
    points[:, 3] = torch.tensor([0.4, 0.0, 0.0], device='cuda')   # A's pole
    points[:, 4] = torch.tensor([0.0, 0.4, 0.0], device='cuda')   # B's pole
    points[:, 5] = torch.tensor([5.0, -5.0, 5.0], device='cuda')  # far outside
    assert not pA.is_contiguous() and not pB.is_contiguous() and not points.is_contiguous()
    for sphere in ('A', 'B', 'fused'):
        _check(pA, pB, points, sphere)


@pytest.mark.cuda
def test_kernel_half_planes_computed_in_fp32():
    _kernel_or_skip()
    pA, pB, points = _inputs(N=1, M=1000, C=8, H=32, device='cuda')
    for dtype in (torch.float16, torch.bfloat16):
        f, _ = ds.dual_sphere_features(pA.to(dtype), pB.to(dtype), points, BOX, 'fused')
        ref, _ = sample_dual_sphere(pA.to(dtype).float(), pB.to(dtype).float(), points, BOX, 'fused')
        torch.testing.assert_close(f.float(), ref, atol=1e-5, rtol=1e-4)


@pytest.mark.cuda
def test_point_gradients_fall_back_to_reference():
    _kernel_or_skip()
    pA, pB, points = _inputs(N=1, M=300, C=4, H=16, device='cuda')
    points.requires_grad_(True)
    f, _ = ds.dual_sphere_features(pA, pB, points, BOX, 'fused')
    (gp,) = torch.autograd.grad(f.sum(), points)
    rf, _ = sample_dual_sphere(pA, pB, points, BOX, 'fused')
    (rgp,) = torch.autograd.grad(rf.sum(), points)
    torch.testing.assert_close(gp, rgp)


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

"""upfirdn2d's autograd Function (explicit backward, itself an upfirdn2d) against the plain
PyTorch composition: values, gradients and second-order gradients; the CUDA kernel (marked
`cuda`) against the reference."""
from __future__ import annotations

import pytest
import torch

from spherehead.ops import upfirdn2d as U
from spherehead.ops.upfirdn2d import setup_filter, upfirdn2d, upfirdn2d_reference

CASES = [  # (up, down, padding, taps, separable, flip)
    (1, 1, 0, [1, 3, 3, 1], False, False),
    (2, 1, [2, 1, 2, 1], [1, 3, 3, 1], False, False),
    (1, 2, [1, 1, 1, 1], [1, 3, 3, 1], False, True),
    (2, 2, [3, 2, 1, 2], [1, 2, 1], False, False),
    ((2, 1), (1, 2), [1, 0, 2, 3], [1, 3, 3, 1], False, False),
    (1, 1, [-1, 2, 3, -2], [1, 4, 6, 4, 1], False, True),
    (2, 1, [4, 3, 4, 3], [1, 2, 3, 4, 5, 4, 3, 2, 1], True, False),
    (1, 2, [4, 4, 3, 5], [1, 2, 3, 4, 5, 4, 3, 2, 1], True, True),
    (3, 2, [2, 1, 0, 2], [1, 1, 1], False, False),
]


def _inputs(dtype=torch.float64, shape=(2, 3, 7, 9), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


@pytest.mark.parametrize('up,down,pad,taps,separable,flip', CASES)
def test_function_equals_reference_values_and_gradients(up, down, pad, taps, separable, flip):
    f = setup_filter(taps, separable=separable)
    x = _inputs().requires_grad_(True)
    y = upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=1.7)
    y_ref = upfirdn2d_reference(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=1.7)
    assert y.shape == y_ref.shape
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y)
    (g,) = torch.autograd.grad(y, x, dy)
    (g_ref,) = torch.autograd.grad(y_ref, x, dy)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('up,down,pad,taps,separable,flip', CASES[:5] + CASES[6:7])
def test_second_order_gradients_match_gradgradcheck(up, down, pad, taps, separable, flip):
    f = setup_filter(taps, separable=separable)
    x = _inputs(shape=(1, 2, 5, 6)).requires_grad_(True)
    fn = lambda t: upfirdn2d(t, f, up=up, down=down, padding=pad, flip_filter=flip, gain=0.8)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_r1_style_penalty_gradient_equals_reference():
    """|d sum(D(x)) / dx|^2 differentiated w.r.t. a weight before the filter, as R1 does."""
    f = setup_filter([1, 3, 3, 1])
    x = _inputs(shape=(2, 4, 8, 8)).requires_grad_(True)
    w = torch.randn(4, 4, 3, 3, dtype=torch.float64, requires_grad=True)

    def penalty(resample):
        h = torch.nn.functional.conv2d(resample(x, f, down=2, padding=1), w, padding=1)
        (gx,) = torch.autograd.grad(h.square().sum(), x, create_graph=True)
        (gw,) = torch.autograd.grad(gx.square().sum(), w)
        return gw

    torch.testing.assert_close(penalty(upfirdn2d), penalty(upfirdn2d_reference), rtol=1e-10, atol=1e-10)


def test_backward_saves_no_activations():
    x = _inputs(dtype=torch.float32).requires_grad_(True)
    y = upfirdn2d(x, setup_filter([1, 3, 3, 1]), up=2, padding=[2, 1, 2, 1])
    saved = [t for t in y.grad_fn.saved_tensors]
    assert all(t.numel() <= 16 for t in saved)   # only the filter


@pytest.mark.cuda
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.float16, 2e-2), (torch.bfloat16, 6e-2)])
@pytest.mark.parametrize('up,down,pad,taps,separable,flip', CASES)
def test_cuda_kernel_matches_reference(up, down, pad, taps, separable, flip, dtype, tol):
    assert U._extension.usable(torch.zeros(1, device='cuda')), 'upfirdn2d kernel did not build'
    f = setup_filter(taps, separable=separable, device='cuda')
    x = _inputs(torch.float32, shape=(3, 5, 17, 13)).cuda().to(dtype).requires_grad_(True)
    y = upfirdn2d(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=1.3)
    y_ref = upfirdn2d_reference(x.float(), f, up=up, down=down, padding=pad, flip_filter=flip, gain=1.3)
    assert y.dtype == dtype
    torch.testing.assert_close(y.float(), y_ref, rtol=tol, atol=tol)
    dy = torch.randn_like(y_ref)
    (g,) = torch.autograd.grad(y, x, dy.to(dtype))
    (g_ref,) = torch.autograd.grad(y_ref, x, dy)
    torch.testing.assert_close(g.float(), g_ref.float(), rtol=tol, atol=tol * 4)


@pytest.mark.cuda
def test_cuda_kernel_large_and_second_order():
    f = setup_filter([1, 3, 3, 1], device='cuda')
    x = torch.randn(4, 32, 130, 66, device='cuda', requires_grad=True)
    w = torch.randn(8, 32, 3, 3, device='cuda', requires_grad=True)

    def penalty(resample):
        h = torch.nn.functional.conv2d(resample(x, f, down=2, padding=1), w, padding=1)
        (gx,) = torch.autograd.grad(h.square().sum(), x, create_graph=True)
        (gw,) = torch.autograd.grad(gx.square().sum(), w)
        return gw

    ref = penalty(upfirdn2d_reference)
    torch.testing.assert_close(penalty(upfirdn2d), ref, rtol=1e-3, atol=1e-3 * ref.abs().max().item())


TILED_CASES = [  # (up, down, padding): the kernel's compile-time cases (4x4 filter), odd paddings
    (1, 1, [2, 1, 2, 1]), (1, 1, [-1, 3, 0, -2]), (2, 1, [2, 1, 2, 1]), (2, 1, [3, 0, 1, 4]),
    (1, 2, [1, 1, 1, 1]), (1, 2, [0, 3, -1, 2])]


@pytest.mark.cuda
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.float16, 2e-2)])
@pytest.mark.parametrize('up,down,pad', TILED_CASES)
def test_cuda_tiled_kernel_across_tiles_matches_reference_and_general_kernel(up, down, pad, dtype, tol, monkeypatch):
    """Images spanning several tiles (odd sizes, so the last tiles are partial; 70 planes):
    the compile-time kernel against the reference and against the general kernel, values and gradients."""
    f = setup_filter([1, 3, 3, 1], device='cuda')
    x = _inputs(torch.float32, shape=(2, 35, 77, 139), seed=3).cuda().to(dtype).requires_grad_(True)

    def run(fn):
        y = fn(x, f, up=up, down=down, padding=pad, flip_filter=False, gain=1.3)
        dy = torch.randn(y.shape, generator=torch.Generator('cuda').manual_seed(1), device='cuda').to(y.dtype)
        (g,) = torch.autograd.grad(y, x, dy)
        return y.float(), g.float()

    y_t, g_t = run(upfirdn2d)
    monkeypatch.setattr(U, 'USE_TILED_KERNEL', False)
    y_g, g_g = run(upfirdn2d)
    y_r, g_r = run(lambda *a, **k: upfirdn2d_reference(x.float(), *a[1:], **k).to(dtype))
    torch.testing.assert_close(y_t, y_g, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_t, g_g, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(y_t, y_r, rtol=tol, atol=tol)
    torch.testing.assert_close(g_t, g_r, rtol=tol, atol=tol * 4)

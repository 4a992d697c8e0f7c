"""bias_act's fused path (autograd Functions over the kernel's two passes) against the plain
PyTorch reference: values, gradients and second-order gradients. On CPU the Functions run
over _TorchOps, the kernel's passes written in PyTorch; the `cuda` tests run the kernel."""
from __future__ import annotations

import pytest
import torch

from spherehead.ops import bias_act as B
from spherehead.ops.bias_act import bias_act, bias_act_reference

CASES = [  # (act, alpha, gain, clamp, dim, shape)
    ('linear', None, None, None, 1, (2, 5, 4, 3)),
    ('linear', None, 0.5, 0.7, 1, (2, 5, 4, 3)),
    ('lrelu', None, None, None, 1, (3, 4, 5, 5)),
    ('lrelu', 0.1, 1.3, 0.8, 1, (2, 6, 3, 7)),
    ('relu', None, None, 1.0, 1, (2, 3, 4)),
    ('lrelu', None, None, None, 2, (4, 3, 6)),   # a bias along the last dim (fully connected layers)
]

_ACT_IDS = {'linear': 0, 'relu': 1, 'lrelu': 2}


def _fused(x, b, act, alpha, gain, clamp, dim, ops=B._TorchOps):
    spec = B.ACTIVATIONS[act]
    alpha = spec.default_alpha if alpha is None else alpha
    gain = spec.default_gain if gain is None else gain
    return B._BiasAct.apply(x, b, dim % x.ndim, _ACT_IDS[act], float(alpha), float(gain),
                            -1.0 if clamp is None else float(clamp), ops)


def _inputs(shape, dim, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype).requires_grad_(True)
    b = (torch.randn(shape[dim], generator=g, dtype=dtype) * 0.3).requires_grad_(True)
    return x, b


@pytest.mark.parametrize('act,alpha,gain,clamp,dim,shape', CASES)
def test_functions_equal_reference_values_and_gradients(act, alpha, gain, clamp, dim, shape):
    x, b = _inputs(shape, dim)
    y = _fused(x, b, act, alpha, gain, clamp, dim)
    y_ref = bias_act_reference(x, b, dim, act, alpha, gain, clamp)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    dy = torch.randn_like(y)
    g = torch.autograd.grad(y, (x, b), dy)
    g_ref = torch.autograd.grad(y_ref, (x, b), dy)
    for a, r in zip(g, g_ref):
        torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('act,alpha,gain,clamp,dim,shape', CASES)
def test_second_order_equals_reference(act, alpha, gain, clamp, dim, shape):
    """R1-like: the gradient w.r.t. x, squared, differentiated w.r.t. a weight in front."""
    x, b = _inputs(shape, dim)
    w = torch.randn(shape[dim], dtype=torch.float64, requires_grad=True)
    scale = [1] * len(shape)
    scale[dim] = -1

    def penalty(fn):
        h = fn(x * w.reshape(scale))
        (gx,) = torch.autograd.grad((h * h.detach().sin()).sum() + h.square().sum(), x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), (w, b), allow_unused=True)

    got = penalty(lambda t: _fused(t, b, act, alpha, gain, clamp, dim))
    ref = penalty(lambda t: bias_act_reference(t, b, dim, act, alpha, gain, clamp))
    for a, r in zip(got, ref):
        if r is None:
            assert a is None or torch.count_nonzero(a) == 0
        else:
            torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)


def test_cpu_uses_the_reference():
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = bias_act(x, torch.zeros(3), act='lrelu')
    assert 'BiasAct' not in type(y.grad_fn).__name__


@pytest.mark.cuda
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-6), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize('act,alpha,gain,clamp,dim,shape', CASES)
def test_cuda_kernel_matches_reference(act, alpha, gain, clamp, dim, shape, dtype, tol):
    assert B._extension.usable(torch.zeros(1, device='cuda')), 'bias_act kernel did not build'
    x, b = _inputs(shape, dim, torch.float32)
    x = x.detach().cuda().to(dtype).requires_grad_(True)
    b = b.detach().cuda().to(dtype).requires_grad_(True)
    y = bias_act(x, b, dim, act, alpha, gain, clamp)
    assert 'BiasAct' in type(y.grad_fn).__name__
    y_ref = bias_act_reference(x, b, dim, act, alpha, gain, clamp)
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=tol, atol=tol)
    dy = torch.randn_like(y)
    g = torch.autograd.grad(y, (x, b), dy)
    g_ref = torch.autograd.grad(y_ref, (x, b), dy)
    for a, r in zip(g, g_ref):
        torch.testing.assert_close(a.float(), r.float(), rtol=tol, atol=tol * 10)


@pytest.mark.cuda
@pytest.mark.parametrize('act,alpha,gain,clamp,dim,shape', CASES)
def test_cuda_second_order_equals_reference(act, alpha, gain, clamp, dim, shape):
    x, b = _inputs(shape, dim, torch.float32)
    x, b = x.detach().cuda().requires_grad_(True), b.detach().cuda().requires_grad_(True)
    w = torch.randn(shape[dim], device='cuda', requires_grad=True)
    scale = [1] * len(shape)
    scale[dim] = -1

    def penalty(fn):
        h = fn(x * w.reshape(scale))
        (gx,) = torch.autograd.grad(h.square().sum(), x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), w)[0]

    torch.testing.assert_close(penalty(lambda t: bias_act(t, b, dim, act, alpha, gain, clamp)),
                               penalty(lambda t: bias_act_reference(t, b, dim, act, alpha, gain, clamp)),
                               rtol=1e-5, atol=1e-5)

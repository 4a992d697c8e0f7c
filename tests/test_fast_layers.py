"""The cheaper formulations in spherehead.networks.layers against their references (switches
SPHEREHEAD_NO_FAST_DEMOD, SPHEREHEAD_NO_FAST_FC): demodulation coefficients without the per-sample
kernels, and dense layers with the gains inside addmm. Values and gradients, float64."""
from __future__ import annotations

import pytest
import torch

from spherehead.networks import layers as L
from spherehead.networks.layers import FullyConnectedLayer, modulated_conv2d
from spherehead.ops.upfirdn2d import setup_filter


def _grads(fn, tensors, seed=2):
    y = fn()
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype).to(y.device)
    return (y,) + torch.autograd.grad(y, tensors, dy)


MODCONV_CASES = [  # (fused_modconv, up, noise, kernel)
    (False, 1, True, 3), (False, 2, False, 3), (True, 1, True, 3), (True, 2, False, 3), (False, 1, False, 1),
]


@pytest.mark.parametrize('fused,up,noise,k', MODCONV_CASES)
def test_demodulation_equals_reference(fused, up, noise, k, monkeypatch):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(5, 4, k, k, generator=g, dtype=torch.float64, requires_grad=True)
    styles = (torch.randn(3, 4, generator=g, dtype=torch.float64) + 1).requires_grad_(True)
    n = torch.randn(3, 1, 6 * up, 6 * up, generator=g, dtype=torch.float64) if noise else None
    f = setup_filter([1, 3, 3, 1]) if up > 1 else None
    run = lambda: _grads(lambda: modulated_conv2d(x, weight, styles, noise=n, up=up, padding=k // 2,
                                                  resample_filter=f, flip_weight=up == 1, fused_modconv=fused),
                         (x, weight, styles))
    fast = run()
    monkeypatch.setenv(L.ENV_REFERENCE_DEMOD, '1')
    ref = run()
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('fused', [False, True])
def test_demodulation_with_float32_styles_and_float64_weights(fused, monkeypatch):
    """Synthesis casts ws (hence the styles) to float32; with float64 parameters (the two-process
    gradient test) the weight is float64: the coefficients follow the reference's promotion."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 4, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    styles = (torch.randn(2, 4, generator=g) + 1).requires_grad_(True)
    run = lambda: _grads(lambda: modulated_conv2d(x, weight, styles, padding=1, fused_modconv=fused),
                         (x, weight, styles))
    fast = run()
    assert fast[0].dtype == torch.float64 and fast[3].dtype == torch.float32
    monkeypatch.setenv(L.ENV_REFERENCE_DEMOD, '1')
    for a, b in zip(fast, run()):
        # the styles' gradient is computed in float64 and rounded to float32 (an ulp or two apart)
        tol = 1e-10 if a.dtype == torch.float64 else 1e-6
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_fast_demodulation_builds_no_per_sample_kernel(monkeypatch):
    """The training path (not fused) no longer materialises [N, O, I, kh, kw]: no tensor of
    N * O * I * 9 elements is created in its forward."""
    x = torch.randn(2, 8, 5, 5)
    weight = torch.randn(16, 8, 3, 3, requires_grad=True)
    styles = torch.randn(2, 8, requires_grad=True)
    big = 2 * 16 * 8 * 9

    def sizes():
        seen = []

        class Spy(torch.overrides.TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                if isinstance(out, torch.Tensor):
                    seen.append(out.numel())
                return out

        with Spy():
            modulated_conv2d(x, weight, styles, padding=1, fused_modconv=False)
        return seen

    assert big not in sizes()
    monkeypatch.setenv(L.ENV_REFERENCE_DEMOD, '1')
    assert big in sizes()


FC_CASES = [  # (activation, bias, lr_multiplier, bias_init)
    ('linear', True, 1.0, 1.0), ('linear', True, 0.01, 0.5), ('lrelu', True, 0.01, 0.0), ('lrelu', False, 1.0, 0.0),
    ('linear', False, 0.5, 0.0),
]


@pytest.mark.parametrize('act,bias,lr,bias_init', FC_CASES)
def test_dense_layer_equals_reference(act, bias, lr, bias_init, monkeypatch):
    torch.manual_seed(0)
    fc = FullyConnectedLayer(6, 5, bias=bias, activation=act, lr_multiplier=lr, bias_init=bias_init).double()
    if bias:
        with torch.no_grad():
            fc.bias.add_(torch.randn(5, dtype=torch.float64))
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    params = [x] + list(fc.parameters())
    fast = _grads(lambda: fc(x), params)
    monkeypatch.setenv(L.ENV_REFERENCE_FC, '1')
    ref = _grads(lambda: fc(x), params)
    assert len(fast) == 1 + len(params)
    for a, b in zip(fast, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
def test_cuda_demodulation_and_dense_layer_equal_reference(dtype, monkeypatch):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, 16, 16, generator=g).cuda().to(dtype).requires_grad_(True)
    weight = torch.randn(32, 64, 3, 3, generator=g).cuda().requires_grad_(True)
    styles = (torch.randn(4, 64, generator=g) + 1).cuda().requires_grad_(True)
    fc = FullyConnectedLayer(64, 32, activation='lrelu', lr_multiplier=0.01).cuda()
    h = torch.randn(4, 64, generator=g).cuda().requires_grad_(True)

    def run():
        y = modulated_conv2d(x, weight, styles, padding=1, fused_modconv=False)
        return _grads(lambda: y.float().square().mean() + fc(h).square().mean(),
                      (x, weight, styles, h, fc.weight, fc.bias))

    fast = run()
    monkeypatch.setenv(L.ENV_REFERENCE_DEMOD, '1')
    monkeypatch.setenv(L.ENV_REFERENCE_FC, '1')
    ref = run()
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for a, b in zip(fast, ref):
        scale = b.abs().max().item() + 1e-12
        torch.testing.assert_close(a.float() / scale, b.float() / scale, rtol=0, atol=tol)

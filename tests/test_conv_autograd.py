"""spherehead.ops.conv_autograd (convolutions whose gradients are again convolutions) against
torch's own convolution autograd (the reference, SPHEREHEAD_NO_CONV_AUTOGRAD=1): values,
gradients, second-order gradients (gradcheck / gradgradcheck in float64), the R1 penalty of a
small D and its parameter gradients, and which convolutions R1's second-order pass runs."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from spherehead.networks.discriminator import DualDiscriminator
from spherehead.networks.layers import modulated_conv2d
from spherehead.ops import conv_autograd as CA
from spherehead.ops.conv2d_resample import conv2d_resample
from spherehead.ops.upfirdn2d import setup_filter
from spherehead.train.config import LossConfig
from spherehead.train.losses import GANLoss

# (transposed, x shape, w shape, stride, padding, groups)
CASES = [
    (False, (2, 3, 7, 6), (4, 3, 3, 3), 1, 1, 1),          # 3x3 'same'
    (False, (2, 3, 9, 8), (5, 3, 3, 3), 2, 0, 1),          # stride 2, odd size: output_padding 1 / 0 on the way back
    (False, (2, 4, 6, 5), (6, 2, 3, 3), 1, (1, 0), 2),     # grouped, asymmetric padding
    (False, (2, 3, 5, 5), (4, 3, 1, 1), 1, 0, 1),          # 1x1
    (True, (2, 4, 4, 5), (4, 3, 3, 3), 2, 0, 1),           # transposed, stride 2 (G's upsampling)
    (True, (2, 4, 3, 4), (4, 2, 3, 3), 2, 1, 2),           # transposed, grouped (G's fused modulated conv)
]


# The same geometries, smaller (gradgradcheck's numerical Jacobians grow with the input size).
SMALL_CASES = [
    (False, (1, 2, 4, 4), (2, 2, 3, 3), 1, 1, 1),
    (False, (1, 2, 5, 4), (2, 2, 3, 3), 2, 0, 1),
    (False, (1, 4, 3, 3), (2, 2, 3, 3), 1, (1, 0), 2),
    (False, (1, 2, 3, 3), (2, 2, 1, 1), 1, 0, 1),
    (True, (1, 2, 2, 3), (2, 2, 3, 3), 2, 0, 1),
    (True, (1, 4, 2, 2), (4, 1, 3, 3), 2, 1, 2),
]


def _case(transposed, xs, ws, dtype=torch.float64, device='cpu', seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*xs, generator=g, dtype=dtype).to(device).requires_grad_(True)
    w = torch.randn(*ws, generator=g, dtype=dtype).to(device).requires_grad_(True)
    return x, w


def _ours(transposed, stride, padding, groups):
    fn = CA.conv_transpose2d if transposed else CA.conv2d
    return lambda x, w: fn(x, w, stride=stride, padding=padding, groups=groups)


def _torch(transposed, stride, padding, groups):
    fn = F.conv_transpose2d if transposed else F.conv2d
    return lambda x, w: fn(x, w, stride=stride, padding=padding, groups=groups)


def _orders(conv, x, w, seed=1):
    """(y, first-order grads of <y, dy>, second-order grads of |d<y,dy>/dx|^2 + |d<y,dy>/dw|^2 w.r.t. x, w, dy)."""
    y = conv(x, w)
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=y.dtype).to(y.device)
    dy.requires_grad_(True)
    gx, gw = torch.autograd.grad(y, (x, w), dy, create_graph=True)
    pen = gx.square().sum() + 0.5 * gw.square().sum()
    second = torch.autograd.grad(pen, (x, w, dy))
    return y, (gx, gw), second


@pytest.mark.parametrize('transposed,xs,ws,stride,padding,groups', CASES)
def test_values_gradients_and_second_order_equal_torch(transposed, xs, ws, stride, padding, groups):
    x, w = _case(transposed, xs, ws)
    ours = _orders(_ours(transposed, stride, padding, groups), x, w)
    ref = _orders(_torch(transposed, stride, padding, groups), x, w)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-12, atol=1e-12)
    for a, b in zip(ours[1] + ours[2], ref[1] + ref[2]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('transposed,xs,ws,stride,padding,groups', SMALL_CASES)
def test_gradcheck_and_gradgradcheck(transposed, xs, ws, stride, padding, groups):
    x, w = _case(transposed, xs, ws)
    fn = _ours(transposed, stride, padding, groups)
    # fast mode: random projections of the Jacobians (the exact entries are compared with torch above)
    assert torch.autograd.gradcheck(fn, (x, w), fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, (x, w), fast_mode=True)


def test_third_order_through_the_weight_gradient_function():
    """The weight-gradient Function's own backward: d/dx of |dL/dw|^2 differentiated once more."""
    x, w = _case(False, (1, 2, 5, 5), (3, 2, 3, 3))

    def third(conv):
        y = conv(x, w)
        (gw,) = torch.autograd.grad(y.square().sum(), w, create_graph=True)
        (gx,) = torch.autograd.grad(gw.square().sum(), x, create_graph=True)
        return torch.autograd.grad(gx.sum(), w)[0]

    torch.testing.assert_close(third(_ours(False, 2, 1, 1)), third(_torch(False, 2, 1, 1)), rtol=1e-10, atol=1e-10)


def _graph_nodes(t: torch.Tensor) -> set[str]:
    seen, todo, names = set(), [t.grad_fn], set()
    while todo:
        n = todo.pop()
        if n is None or n in seen:
            continue
        seen.add(n)
        names.add(type(n).__name__)
        todo.extend(f for f, _ in n.next_functions)
    return names


def test_inner_pass_of_r1_computes_no_weight_gradient():
    """autograd.grad(y, x, create_graph=True) (R1's inner pass) builds no weight-gradient node;
    asking for the weight gradient too builds one, and .backward() fills both."""
    x, w0 = _case(False, (2, 3, 8, 8), (4, 3, 3, 3))
    w = w0 * 0.5                                     # as Conv2dLayer: a scaled weight, not the leaf
    y = CA.conv2d(x, w, stride=2, padding=1)
    (gx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    assert '_ConvWeightGradBackward' not in _graph_nodes(gx)
    assert '_ConvBackward' in _graph_nodes(gx)       # the input gradient is a differentiable convolution
    y = CA.conv2d(x, w, stride=2, padding=1)
    gx, gw = torch.autograd.grad(y.sum(), (x, w), create_graph=True)
    assert '_ConvWeightGradBackward' in _graph_nodes(gw)
    CA.conv2d(x, w, stride=2, padding=1).sum().backward()
    assert x.grad is not None and w0.grad is not None


def test_without_the_engine_query_every_gradient_is_computed_with_one_warning(monkeypatch):
    monkeypatch.delattr(torch._C, '_will_engine_execute_node')
    monkeypatch.setattr(CA, '_warned', False)
    x, w = _case(False, (2, 3, 7, 6), (4, 3, 3, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        ours = _orders(_ours(False, 2, 1, 1), x, w)
        _orders(_ours(False, 2, 1, 1), x, w)
    assert len([c for c in caught if 'cannot tell which gradients' in str(c.message)]) == 1
    ref = _orders(_torch(False, 2, 1, 1), x, w)
    for a, b in zip(ours[1] + ours[2], ref[1] + ref[2]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_only_the_block_uses_it_and_the_switch_or_no_grad_turn_it_off(monkeypatch):
    x, w = _case(False, (1, 2, 5, 5), (3, 2, 3, 3))
    f = setup_filter([1, 3, 3, 1])
    node = lambda: type(conv2d_resample(x, w, f, down=2, padding=1).grad_fn).__name__
    assert node() == 'ConvolutionBackward0'          # first-order passes keep torch's own (no host cost)
    with CA.second_order_gradients():
        assert node() == '_ConvBackward'
        with torch.no_grad():
            assert CA.use_conv_autograd(x, w) is False
        monkeypatch.setenv(CA.ENV_DISABLE, '1')
        assert CA.use_conv_autograd(x, w) is False
        assert node() == 'ConvolutionBackward0'
    monkeypatch.delenv(CA.ENV_DISABLE)
    assert CA.use_conv_autograd(x, w) is False      # the block has ended


RESAMPLE_CASES = [  # (kernel, up, down, groups, flip_weight)
    (3, 1, 1, 1, True), (3, 1, 2, 1, True), (1, 1, 2, 1, True), (3, 2, 1, 1, False), (1, 2, 1, 1, True),
    (3, 2, 1, 2, False), (3, 1, 1, 2, True),
]


@pytest.mark.parametrize('k,up,down,groups,flip', RESAMPLE_CASES)
def test_conv2d_resample_second_order_equals_reference(k, up, down, groups, flip, monkeypatch):
    f = setup_filter([1, 3, 3, 1])
    x, w = _case(False, (2, 4, 8, 8), (6, 4 // groups, k, k))
    conv = lambda a, b: conv2d_resample(a, b, f, up=up, down=down, padding=k // 2, groups=groups, flip_weight=flip)
    with CA.second_order_gradients():
        ours = _orders(conv, x, w)
    monkeypatch.setenv(CA.ENV_DISABLE, '1')
    ref = _orders(conv, x, w)
    for a, b in zip((ours[0],) + ours[1] + ours[2], (ref[0],) + ref[1] + ref[2]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_modulated_conv_gradients_equal_reference():
    """G's fused modulated convolution (grouped, transposed for up 2): first-order gradients."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 4, 6, 6, generator=g).requires_grad_(True)
    weight = torch.randn(5, 4, 3, 3, generator=g).requires_grad_(True)
    styles = torch.randn(2, 4, generator=g).requires_grad_(True)
    f = setup_filter([1, 3, 3, 1])

    def run():
        y = modulated_conv2d(x, weight, styles, up=2, padding=1, resample_filter=f, flip_weight=False)
        return (y,) + torch.autograd.grad(y.square().sum(), (x, weight, styles))

    with CA.second_order_gradients():
        ours = run()
    for a, b in zip(ours, run()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def _tiny_d(device='cpu'):
    torch.manual_seed(0)
    return DualDiscriminator(c_dim=25, img_resolution=32, mask_channels=1, parsing_channels=20, channel_base=256,
                             channel_max=32, mapping_kwargs=dict(num_layers=2)).to(device).train()


def _real(device='cpu', n=4):
    g = torch.Generator().manual_seed(7)
    real = {'image': torch.rand(n, 3, 32, 32, generator=g) * 2 - 1,
            'image_raw': torch.rand(n, 3, 16, 16, generator=g) * 2 - 1,
            'image_mask': torch.rand(n, 1, 16, 16, generator=g),
            'image_parsing': torch.rand(n, 20, 16, 16, generator=g)}
    return {k: v.to(device) for k, v in real.items()}, torch.randn(n, 25, generator=g).to(device)


def _r1_grads(D, real, c, blur):
    D.requires_grad_(True).zero_grad(set_to_none=True)
    stats = GANLoss(None, D, LossConfig(r1_gamma=1.0, r1_gamma_seg=0.5)).d_r1(real, c, blur, gain=16)
    return stats, {n: p.grad.clone() for n, p in D.named_parameters() if p.grad is not None}


@pytest.mark.parametrize('blur', [0.0, 1.0])
def test_r1_penalty_and_d_gradients_equal_reference(blur, monkeypatch):
    D = _tiny_d()
    real, c = _real()
    stats, grads = _r1_grads(D, real, c, blur)
    monkeypatch.setenv(CA.ENV_DISABLE, '1')
    ref_stats, ref_grads = _r1_grads(D, real, c, blur)
    for k in ref_stats:
        torch.testing.assert_close(stats[k], ref_stats[k], rtol=1e-5, atol=1e-7)
    assert set(grads) == set(ref_grads) and len(grads) > 20
    for n in grads:
        scale = ref_grads[n].abs().max().item() + 1e-12
        torch.testing.assert_close(grads[n] / scale, ref_grads[n] / scale, rtol=0, atol=2e-5, msg=n)
    assert any(g.abs().max() > 0 for n, g in grads.items() if 'conv' in n)


def _second_order_conv_weights(D, real, c) -> list[list[int]]:
    """Weight shapes of every convolution R1's second-order pass (the .backward() of the penalty) runs."""
    inputs = {k: v.detach().requires_grad_(True) for k, v in real.items()}
    D.requires_grad_(True)
    with CA.second_order_gradients():
        logits = D(inputs, c)
    grads = torch.autograd.grad(logits.sum(), list(inputs.values()), create_graph=True)
    pen = sum(g.square().sum() for g in grads)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
        pen.backward()
    shapes = []
    for e in p.events():
        if e.name == 'aten::convolution':
            shapes.append(list(e.input_shapes[1]))
        elif e.name == 'aten::convolution_backward':
            shapes.append(list(e.input_shapes[2]))
    return shapes


def test_r1_second_order_pass_runs_no_image_sized_kernel(monkeypatch):
    """torch's double backward computes each weight-gradient term as a convolution whose kernel is
    an activation map (up to 32 px here, 512 px at the paper config); ours runs none (the largest
    kernel is the 4x4 FIR filter of the reference upfirdn2d)."""
    D = _tiny_d()
    real, c = _real()
    ours = _second_order_conv_weights(D, real, c)
    assert ours and max(max(s[2:]) for s in ours) <= 4
    monkeypatch.setenv(CA.ENV_DISABLE, '1')
    ref = _second_order_conv_weights(D, real, c)
    assert max(max(s[2:]) for s in ref) >= 16


# ---------------------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('transposed,xs,ws,stride,padding,groups', CASES)
def test_cuda_second_order_equals_torch(transposed, xs, ws, stride, padding, groups, dtype):
    x, w = _case(transposed, xs, ws, dtype=dtype, device='cuda')
    ours = _orders(_ours(transposed, stride, padding, groups), x, w)
    ref = _orders(_torch(transposed, stride, padding, groups), x, w)
    tol = dict(rtol=1e-3, atol=1e-3) if dtype == torch.float32 else dict(rtol=2e-2, atol=5e-2)
    for a, b in zip((ours[0],) + ours[1] + ours[2], (ref[0],) + ref[1] + ref[2]):
        torch.testing.assert_close(a.float(), b.float(), **tol)


@pytest.mark.cuda
@pytest.mark.parametrize('mixed', [False, True])
def test_cuda_r1_d_gradients_equal_reference(mixed, monkeypatch):
    torch.backends.cudnn.allow_tf32 = False
    try:
        D = _tiny_d('cuda')
        D.mixed_precision = mixed
        real, c = _real('cuda')
        stats, grads = _r1_grads(D, real, c, 0.0)
        monkeypatch.setenv(CA.ENV_DISABLE, '1')
        ref_stats, ref_grads = _r1_grads(D, real, c, 0.0)
    finally:
        torch.backends.cudnn.allow_tf32 = True
    tol = 2e-2 if mixed else 1e-4
    for k in ref_stats:
        torch.testing.assert_close(stats[k], ref_stats[k], rtol=tol, atol=1e-6)
    for n in grads:
        scale = ref_grads[n].abs().max().item() + 1e-12
        torch.testing.assert_close(grads[n] / scale, ref_grads[n] / scale, rtol=0, atol=tol, msg=n)

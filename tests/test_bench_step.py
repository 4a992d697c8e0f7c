"""`spherehead bench train-step`'s comparison axes: the variant (which of this round's formulations
run, each a SPHEREHEAD_NO_* switch) and the backend flags (cuDNN autotuning, TF32) are in effect
while each setting is timed, printed with it, and restored."""
from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner

from spherehead.cli import main
from spherehead.train import bench_step
from spherehead.train.backend import BackendFlags, describe_current
from spherehead.train.bench_step import StepSetting
from spherehead.train.config import TrainingConfig


def _flags():
    return (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)


def test_backend_flags_are_set_in_the_block_and_restored():
    before = _flags()
    with BackendFlags(cudnn_benchmark=True, tf32='off').applied():
        assert _flags() == (True, False, False)
        assert describe_current() == 'cudnn.benchmark on, TF32 convolutions off, matmuls off'
    with BackendFlags(tf32='on').applied():
        assert _flags() == (False, True, True)
    with BackendFlags(tf32='torch').applied():
        assert _flags()[1:] == before[1:]            # 'torch' leaves TF32 as it is
    assert _flags() == before
    with pytest.raises(ValueError, match='tf32'):
        BackendFlags(tf32='maybe')
    with pytest.raises(ValueError, match='variant'):
        StepSetting(variant='mine')


class _Records(list):
    """The flags and switches of each pass run, in order; .calls: (grad_sync, pass) of each; .modes:
    the gradient exchange of each set of passes built."""
    calls: list
    modes: list


@pytest.fixture
def recorded(monkeypatch):
    """train_passes replaced by four no-op passes that record the flags and the switches they ran under."""
    seen = _Records()
    seen.calls, seen.modes = [], []

    def fake_train_passes(preset_name, batch, device, neural_res=None, precision='fp32', grad_sync='overlap'):
        from spherehead.train.config import default_config

        def record(name):
            seen.append(_flags() + tuple(os.environ.get(e) for e in bench_step.SWITCHES.values()))
            seen.calls.append((grad_sync, name))
        seen.modes.append(grad_sync)
        names = ('g_main', 'g_reg', 'd_main', 'd_r1')
        return default_config(preset_name), neural_res or 64, {k: (lambda k=k: record(k)) for k in names}

    monkeypatch.setattr(bench_step, 'train_passes', fake_train_passes)
    for env in bench_step.SWITCHES.values():
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv('SPHEREHEAD_NO_FAST_FC', '1')     # the user's own setting, overridden and restored
    return seen


def test_train_step_runs_every_combination_under_its_flags(recorded):
    before = _flags()
    res = CliRunner().invoke(main, ['bench', '--what', 'train-step', '--config', 'tiny', '--device', 'cpu',
                                    '--repeat', '1', '--path', 'reference', '--variant', 'none',
                                    '--variant', 'no-fast-demod',
                                    '--cudnn-benchmark', 'off', '--cudnn-benchmark', 'on', '--tf32', 'off'])
    assert res.exit_code == 0, res.output
    blocks = [ln for ln in res.stdout.splitlines() if ln.startswith('-- ')]
    head = '-- reference (PyTorch reference), precision mixed, '
    assert blocks == [
        head + 'without conv-autograd, fast-demod, fast-fc; cudnn.benchmark off, TF32 convolutions off, matmuls off',
        head + 'without conv-autograd, fast-demod, fast-fc; cudnn.benchmark on, TF32 convolutions off, matmuls off',
        head + 'without fast-demod; cudnn.benchmark off, TF32 convolutions off, matmuls off',
        head + 'without fast-demod; cudnn.benchmark on, TF32 convolutions off, matmuls off']
    assert recorded.modes == ['overlap']      # one set of networks serves every setting
    # Pass by pass: a warm-up under each setting in turn, then the timed run under each in turn
    # (interleaved), each under its own flags and switches:
    # (cudnn.benchmark, TF32 conv, TF32 matmul, NO_CONV_AUTOGRAD, NO_FAST_DEMOD, NO_FAST_FC)
    expected = [(False, False, False, '1', '1', '1'), (True, False, False, '1', '1', '1'),
                (False, False, False, '0', '1', '0'), (True, False, False, '0', '1', '0')]
    assert recorded == expected * 2 * 4
    assert [c[1] for c in recorded.calls] == [p for p in ('g_main', 'g_reg', 'd_main', 'd_r1') for _ in range(8)]
    assert '4 settings timed interleaved' in res.stdout
    assert sum(ln.startswith('speed-up (reference mixed [none, benchmark off, tf32 off] / ')
               for ln in res.stdout.splitlines()) == 3
    assert _flags() == before and os.environ['SPHEREHEAD_NO_FAST_FC'] == '1'
    assert 'SPHEREHEAD_NO_CONV_AUTOGRAD' not in os.environ


def test_train_step_default_is_all_with_the_training_flags(recorded):
    """The bench's defaults are train.py's: every formulation, cuDNN autotuning on, torch's TF32 defaults."""
    res = CliRunner().invoke(main, ['bench', 'train-step', '--config', 'tiny', '--device', 'cpu', '--repeat', '1'])
    assert res.exit_code == 0, res.output
    blocks = [ln for ln in res.stdout.splitlines() if ln.startswith('-- ')]
    with BackendFlags(cudnn_benchmark=TrainingConfig().cudnn_benchmark, tf32=TrainingConfig().tf32).applied():
        flags = describe_current()
    assert blocks == ['-- reference (PyTorch reference), precision mixed, all of conv-autograd, fast-demod, fast-fc; '
                      + flags] and 'cudnn.benchmark on' in flags
    assert {r[3:] for r in recorded} == {('0', '0', '0')} and 'speed-up' not in res.stdout


@pytest.mark.parametrize('args,option', [
    (['--what', 'sampler', '--tf32', 'off'], '--tf32'),
    (['--what', 'orbit', '--cudnn-benchmark', 'on'], '--cudnn-benchmark'),
    (['--what', 'generator', '--variant', 'none'], '--variant'),
    (['--what', 'train-step', '--tf32', 'half'], '--tf32'),
])
def test_train_step_options_elsewhere_are_one_line_errors(args, option):
    res = CliRunner().invoke(main, ['bench'] + args + ['--device', 'cpu'])
    assert res.exit_code == 2 and 'Traceback' not in res.output
    assert option in res.stderr


def test_grad_sync_modes_run_under_every_setting_interleaved(recorded):
    res = CliRunner().invoke(main, ['bench', 'train-step', '--config', 'tiny', '--device', 'cpu', '--repeat', '2',
                                    '--grad-sync', 'flat', '--grad-sync', 'overlap', '--variant', 'none',
                                    '--variant', 'all', '--tf32', 'off', '--cudnn-benchmark', 'off'])
    assert res.exit_code == 0, res.output
    assert recorded.modes == ['flat', 'overlap']          # one set of networks per mode, for both settings
    out = res.stdout.splitlines()
    blocks = [ln for ln in out if ln.startswith('-- ')]
    head = '-- reference (PyTorch reference), precision mixed, '
    none = 'without conv-autograd, fast-demod, fast-fc; cudnn.benchmark off, TF32 convolutions off, matmuls off'
    every = 'all of conv-autograd, fast-demod, fast-fc; cudnn.benchmark off, TF32 convolutions off, matmuls off'
    assert blocks == [head + none, head + none, head + every, head + every]
    configs = [ln for ln in out if ln.startswith('config ')]
    assert [c.split('  ')[-1] for c in configs] == ['grad-sync flat', 'grad-sync overlap'] * 2
    # Pass by pass: a warm-up, then 2 timed rounds; each round runs both settings in turn and,
    # under each, both modes in turn.
    assert recorded.calls == [(m, p) for p in ('g_main', 'g_reg', 'd_main', 'd_r1') for _ in range(3 * 2)
                              for m in ('flat', 'overlap')]
    assert [r[3:] for r in recorded] == ([('1', '1', '1')] * 2 + [('0', '0', '0')] * 2) * 3 * 4
    speedups = [ln for ln in out if ln.startswith('speed-up')]
    assert [ln.split(':')[0] for ln in speedups] == [
        'speed-up (reference mixed flat [none, benchmark off, tf32 off] / ' + label + ')'
        for label in ('reference mixed overlap [none, benchmark off, tf32 off]',
                      'reference mixed flat [all, benchmark off, tf32 off]',
                      'reference mixed overlap [all, benchmark off, tf32 off]')]
    assert 'timed interleaved' in res.stdout
    per_pass = [ln for ln in out if ln.startswith('per pass')]
    assert len(per_pass) == 4 and all(ln.count('(IQR ') == 4 for ln in per_pass), per_pass


def test_quartiles_of_the_timed_runs():
    assert bench_step.quartiles([5.0, 1.0, 3.0, 2.0, 4.0]) == (2.0, 4.0)
    assert bench_step.quartiles([7.0]) == (7.0, 7.0)


@pytest.mark.parametrize('args,option', [
    (['--what', 'sampler', '--grad-sync', 'flat'], '--grad-sync'),
    (['--what', 'orbit', '--path', 'fast'], '--path'),
])
def test_exchange_and_path_options_elsewhere_are_one_line_errors(args, option):
    res = CliRunner().invoke(main, ['bench'] + args + ['--device', 'cpu'])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and option in lines[0] and 'train-step only' in lines[0], res.stderr

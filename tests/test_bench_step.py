"""`spherehead bench train-step`'s comparison axes: the convolution autograd and the backend flags
(cuDNN autotuning, TF32) are in effect while each setting is timed, printed with it, and restored."""
from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner

from spherehead.cli import main
from spherehead.ops import conv_autograd
from spherehead.train import bench_step
from spherehead.train.backend import BackendFlags, describe_current
from spherehead.train.bench_step import StepSetting


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
    with pytest.raises(ValueError, match='conv_autograd'):
        StepSetting(conv_autograd='mine')


@pytest.fixture
def recorded(monkeypatch):
    """train_passes replaced by four no-op passes that record the flags and the switch they ran under."""
    seen = []

    def fake_train_passes(preset_name, batch, device, neural_res=None, precision='fp32'):
        from spherehead.train.config import default_config
        record = lambda: seen.append(_flags() + (os.environ.get(conv_autograd.ENV_DISABLE),))
        return default_config(preset_name), neural_res or 64, {k: record for k in ('g_main', 'g_reg', 'd_main', 'd_r1')}

    monkeypatch.setattr(bench_step, 'train_passes', fake_train_passes)
    monkeypatch.delenv(conv_autograd.ENV_DISABLE, raising=False)
    return seen


def test_train_step_runs_every_combination_under_its_flags(recorded):
    before = _flags()
    res = CliRunner().invoke(main, ['bench', '--what', 'train-step', '--config', 'tiny', '--device', 'cpu', '--repeat', '1',
                                    '--path', 'fast', '--conv-autograd', 'torch', '--conv-autograd', 'ours',
                                    '--cudnn-benchmark', 'off', '--cudnn-benchmark', 'on', '--tf32', 'off'])
    assert res.exit_code == 0, res.output
    blocks = [ln for ln in res.stdout.splitlines() if ln.startswith('-- ')]
    assert blocks == [
        '-- reference (PyTorch reference), precision mixed, conv autograd torch, cudnn.benchmark off, TF32 convolutions off, matmuls off',
        '-- reference (PyTorch reference), precision mixed, conv autograd torch, cudnn.benchmark on, TF32 convolutions off, matmuls off',
        '-- reference (PyTorch reference), precision mixed, conv autograd ours, cudnn.benchmark off, TF32 convolutions off, matmuls off',
        '-- reference (PyTorch reference), precision mixed, conv autograd ours, cudnn.benchmark on, TF32 convolutions off, matmuls off']
    assert 'note: --path fast needs CUDA; timing the reference' in res.stdout
    # 4 passes x (1 warm-up + 1 timed) per setting, each under its setting
    expected = [(False, False, False, '1'), (True, False, False, '1'), (False, False, False, '0'), (True, False, False, '0')]
    assert recorded == [e for e in expected for _ in range(8)]
    assert sum(ln.startswith('speed-up (reference mixed [conv torch, benchmark off, tf32 off] / ')
               for ln in res.stdout.splitlines()) == 3
    assert _flags() == before and conv_autograd.ENV_DISABLE not in os.environ


def test_train_step_default_is_ours_with_torchs_flags(recorded):
    res = CliRunner().invoke(main, ['bench', 'train-step', '--config', 'tiny', '--device', 'cpu', '--repeat', '1'])
    assert res.exit_code == 0, res.output
    blocks = [ln for ln in res.stdout.splitlines() if ln.startswith('-- ')]
    assert blocks == [f'-- reference (PyTorch reference), precision mixed, conv autograd ours, {describe_current()}']
    assert {r[3] for r in recorded} == {'0'} and 'speed-up' not in res.stdout


@pytest.mark.parametrize('args,option', [
    (['--what', 'sampler', '--tf32', 'off'], '--tf32'),
    (['--what', 'orbit', '--cudnn-benchmark', 'on'], '--cudnn-benchmark'),
    (['--what', 'generator', '--conv-autograd', 'torch'], '--conv-autograd'),
    (['--what', 'train-step', '--tf32', 'half'], '--tf32'),
])
def test_train_step_options_elsewhere_are_one_line_errors(args, option):
    res = CliRunner().invoke(main, ['bench'] + args + ['--device', 'cpu'])
    assert res.exit_code == 2 and 'Traceback' not in res.output
    assert option in res.stderr

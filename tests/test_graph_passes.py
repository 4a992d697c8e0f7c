"""docs/bench/graph_passes.py: whole training passes eager against replayed from CUDA graphs (issue 22).
On a CPU its plumbing runs with nothing captured; on CUDA a captured optimiser step replays exactly
what the same steps run eagerly do."""
from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / 'docs' / 'bench' / 'graph_passes.py'


def _script_module():
    spec = importlib.util.spec_from_file_location('graph_passes', SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plumbing_on_a_cpu_writes_every_pass_both_ways(tmp_path):
    env = dict(os.environ, DEVICE='cpu', NEURAL='16', OUT=str(tmp_path))
    p = subprocess.run([sys.executable, str(SCRIPT), 'tiny', 'fp32', '2'], env=env, capture_output=True, text=True,
                       timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads((tmp_path / 'graph_passes.json').read_text())
    assert r['gpu'].startswith('cpu (plumbing check') and r['neural'] == 16 and r['repeat'] == 2
    assert set(r['passes']) == {'g_main', 'g_reg', 'd_main', 'd_r1'} and r['capture_failed'] == {}
    for row in r['passes'].values():
        assert set(row) == {'eager', 'graphed'}
        for v in row.values():
            lo, hi = v['iqr_ms']
            assert 0 < lo <= v['median_ms'] <= hi
    weights = {'g_main': 1, 'd_main': 1, 'g_reg': 1 / 4, 'd_r1': 1 / 16}
    eager = sum(w * r['passes'][n]['eager']['median_ms'] for n, w in weights.items())
    assert r['iteration_ms_eager'] == pytest.approx(eager)
    assert 'stand-in, not captured' in p.stdout and 'iteration (regularisers amortised): eager ' in p.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the message on a machine without CUDA')
def test_without_a_gpu_it_says_so_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != 'DEVICE'}
    p = subprocess.run([sys.executable, str(SCRIPT), 'tiny'], env=dict(env, OUT=str(tmp_path)), capture_output=True,
                       text=True, timeout=120, cwd=ROOT)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and 'needs a CUDA GPU' in lines[0] and 'DEVICE=cpu' in lines[0]


@pytest.mark.cuda
def test_a_captured_optimiser_step_replays_the_eager_steps():
    """capture() warms up 3 steps, then captures one; a replay is the 4th step, equal to 4 eager steps."""
    from spherehead.train.loop import lazy_adam
    device = torch.device('cuda')
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LeakyReLU(0.2), torch.nn.Linear(32, 1)).to(device)
    twin = copy.deepcopy(net)
    x = torch.randn(8, 16, device=device)

    def step_of(model, opt):
        def step():
            opt.zero_grad(set_to_none=False)
            model(x).square().mean().backward()
            opt.step()
        return step

    eager_step = step_of(twin, lazy_adam(twin.parameters(), 1e-2, (0.0, 0.99), 1e-8, 4))
    graphed_step = step_of(net, lazy_adam(net.parameters(), 1e-2, (0.0, 0.99), 1e-8, 4, capturable=True))
    for p in net.parameters():        # gradients exist before the capture: the graph accumulates into them
        p.grad = torch.zeros_like(p)
    replay = _script_module().capture(graphed_step, device)
    for _ in range(4):
        eager_step()
    replay()
    torch.cuda.synchronize()
    for a, b in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)

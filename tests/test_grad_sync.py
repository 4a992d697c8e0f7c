"""The gradient exchange (spherehead/train/grad_sync.py), the stop vote, --batch-gpu and --grad-sync.

In-process tests use one rank (hooks forced on where the bucket bookkeeping is under test); the
two-process test runs tests/ddp_harness.py under torchrun (gloo, CPU) and compares it with one process.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from spherehead.data.synth import SynthOptions, synth_dataset
from spherehead.errors import UserError
from spherehead.train.config import TrainingConfig
from spherehead.train.distributed import DistInfo, StopVote
from spherehead.train.grad_sync import GradientSync, bucket_plan
from spherehead.train.setup import check_batch, run_description

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tests'))
import ddp_harness as harness  # noqa: E402

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1',
       'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
ENV.pop('SPHEREHEAD_TRACEBACK', None)


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Chain(torch.nn.Module):
    """Linear layers in a row: gradients arrive from the last layer to the first."""

    def __init__(self, n: int = 6, width: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.ModuleList([torch.nn.Linear(width, width) for _ in range(n)])
        self.spare = torch.nn.Linear(width, 1)          # used only when asked

    def forward(self, x, spare_first: bool = False, use_spare: bool = False):
        extra = self.spare(x).sum() if use_spare and spare_first else 0
        for layer in self.layers:
            x = torch.tanh(layer(x))
        out = x.square().mean()
        if use_spare and not spare_first:
            out = out + self.spare(x).sum()
        return out + extra


def grads_of(m: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in m.parameters()]


# ---------------------------------------------------------------------- buckets
def test_bucket_plan_closes_buckets_at_their_caps_in_the_given_order():
    sizes = [4, 4, 4, 4, 4, 4]
    assert bucket_plan(sizes, [5, 4, 3, 2, 1, 0], cap_bytes=8, first_cap_bytes=4) == [[5], [4, 3], [2, 1], [0]]
    assert bucket_plan(sizes, [0, 1, 2, 3, 4, 5], cap_bytes=100, first_cap_bytes=100) == [[0, 1, 2, 3, 4, 5]]
    assert bucket_plan([10, 1, 1], [0, 1, 2], cap_bytes=2, first_cap_bytes=2) == [[0], [1, 2]]


@pytest.mark.parametrize('hooks', [False, True])
def test_one_rank_overlap_gives_the_flat_paths_gradients_bit_for_bit(hooks):
    """Same values as the reference (autograd's own .grad, zeros for unused parameters, NaN -> 0,
    +-Inf -> +-1e5), kept as views into one flat buffer; zero_grad(set_to_none) is undone by begin()."""
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(1))
    ref, fast = Chain(), Chain()
    flat = GradientSync(ref, DistInfo(), 'flat')
    over = GradientSync(fast, DistInfo(), 'overlap', bucket_mib=512 / 2 ** 20, hooks=hooks)
    for step in range(3):
        for m, sync in ((ref, flat), (fast, over)):
            sync.begin('pass')
            m(x * (step + 1)).backward()
            m.layers[0].bias.grad[0] = float('nan')        # as a float16 overflow would leave it
            m.layers[1].bias.grad[:2] = torch.tensor([float('inf'), -float('inf')])
            sync.finish()
        for a, b in zip(grads_of(ref), grads_of(fast)):
            assert torch.equal(a, b)
        assert torch.equal(ref.spare.weight.grad, torch.zeros_like(ref.spare.weight))       # unused: zeros
        assert ref.layers[0].bias.grad[0] == 0 and ref.layers[1].bias.grad[:2].tolist() == [1e5, -1e5]
        inside = range(over.flat.data_ptr(), over.flat.data_ptr() + over.flat.numel() * 4)
        assert all(p.grad.data_ptr() in inside for p in fast.parameters())
        fast.zero_grad(set_to_none=True)
    assert len(over.buckets) > 3


def sends_during_backward(m: Chain, sync: GradientSync, key: str | None, **forward) -> list[tuple[int, int]]:
    """[(bucket, gradients arrived when it was sent)] of one pass; finish()'s sends have arrived = -1."""
    sent, arrived = [], []
    send = sync._send
    sync._send = lambda b: (sent.append((b, len(arrived) if sync._active else -1)), send(b))
    handles = [p.register_post_accumulate_grad_hook(lambda p: arrived.append(p)) for p in m.parameters()]
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(2))
    try:
        sync.begin(key)
        m(x, **forward).backward()
        sync.finish()
    finally:
        for h in handles:
            h.remove()
        del sync._send
    return sent


def test_buckets_are_sent_in_order_while_the_backward_runs():
    m = Chain().requires_grad_(True)
    sync = GradientSync(m, DistInfo(), 'overlap', bucket_mib=600 / 2 ** 20, hooks=True)
    names = [n for n, _ in m.named_parameters()]
    # First pass: reverse registration order puts the unused `spare` in the first bucket, and
    # buckets go strictly in order: nothing is sent before finish().
    first = sends_during_backward(m, sync, 'main')
    assert [b for b, _ in first] == list(range(len(sync.buckets)))
    assert all(when == -1 for _, when in first)
    # Then the buckets follow the order the gradients arrived (`spare` last). Without a key every
    # parameter is waited for: each bucket (a layer's weight and bias) goes as soon as its second
    # gradient is in (counted here after the send, hence 1, 3, 5, ...), only `spare`'s at the end.
    second = sends_during_backward(m, sync, None)
    assert [b for b, _ in second] == list(range(len(sync.buckets)))
    assert [{names[i].split('.')[1] for i in b} for b in sync.buckets] == [{'5'}, {'4'}, {'3'}, {'2'}, {'1'}, {'0'},
                                                                         {'weight', 'bias'}]
    assert {names[i].split('.')[0] for i in sync.buckets[-1]} == {'spare'}
    assert [when for _, when in second] == [1, 3, 5, 7, 9, 11, -1]
    # Under its key the pass is known not to use `spare`: its bucket is not waited for either.
    third = sends_during_backward(m, sync, 'main')
    assert [b for b, _ in third] == list(range(len(sync.buckets))) and all(when != -1 for _, when in third), third


def test_a_gradient_for_a_bucket_already_sent_is_an_error_naming_the_parameter():
    m = Chain().requires_grad_(True)
    sync = GradientSync(m, DistInfo(), 'overlap', bucket_mib=600 / 2 ** 20, hooks=True)
    sends_during_backward(m, sync, 'main')          # 'main' does not use `spare`
    # The same key for a pass that does use it (computed first, so its gradients arrive last)
    with pytest.raises(RuntimeError, match=r"spare\.(weight|bias) got a gradient after its bucket was sent.*'main'"):
        sends_during_backward(m, sync, 'main', use_spare=True, spare_first=True)
    # Under a key of its own it is fine.
    sends_during_backward(m, sync, 'with spare', use_spare=True, spare_first=True)


def test_two_backward_calls_in_one_pass_are_an_error():
    m = Chain().requires_grad_(True)
    sync = GradientSync(m, DistInfo(), 'overlap', hooks=True)
    x = torch.randn(3, 16)
    sync.begin()
    m(x).backward()
    with pytest.raises(RuntimeError, match='second gradient in one pass'):
        m(x).backward()


def test_overlap_falls_back_to_flat_with_one_warning_when_parameters_are_mixed():
    m = Chain()
    m.spare.half()
    with pytest.warns(RuntimeWarning, match='overlapped .* off .*several dtypes') as w:
        a = GradientSync(m, DistInfo(), 'overlap')
        b = GradientSync(m, DistInfo(), 'overlap')      # the same reason again: no second warning
    assert a.mode == b.mode == 'flat'
    assert len([x for x in w if 'overlapped' in str(x.message)]) == 1


def test_the_stop_vote_on_one_rank_is_the_flag_itself():
    vote = StopVote(DistInfo(), 4)
    assert [vote.poll(s == 3, s) for s in range(1, 6)] == [False, False, True, False, False]
    vote.close()


# ---------------------------------------------------------------------- two processes
def _torchrun_harness(tmp_path: Path) -> dict:
    data = tmp_path / 'heads.zip'
    synth_dataset(SynthOptions(out=str(data), count=24, resolution=32, seed=0, front_bias=0.5, workers=1),
                  progress=False)
    out = tmp_path / 'two.pt'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           str(ROOT / 'tests' / 'ddp_harness.py'), str(out), str(data), str(tmp_path / 'runs')]
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=400)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    return torch.load(out)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.slow
def test_two_gloo_processes_train_as_one_process_at_the_same_global_batch(tmp_path):
    """Two ranks (batch 2 each) against one process (batch 4), both exchange modes.

    1. Exactly what data parallelism means: one process running the global batch as the ranks' two
       halves, one after the other, gradients summed and halved, gives the same gradients for every
       pass and the same weights after 4 iterations, bit for bit (a + b = b + a).
    2. One process running the global batch in one pass: the same within float tolerance. In float32
       this model's gradient is not a smooth function of rounding: D's leaky ReLUs switch slope where
       a pre-activation sits within rounding of 0, so a batch of 4 against two of 2 (different
       summation orders) already moved the first pass's G gradient by 3e-4 relative, and one float32
       step on every latent moved it as much. So the comparison runs with float64 parameters; what
       is left is the model's own float32 casts (ray directions, importance weights, the losses'
       logits, D's fake inputs: relative rounding 2^-24 = 6e-8 each), which a different batch split
       rounds differently: measured 4e-7 to 2e-6 relative per pass. Tolerance: 1e-4 relative per
       pass (1700 float32 roundings), far below what a broken exchange gives (a rank's own half-batch
       gradient, or a sum instead of a mean: 0.1 to 1). The weights: Adam with beta1 = 0 moves each
       element by about +-lr whatever the gradient's size, so an element whose gradient is below
       that error can move differently; such elements are few, and the change of the weights over
       the run (w - w0) agrees within 1e-3 in relative norm (measured: 2e-5).
    Also: both modes agree bit for bit (here and in the real Trainer, float32, with lazy
    regularisers and spheres drawn per step), every rank holds the same weights, a parameter only one
    rank uses gets the average on both, and the ranks stop on the same step."""
    two = _torchrun_harness(tmp_path)
    assert two['world'] == 2
    one_pass = harness.global_batch_run('flat', DistInfo(), float64=True)
    halves = harness.global_batch_run('overlap', DistInfo(), micro=2, float64=True)
    w0 = harness.build_networks(harness.split_invariant_config('flat'), 0)
    start = {f'G.{k}': v.detach().double() for k, v in w0.G.named_parameters()}
    start.update({f'D.{k}': v.detach().double() for k, v in w0.D.named_parameters()})
    for mode in ('flat', 'overlap'):
        run = two[f'global/{mode}']
        rank0, rank1 = run['weights']
        assert rank0.keys() == rank1.keys() == one_pass['weights'].keys()
        assert all(torch.equal(rank0[k], rank1[k]) for k in rank0), 'the ranks hold different weights'
        assert sorted(run['grads']) == sorted(one_pass['grads']) and len(run['grads']) == 12
        # 1. bit for bit against the one-process split
        for k in run['grads']:
            assert torch.equal(run['grads'][k], halves['grads'][k]), (mode, k)
        assert all(torch.equal(rank0[k], halves['weights'][k]) for k in rank0), mode
        # 2. within the tolerance against one pass over the global batch
        for k in run['grads']:
            err = _rel(run['grads'][k], one_pass['grads'][k])
            assert err < 1e-4, (mode, k, err)
        moved = torch.cat([(one_pass['weights'][k] - start[k]).flatten() for k in start])
        diff = torch.cat([(rank0[k] - one_pass['weights'][k]).flatten() for k in start])
        assert moved.norm() > 1 and float(diff.norm() / moved.norm()) < 1e-3, float(diff.norm() / moved.norm())
    # What a broken exchange would give is far outside the tolerance: rank 0's own gradient, or a sum.
    own = harness.global_batch_run('flat', DistInfo(rank=0, world_size=2), steps=1, float64=True, exchange=False)
    for k in own['grads']:
        assert _rel(own['grads'][k], one_pass['grads'][k]) > 0.05, (k, _rel(own['grads'][k], one_pass['grads'][k]))
        assert _rel(two['global/flat']['grads'][k] * 2, one_pass['grads'][k]) > 0.5
    # Both modes, bit for bit.
    for k in two['global/flat']['grads']:
        assert torch.equal(two['global/flat']['grads'][k], two['global/overlap']['grads'][k]), k
    flat, over = two['trainer/flat'], two['trainer/overlap']
    assert flat['spheres'] == over['spheres'] and sum(v > 0 for v in flat['spheres'].values()) >= 2
    for w in (flat['weights'], over['weights']):
        assert all(torch.equal(w[0][k], w[1][k]) for k in w[0]), 'the ranks hold different weights'
    assert all(torch.equal(flat['weights'][0][k], over['weights'][0][k]) for k in flat['weights'][0])
    # A branch only one rank uses: both ranks get the mean of the two ranks' own gradients.
    for mode in ('flat', 'overlap'):
        u = two[f'uneven/{mode}']
        mean = [(u['own'][0][str(i)] + u['own'][1][str(i)]) / 2 for i in range(len(u['own'][0]))]
        for exchanged in u['exchanged']:
            assert all(torch.equal(a, b) for a, b in zip(exchanged, mean)), mode
        assert any(float(g.abs().sum()) > 0 for g in mean[2:4]) and any(float(g.abs().sum()) > 0 for g in mean[4:6])
    # Only rank 1 asks (from step 5); the vote sent at step 8 is read at step 12, on both ranks.
    assert two['stop_vote'] == [[12, 16, 20], [12, 16, 20]]


# ---------------------------------------------------------------------- --batch-gpu, --grad-sync
def _train_main():
    spec = importlib.util.spec_from_file_location('spherehead_train_script', ROOT / 'train.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


@pytest.fixture(scope='module')
def config_file(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp('bgpu')
    data = d / 'heads.zip'
    synth_dataset(SynthOptions(out=str(data), count=8, resolution=32, seed=0, front_bias=0.5, workers=1),
                  progress=False)
    cfg = harness.trainer_config(str(data), str(d / 'runs'), 'overlap')
    path = d / 'micro.json'
    path.write_text(cfg.to_json())
    return path


def dry_run(*args) -> tuple[int, str, dict | None]:
    res = CliRunner().invoke(_train_main(), ['--dry-run', *map(str, args)], prog_name='train.py')
    out = res.stdout
    return res.exit_code, res.stderr, (json.loads(out) if res.exit_code == 0 else None)


def test_batch_gpu_sets_the_global_batch_and_the_run_name(config_file):
    code, err, cfg = dry_run('--config', config_file, '--batch-gpu', 2)
    assert code == 0, err
    assert cfg['batch_gpu'] == 2 and cfg['batch'] == 2          # one process: 2 x 1
    tc = TrainingConfig.from_dict(cfg)
    assert tc.for_world(4).batch == 8 and tc.for_world(4).batch_gpu == 2
    assert run_description(tc.for_world(4)).endswith('-batch8-pergpu2')
    assert run_description(TrainingConfig.from_dict({**cfg, 'batch_gpu': None, 'batch': 8})).endswith('-batch8')
    # --batch on the command line beats a file's fixed per-GPU batch
    file2 = config_file.parent / 'with_batch_gpu.json'
    file2.write_text(tc.to_json())
    code, err, cfg2 = dry_run('--config', file2, '--batch', 4)
    assert code == 0, err
    assert cfg2['batch'] == 4 and cfg2['batch_gpu'] is None
    code, err, cfg3 = dry_run('--config', file2)
    assert code == 0 and cfg3['batch_gpu'] == 2 and cfg3['batch'] == 2
    # the exchange mode is an option and a config field
    code, err, cfg4 = dry_run('--config', config_file, '--grad-sync', 'flat')
    assert code == 0 and cfg4['grad_sync'] == 'flat' and cfg4['grad_bucket_mib'] == harness.BUCKET_MIB


@pytest.mark.parametrize('args,words', [
    (['--batch', 8, '--batch-gpu', 2], ['--batch 8 and --batch-gpu 2 disagree on 1 process', '2 x 1 = 2']),
    (['--batch-gpu', 6], ['--batch-gpu 6: 6 images per process', 'minibatch-std group 4', 'multiple of 4']),
    (['--grad-sync', 'ddp'], ['--grad-sync', 'ddp']),
])
def test_contradictory_batch_options_are_refused_in_one_line(args, words, config_file):
    assert TrainingConfig.from_json(config_file.read_text()).discriminator.mbstd_group_size == 4
    code, err, _ = dry_run('--config', config_file, *args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0 and len(lines) == 1 and lines[0].startswith('Error: '), err
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_batch_and_batch_gpu_that_agree_are_accepted(config_file):
    code, err, cfg = dry_run('--config', config_file, '--batch', 2, '--batch-gpu', 2)
    assert code == 0 and cfg['batch'] == 2 and cfg['batch_gpu'] == 2, err


def test_check_batch_with_a_per_gpu_batch():
    cfg = TrainingConfig(batch_gpu=4)
    check_batch(cfg.for_world(3), DistInfo(world_size=3))              # 4 per rank on any rank count
    with pytest.raises(UserError, match=r'--batch-gpu 6: 6 images per process .* group 4; use a multiple of 4'):
        check_batch(TrainingConfig(batch_gpu=6).for_world(2), DistInfo(world_size=2))
    with pytest.raises(ValueError, match='batch_gpu must be >= 1'):
        TrainingConfig(batch_gpu=0)
    with pytest.raises(ValueError, match='grad_sync must be one of overlap, flat'):
        TrainingConfig(grad_sync='ddp')
    assert math.isclose(TrainingConfig().grad_bucket_mib, 25.0)


# ---------------------------------------------------------------------- bench train-step
def test_bench_train_step_times_the_exchange_modes_side_by_side():
    from spherehead.cli import main
    res = CliRunner().invoke(main, ['bench', '--what', 'train-step', '--config', 'tiny', '--batch', '2',
                                    '--neural', '16', '--device', 'cpu', '--precision', 'fp32', '--repeat', '1',
                                    '--grad-sync', 'flat', '--grad-sync', 'overlap+hooks'])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert 'timed interleaved' in out
    for mode in ('flat', 'overlap+hooks'):
        assert f'grad-sync {mode}\n' in out and f'precision fp32  grad-sync {mode}' in out
    assert out.count('per pass (forward + backward + gradient exchange + Adam): g_main ') == 2
    assert 'speed-up (reference fp32 flat / reference fp32 overlap+hooks): iteration ' in out
    assert 'host synchronisations' not in out          # counted on CUDA only
    res = CliRunner().invoke(main, ['bench', '--what', 'train-step', '--device', 'cpu', '--path', 'fast'])
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and 'only the reference runs on cpu' in lines[0], res.stderr


def test_cuda_flags_options_reach_the_config(config_file):
    """train.py turns cuDNN autotuning on by default (measured faster on an H200) and keeps torch's TF32
    defaults; both can be changed, a bad TF32 mode is refused, old option files load with the defaults."""
    code, err, cfg = dry_run('--config', config_file)
    assert code == 0 and cfg['cudnn_benchmark'] is True and cfg['tf32'] == 'torch', err
    code, err, cfg = dry_run('--config', config_file, '--no-cudnn-benchmark', '--tf32', 'off')
    assert code == 0 and cfg['cudnn_benchmark'] is False and cfg['tf32'] == 'off', err
    code, err, _ = dry_run('--config', config_file, '--tf32', 'half')
    assert code == 2 and "'half' is not one of" in err
    with pytest.raises(ValueError, match='tf32 must be one of torch, off, on'):
        TrainingConfig(tf32='half')
    old = TrainingConfig().to_dict()
    del old['cudnn_benchmark'], old['tf32']
    assert TrainingConfig.from_dict(old).cudnn_benchmark is True

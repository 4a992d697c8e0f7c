"""Training (train.py, spherehead/train) on the CPU with a micro configuration.

The micro run: the tiny preset at 32 px (16 px planes, 16 px neural rendering, 6 + 6 depth
samples), batch 4, no data workers, on 24 synthetic 32 px heads; 6 steps of 4 images with
phase I for steps 0-1, phase II for 2-3 and phase III (ViCo on) for 4-5. Runs go through the
real command line (in-process with click's runner, or as processes where a kill or torchrun
needs one). Everything runs on one CPU thread, so runs that should agree agree bit for bit.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
import torch.nn.functional as F
from PIL import Image

import spherehead as sh
from spherehead.config import discriminator_config_for, preset
from spherehead.data.dataset import DatasetOptions, HeadDataset
from spherehead.data.synth import SynthOptions, synth_dataset
from spherehead.errors import UserError
from spherehead.networks.discriminator import DualDiscriminator
from spherehead.networks.generator import Generator
from spherehead.train.config import LossConfig, PhaseConfig, TrainingConfig
from spherehead.train.distributed import DistInfo
from spherehead.train.losses import GANLoss, shuffled_labels
from spherehead.train.phases import PhaseSchedule
from spherehead.train.setup import build_networks, check_batch
from spherehead.checkpoint import numbered_files
from spherehead.train.snapshot import load_state, newest_state

ROOT = Path(__file__).resolve().parents[1]
SUBPROCESS_ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1',
                  'PYTHONPATH': os.pathsep.join(filter(None, [str(ROOT), os.environ.get('PYTHONPATH')]))}
SUBPROCESS_ENV.pop('SPHEREHEAD_TRACEBACK', None)

BATCH = 4
STEPS = 6                      # micro run length: kimg 0.024
GRID_W = 3 * 3 * 32            # sample grid: A, B, fused x yaws 0 / 90 / 180, 32 px tiles


def _train_main():
    """train.py's click command (train.py is a script at the repository root, not a module)."""
    spec = importlib.util.spec_from_file_location('spherehead_train_script', ROOT / 'train.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


TRAIN_MAIN = _train_main()


def micro_generator():
    return preset('tiny', img_resolution=32, triplane_size=16,
                  rendering=dict(neural_rendering_resolution=16, depth_resolution=6, depth_resolution_importance=6))


def micro_config(data: Path, outdir: Path) -> TrainingConfig:
    g = micro_generator()
    return TrainingConfig(
        cfg='tiny', generator=g, discriminator=discriminator_config_for(g), data=DatasetOptions(path=str(data)),
        outdir=str(outdir), neural_rendering_resolution_initial=16, batch=BATCH, workers=0, grid_seeds=1,
        device='cpu', kimg=STEPS * BATCH / 1000, snap_kimg=0.012, tick_kimg=0.004,
        phases=PhaseConfig(phase1_end_kimg=0.008, phase2_end_kimg=0.016))


def train(*args, env: dict | None = None):
    """Run train.py in this process; returns click's Result (stdout, stderr, exit_code)."""
    return CliRunner(env=env).invoke(TRAIN_MAIN, [str(a) for a in args], prog_name='train.py')


def ok(res) -> None:
    assert res.exit_code == 0, f'exit {res.exit_code}\n{res.output}\n{res.exception!r}'


def run_dir_of(outdir: Path) -> Path:
    runs = [p for p in outdir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def assert_same_state(a: dict, b: dict) -> None:
    """Same counters and bit-identical G, D, G_ema (and Adam moments)."""
    for k in ('nimg', 'step', 'sphere_counts'):
        assert a[k] == b[k], (k, a[k], b[k])
    for net in ('G', 'D', 'G_ema'):
        assert a[net].keys() == b[net].keys()
        for name in a[net]:
            assert torch.equal(a[net][name], b[net][name]), f'{net}.{name} differs'
    for opt in ('opt_G', 'opt_D'):
        sa, sb = a[opt]['state'], b[opt]['state']
        assert sa.keys() == sb.keys()
        for i in sa:
            for k in sa[i]:
                assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), f'{opt} {i} {k}'


def dataclass_dict(cfg: TrainingConfig, **changes) -> dict:
    d = cfg.to_dict()
    d.update(changes)
    return d


# ---------------------------------------------------------------------- shared data and runs
@pytest.fixture(scope='module', autouse=True)
def _one_thread():
    """One intra-op thread: deterministic sums (so in-process and subprocess runs agree) and
    fair to the other jobs on a 2-core CI machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope='module')
def data(tmp_path_factory) -> Path:
    """24 synthetic 32 px heads (half near-frontal) with masks and parsing maps, as a zip."""
    path = tmp_path_factory.mktemp('data') / 'heads.zip'
    synth_dataset(SynthOptions(out=str(path), count=24, resolution=32, seed=0, front_bias=0.5, workers=1),
                  progress=False)
    return path


@pytest.fixture(scope='module')
def config_file(data, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('cfg') / 'micro.json'
    path.write_text(micro_config(data, path.parent / 'runs').to_json())
    return path


@pytest.fixture(scope='module')
def run_a(config_file, tmp_path_factory) -> Path:
    """The uninterrupted micro run: 6 steps, snapshots at 12 and 24 images."""
    out = tmp_path_factory.mktemp('run_a')
    res = train('--config', config_file, '--outdir', out)
    ok(res)
    return run_dir_of(out)


# ---------------------------------------------------------------------- 1. a run through three phases
TICK = re.compile(r'kimg\s+\S+\s+phase (\d)\s+A/B/fused p (\S+) drawn (\d+)/(\d+)/(\d+)\s+vico (on|off)')


def test_run_through_three_phases_writes_snapshots_grids_and_logs(run_a, config_file):
    files = {p.name for p in run_a.iterdir()}
    assert not [f for f in files if f.endswith('.tmp')], files

    # Resolved options: the file we started from, and it loads back as a TrainingConfig.
    saved = TrainingConfig.from_json((run_a / 'training_options.json').read_text())
    expected = TrainingConfig.from_json(config_file.read_text())
    assert saved.to_dict() == dataclass_dict(expected, outdir=str(run_a.parent))

    # Network snapshots and resume states at 12 and 24 images, named by the exact kimg.
    assert {'network-snapshot-000000.012.safetensors', 'network-snapshot-000000.024.safetensors',
            'training-state-000000.012.pt', 'training-state-000000.024.pt'} <= files
    first, last = load_state(run_a / 'training-state-000000.012.pt'), load_state(run_a / 'training-state-000000.024.pt')
    assert (first['nimg'], first['step']) == (12, 3) and (last['nimg'], last['step']) == (24, 6)
    counts = json.loads(last['sphere_counts'])
    assert sum(counts.values()) == STEPS and set(counts) == {'A', 'B', 'fused'}
    G = sh.load_generator(run_a / 'network-snapshot-000000.024.safetensors')
    assert G.config == micro_generator()
    for name, t in G.state_dict().items():          # the snapshot is the EMA generator of the state
        assert torch.equal(t, last['G_ema'][name]), name
    assert any(not torch.equal(last['G'][k], first['G'][k]) for k in last['G']), 'G did not train'
    assert any(not torch.equal(last['G_ema'][k], first['G_ema'][k]) for k in last['G_ema'])

    # Sample grids: one seed row, A / B / fused at three yaws, not blank.
    for name in ('fakes-init.png', 'fakes-000000.012.png', 'fakes-000000.024.png'):
        img = np.asarray(Image.open(run_a / name))
        assert img.shape == (32, GRID_W, 3), (name, img.shape)
        assert img.std() > 1, name
    assert any(f.startswith('events.out.tfevents') for f in files)

    # stats.jsonl: one record per step (tick 4 images), finite losses, R1 and density reg on
    # step 0, ViCo only in the records of steps at or after its start (16 images).
    records = [json.loads(line) for line in (run_a / 'stats.jsonl').read_text().splitlines()]
    assert [r['kimg'] for r in records] == [0.004, 0.008, 0.012, 0.016, 0.02, 0.024]
    for r in records:
        assert math.isfinite(r['G/loss']) and math.isfinite(r['D/loss']), r
        assert math.isfinite(r['scores/real']) and math.isfinite(r['scores/fake']), r
    assert math.isfinite(records[0]['D/r1_penalty']) and math.isfinite(records[0]['G/density_reg'])
    for r in records:
        vico_steps = r['kimg'] * 1000 > 16      # the record covers the step that started at kimg*1000 - 4
        assert math.isfinite(r['D/vico']) == vico_steps, r
        assert math.isfinite(r['scores/real_shuffled']) == vico_steps, r
    phases = [r['Progress/phase'] for r in records]
    assert phases == sorted(phases) and set(phases) == {1, 2, 3}

    # log.txt: the phases with their probabilities, the sphere draws, ViCo on only in phase III.
    log = (run_a / 'log.txt').read_text()
    ticks = [m.groups() for m in TICK.finditer(log)]
    assert len(ticks) == STEPS, log
    probs = {int(ph): p for ph, p, *_ in ticks}
    assert probs == {1: '0.33/0.33/0.34', 2: '0.33/0.33/0.34', 3: '0.10/0.10/0.80'}
    for ph, _p, *_, vico in ticks:
        assert (vico == 'on') == (ph == '3'), ticks
    drawn = [sum(map(int, t[2:5])) for t in ticks]
    assert drawn == list(range(1, STEPS + 1))
    assert tuple(map(int, ticks[-1][2:5])) == (counts['A'], counts['B'], counts['fused'])
    assert 'ViCo from 0.016 kimg' in log and 'phase I near-front data: ' in log
    assert '1 rank(s) x batch 4 on cpu' in log
    assert 'a log line after the first step, then every 0.004 kimg, a snapshot every 0.012 kimg' in log  # at start
    assert re.search(r'first step: [0-9.]+ s for 4 images; at that pace a log line every 0.004 kimg \(1 steps\) '
                     r'comes about every [0-9.]+ (s|min), a snapshot every 0.012 kimg \(3 steps\) about every', log), log
    assert 'mixed precision: all float32 on cpu (float16 runs on CUDA only)' in log   # the default; CUDA only
    assert log.count('snapshot: ') == 2


# ---------------------------------------------------------------------- 2. resume
def test_resume_continues_exactly_like_an_uninterrupted_run(run_a, config_file, tmp_path):
    """1 step (stop in phase I), resume from the state file to 3 steps (stop in phase II), resume
    from the run folder to 6 steps: the same counters, phase and bit-identical networks and Adam
    moments as the uninterrupted run."""
    ok(train('--config', config_file, '--outdir', tmp_path, '--kimg', 0.004))
    run = run_dir_of(tmp_path)
    state1 = newest_state(run)
    assert load_state(state1)['nimg'] == 4
    res = train('--config', config_file, '--outdir', tmp_path, '--kimg', 0.012, '--resume', state1)
    ok(res)
    assert 'starting at 0.004 kimg' in res.output
    mid = load_state(newest_state(run))
    assert_same_state(mid, load_state(run_a / 'training-state-000000.012.pt'))
    # the resumed run says what it resumed from, and where the run began
    assert f'networks: resumed from {state1} (0.004 kimg); the run started from random initialisation;' in res.output
    res = train('--config', config_file, '--outdir', tmp_path, '--resume', run)
    ok(res)
    assert 'starting at 0.012 kimg' in res.output
    assert run_dir_of(tmp_path) == run, 'a resumed run continues in its own folder'
    final = load_state(newest_state(run))
    assert_same_state(final, load_state(run_a / 'training-state-000000.024.pt'))
    cfg = TrainingConfig.from_json(config_file.read_text())
    assert PhaseSchedule(cfg).at(final['nimg']).phase == 3
    a = sh.load_generator(run_a / 'network-snapshot-000000.024.safetensors').state_dict()
    b = sh.load_generator(run / 'network-snapshot-000000.024.safetensors').state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = (run / 'log.txt').read_text()
    assert log.count('networks: random initialisation;') == 1 and 'starting at 0.012 kimg' in log
    assert f'networks: resumed from {run / "training-state-000000.012.pt"} (0.012 kimg); the run started from ' \
           'random initialisation;' in log


def test_resume_from_a_state_written_before_origins_were_kept(run_a, config_file, tmp_path):
    """A state without 'origin' (written before 2026-12-03) resumes and says what it resumed from only."""
    old = tmp_path / 'old'
    old.mkdir()
    state = load_state(run_a / 'training-state-000000.024.pt')
    assert state.pop('origin') == 'random initialisation'
    torch.save(state, old / 'training-state-000000.024.pt')
    res = train('--config', config_file, '--outdir', tmp_path / 'runs', '--kimg', 0.028,
                '--resume', old / 'training-state-000000.024.pt')
    ok(res)
    assert f'networks: resumed from {old / "training-state-000000.024.pt"} (0.024 kimg); 1 rank(s)' in res.output
    run = run_dir_of(tmp_path / 'runs')
    assert sh.load_generator(run / 'network-snapshot-000000.028.safetensors').provenance.endswith(
        f'{run.name} at 0.0 kimg')


def test_resume_from_a_network_file_fine_tunes_it(run_a, config_file, tmp_path):
    """--resume a .safetensors: a new run from 0 kimg whose G and G_ema start as the file's
    generator (D fresh), with the EMA ramp-up and the D-input blur off, as on resume."""
    snap = run_a / 'network-snapshot-000000.024.safetensors'
    ok(train('--config', config_file, '--outdir', tmp_path, '--kimg', 0.004, '--resume', snap))
    run = run_dir_of(tmp_path)
    log = (run / 'log.txt').read_text()
    assert f'networks: fine-tuned from {snap} (D fresh)' in log and 'starting at 0 kimg' in log
    opts = TrainingConfig.from_json((run / 'training_options.json').read_text())
    assert opts.ema_rampup is None and opts.loss.blur_init_sigma == 0.0
    state = load_state(newest_state(run))
    assert state['nimg'] == 4
    start = sh.load_generator(snap)
    params = {name for name, _ in start.named_parameters()}
    # Step 0 = two Adam steps of G (main + density reg), each moving a weight by at most about
    # 1.4 learning rates (lr 0.002 here): the weights are the file's plus that, and farther from
    # the fresh networks of the same seed (run A's start, 6 steps before the file).
    dist = lambda a, b: max(float((a[k] - b[k]).abs().max()) for k in params)
    moved = dist(state['G'], start.state_dict())
    fresh = build_networks(opts, opts.seed).G.state_dict()
    assert 0 < moved < 0.006 < dist(state['G'], fresh), (moved, dist(state['G'], fresh))


# ---------------------------------------------------------------------- 3. SIGKILL while writing
# Runs train.py in a process that SIGKILLs itself halfway through writing the second resume
# state (torch.save) or the second network snapshot (safetensors), after the first half of the
# bytes reached the disk: the moment a real kill would tear a file.
KILL_SCRIPT = r'''
import importlib.util, io, os, signal, sys
what, train_py, args = sys.argv[1], sys.argv[2], sys.argv[3:]
seen = [0]
def die(path):
    with open(path, 'r+b') as f:
        f.truncate(os.path.getsize(path) // 2)
        f.flush()
        os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)
if what == 'state':
    import torch
    real_save = torch.save
    def save(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        if 'training-state-' in str(getattr(f, 'name', f)):
            seen[0] += 1
            if seen[0] == 2:
                f.flush()
                die(f.name)
    torch.save = save
else:
    import safetensors.torch as st
    real_save_file = st.save_file
    def save_file(tensors, filename, metadata=None):
        real_save_file(tensors, filename, metadata=metadata)
        seen[0] += 1
        if seen[0] == 2:
            die(filename)
    st.save_file = save_file
spec = importlib.util.spec_from_file_location('train_script', train_py)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
mod.main(args, prog_name='train.py')
'''


@pytest.mark.slow
@pytest.mark.parametrize('torn', ['state', 'network'])
def test_sigkill_while_writing_a_snapshot_keeps_the_previous_one(torn, run_a, config_file, tmp_path):
    # Snapshots every step (4 images); the process dies writing the one at 8 images.
    p = subprocess.run([sys.executable, '-c', KILL_SCRIPT, torn, str(ROOT / 'train.py'), '--config', str(config_file),
                        '--outdir', str(tmp_path), '--kimg', '0.012', '--snap', '0.004'],
                       capture_output=True, text=True, env=SUBPROCESS_ENV, cwd=ROOT, timeout=300)
    assert p.returncode == -signal.SIGKILL, (p.returncode, p.stdout, p.stderr)
    run = run_dir_of(tmp_path)
    names = sorted(f.name for f in run.iterdir())
    torn_file = {'state': 'training-state-000000.008.pt.tmp',
                 'network': 'network-snapshot-000000.008.safetensors.tmp'}[torn]
    assert torn_file in names, names
    assert 'training-state-000000.008.pt' not in names, names

    # The previous snapshot and state are whole; the newest state is the previous one.
    G = sh.load_generator(run / 'network-snapshot-000000.004.safetensors')
    assert G.config == micro_generator()
    assert newest_state(run) == run / 'training-state-000000.004.pt'
    prev = load_state(newest_state(run))
    assert prev['nimg'] == 4
    if torn == 'state':
        with pytest.raises(Exception):
            load_state(run / torn_file)
    else:
        assert torn_file not in [p.name for _, p in numbered_files(run)]     # never taken for a snapshot

    # Resume from the folder: finishes, and its state at 12 images is the uninterrupted run's.
    res = train('--config', config_file, '--outdir', tmp_path, '--kimg', 0.012, '--snap', 0.004, '--resume', run)
    ok(res)
    assert 'starting at 0.004 kimg' in res.output
    final = load_state(newest_state(run))
    assert_same_state(final, load_state(run_a / 'training-state-000000.012.pt'))
    assert not [f for f in os.listdir(run) if f.endswith('.tmp') and f != torn_file]
    sh.load_generator(run / 'network-snapshot-000000.012.safetensors')


@pytest.mark.slow
def test_ctrl_c_says_at_once_that_it_stops_then_stops_at_a_step_boundary(config_file, tmp_path):
    """Ctrl-C (SIGINT; SIGTERM takes the same path) mid-run: it says at once that it is stopping, before
    the step in progress finishes and the snapshot is written; then exit status 0 and --resume
    continues from there."""
    p = subprocess.Popen([sys.executable, str(ROOT / 'train.py'), '--config', str(config_file), '--outdir', str(tmp_path),
                          '--kimg', '1'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         env=SUBPROCESS_ENV, cwd=ROOT)
    try:
        seen = []
        for line in p.stdout:                       # the first tick line: the loop (and its handler) is running
            seen.append(line)
            if line.startswith('kimg '):
                break
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    out = ''.join(seen) + out
    assert p.returncode == 0, (p.returncode, out)
    assert 'Traceback' not in out
    run = run_dir_of(tmp_path)
    stopping = out.index('SIGINT: stopping: finishing the step and writing a snapshot; ')
    assert f'then --resume {run} continues' in out[stopping:]
    assert stopping < out.rindex('snapshot: network-snapshot-'), 'said only after the snapshot was written'
    state = load_state(newest_state(run))
    assert 0 < state['nimg'] < 1000 and state['nimg'] == 4 * state['step']
    log = (run / 'log.txt').read_text()
    assert f'stopped by signal at {state["nimg"] / 1000:.1f} kimg; state saved; continue with --resume {run}' in log
    res = train('--config', config_file, '--outdir', tmp_path, '--kimg', (state['nimg'] + 4) / 1000, '--resume', run)
    ok(res)
    assert f'starting at {state["nimg"] / 1000:g} kimg' in res.output
    assert load_state(newest_state(run))['nimg'] == state['nimg'] + 4


# ---------------------------------------------------------------------- snapshot names
def test_snapshot_names_sort_name_the_true_kimg_and_never_collide(tmp_path):
    from spherehead.train.snapshot import snapshot_name, snapshot_tag
    assert snapshot_tag(224) == '000000.224' and snapshot_tag(504) == '000000.504'
    assert snapshot_tag(200_000) == '000200.000' and snapshot_tag(1_234_567) == '001234.567'
    counts = [0, 8, 224, 504, 1000, 1001, 12_000, 199_999, 200_000, 25_000_000]
    names = [snapshot_name(snapshot_tag(n)) for n in counts]
    assert sorted(names) == names and len(set(names)) == len(names)          # sorted as text = by kimg
    for n, name in zip(counts, names):
        (tmp_path / name).write_bytes(b'')
    assert [round(k * 1000) for k, _ in numbered_files(tmp_path)] == counts   # the name says the exact count
    # runs written before the rule ('000000' for 0.224 kimg, decimals only for a second one) still read in order
    old = tmp_path / 'old'
    old.mkdir()
    for name in ('network-snapshot-000000.safetensors', 'network-snapshot-000000.504.safetensors',
                 'network-snapshot-000002.safetensors', 'network-snapshot-000002.400.safetensors'):
        (old / name).write_bytes(b'')
    assert [k for k, _ in numbered_files(old)] == [0.0, 0.504, 2.0, 2.4]


def test_resume_from_an_older_state_branches_into_a_new_folder(run_a, config_file, tmp_path):
    """Resuming run A from its state at 12 images would rewrite its snapshot at 24 images: the run
    goes to a new folder instead, and run A's files stay as they were."""
    later = run_a / 'network-snapshot-000000.024.safetensors'
    before = later.read_bytes()
    res = train('--config', config_file, '--outdir', tmp_path, '--resume', run_a / 'training-state-000000.012.pt',
                '--kimg', 0.016)
    ok(res)
    branch = run_dir_of(tmp_path)
    assert branch.parent == tmp_path and later.read_bytes() == before
    assert (branch / 'network-snapshot-000000.016.safetensors').is_file()
    assert not (run_a / 'network-snapshot-000000.016.safetensors').exists()


# ---------------------------------------------------------------------- defaults on the CPU
@pytest.fixture(scope='module')
def data64(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('data64') / 'heads64.zip'
    synth_dataset(SynthOptions(out=str(path), count=4, resolution=64, seed=0, front_bias=0.5, workers=1),
                  progress=False)
    return path


def test_cpu_run_logs_and_snapshots_often_unless_told_otherwise(data64, config_file, tmp_path):
    """On the CPU --tick and --snap default to 0.1 and 1 kimg (not 4 and 200); options and --config
    files keep theirs; --workers defaults to the cores this process may use (at most 3)."""
    from spherehead.train.config import default_workers
    base = ['--data', data64, '--cfg', 'tiny', '--outdir', tmp_path, '--device', 'cpu', '--batch', '4', '--dry-run']
    res = train(*base)
    ok(res)
    opts = json.loads(res.stdout)
    assert (opts['tick_kimg'], opts['snap_kimg']) == (0.1, 1.0)
    assert opts['workers'] == default_workers() == min(3, len(os.sched_getaffinity(0)))
    res = train(*base, '--tick', 2, '--snap', 50, '--workers', 1)
    ok(res)
    opts = json.loads(res.stdout)
    assert (opts['tick_kimg'], opts['snap_kimg'], opts['workers']) == (2.0, 50.0, 1)
    res = train('--config', config_file, '--outdir', tmp_path, '--dry-run')
    ok(res)
    file_opts = json.loads(config_file.read_text())
    assert json.loads(res.stdout)['tick_kimg'] == file_opts['tick_kimg'] == 0.004
    # the first step always logs a line, then says when the next ones come (here not before the end)
    ok(train('--config', config_file, '--outdir', tmp_path / 'runs', '--kimg', 0.008, '--tick', 1))
    run = run_dir_of(tmp_path / 'runs')
    assert [json.loads(ln)['kimg'] for ln in (run / 'stats.jsonl').read_text().splitlines()] == [0.004, 0.008]
    assert 'at that pace a log line every 1 kimg (250 steps) comes about every' in (run / 'log.txt').read_text()


def test_default_workers_follow_the_cores(monkeypatch):
    from spherehead.train import config as train_config
    for cores, expected in ((1, 1), (2, 2), (3, 3), (64, 3)):
        monkeypatch.setattr(os, 'sched_getaffinity', lambda pid, n=cores: set(range(n)))
        assert train_config.default_workers() == expected
        assert TrainingConfig().workers == expected


# ---------------------------------------------------------------------- 4. ViCo
def test_vico_is_on_only_when_enabled_and_past_its_start(config_file):
    cfg = TrainingConfig.from_json(config_file.read_text())       # ViCo from phase III (16 images)
    on = lambda c: [PhaseSchedule(c).at(n).vico for n in (0, 4, 8, 15, 16, 20, 10 ** 6)]
    assert on(cfg) == [False, False, False, False, True, True, True]
    off = TrainingConfig.from_dict({**cfg.to_dict(), 'phases': {**cfg.to_dict()['phases'], 'vico_weight': 0.0}})
    assert on(off) == [False] * 7
    early = TrainingConfig.from_dict({**cfg.to_dict(), 'phases': {**cfg.to_dict()['phases'], 'vico_start_kimg': 0.004}})
    assert on(early) == [False, True, True, True, True, True, True]
    assert PhaseSchedule(early).at(4).phase == 1                   # a start point of its own, even in phase I


def test_vico_trains_d_to_score_shuffled_real_pairs_lower(data):
    """A toy D trained 30 steps on 4 real heads (yaws -83, 21, -9, 130 deg) and a tiny G's fakes:
    with ViCo, D scores the real images under each other's cameras clearly lower than under
    their own; without it the two scores stay within noise of each other."""
    g = micro_generator()
    ds = HeadDataset(DatasetOptions(path=str(data)))
    items = [ds[i] for i in range(4)]
    batch = {k: torch.stack([it[k] for it in items]) for k in ('image', 'label', 'mask', 'parsing')}
    c = batch['label']
    assert not torch.equal(shuffled_labels(c), c)
    gaps, keys = {}, {}
    for vico_weight in (0.0, 1.0):
        torch.manual_seed(0)
        G = Generator(g).train().requires_grad_(False)
        D = DualDiscriminator.from_config(discriminator_config_for(g)).train().requires_grad_(True)
        loss = GANLoss(G, D, LossConfig())
        real = loss.real_inputs(batch, 16)
        opt = torch.optim.Adam(D.parameters(), lr=0.01, betas=(0.0, 0.99))
        for step in range(30):
            torch.manual_seed(100 + step)
            opt.zero_grad(set_to_none=True)
            stats = loss.d_main(real, c, torch.randn(4, g.z_dim), c, 'fused', 16, 0.0, 0.0, vico_weight)
            opt.step()
        keys[vico_weight] = set(stats)
        with torch.no_grad():
            gaps[vico_weight] = (D(real, c) - D(real, shuffled_labels(c))).mean().item()
    assert 'D/vico' not in keys[0.0] and 'scores/real_shuffled' not in keys[0.0]
    assert {'D/vico', 'scores/real_shuffled'} <= keys[1.0]
    # Measured with these seeds: gap 0.46 with ViCo, -0.09 without.
    assert abs(gaps[0.0]) < 0.2, gaps
    assert gaps[1.0] > 0.3 and gaps[1.0] > gaps[0.0] + 0.3, gaps


def test_d_main_scores_the_reals_once_for_both_cameras_with_the_same_gradients(data):
    """d_main runs the reals through D's trunk once and scores them under their own and the
    shuffled cameras; its loss and D gradients equal those of three full D calls."""
    g = micro_generator()
    ds = HeadDataset(DatasetOptions(path=str(data)))
    items = [ds[i] for i in range(4)]
    batch = {k: torch.stack([it[k] for it in items]) for k in ('image', 'label', 'mask', 'parsing')}
    c = batch['label']
    torch.manual_seed(0)
    G = Generator(g).train().requires_grad_(False)
    D = DualDiscriminator.from_config(discriminator_config_for(g)).train().requires_grad_(True)
    loss = GANLoss(G, D, LossConfig())
    real = loss.real_inputs(batch, 16)
    z = torch.randn(4, g.z_dim)

    torch.manual_seed(5)
    stats = loss.d_main(real, c, z, c, 'fused', 16, 1.0, 0.0, vico_weight=0.7)
    shared = {n: p.grad.clone() for n, p in D.named_parameters()}
    D.zero_grad(set_to_none=True)

    torch.manual_seed(5)   # the same fakes
    with torch.no_grad():
        fake, _ = loss.run_G(z, c, 'fused', 16, 0.0, update_emas=True)
    real_b = loss.blurred(real, 1.0)
    terms = (F.softplus(D(loss.blurred(fake, 1.0), c)).mean() + F.softplus(-D(real_b, c)).mean()
             + F.softplus(D(real_b, shuffled_labels(c))).mean() * 0.7)
    terms.backward()
    assert torch.allclose(stats['D/loss'] + stats['D/vico'], terms.detach(), rtol=1e-5, atol=1e-6)
    # The forward passes are the same calls on the same batches; the backward sums the two scores'
    # upstream gradients before the trunk instead of after it, so each parameter gradient is the
    # same sums of up to ~4 x 32 x 32 products in another order. No fixed atol suits tensors whose
    # scales differ by orders of magnitude (the BLAS, SIMD width and thread count set the order):
    # held to 1e-4 of each tensor's largest gradient (rounding: ~sqrt(4096) u = 4e-6 of it).
    for n, p in D.named_parameters():
        torch.testing.assert_close(shared[n], p.grad, rtol=1e-4, atol=1e-4 * p.grad.abs().max().item(), msg=n)


def test_ema_update_blends_parameters_and_copies_buffers():
    from spherehead.train.ema import ema_beta, update_ema
    torch.manual_seed(0)
    G = Generator(micro_generator())
    G_ema = Generator(micro_generator())           # other random weights and buffers
    before = {n: p.detach().clone() for n, p in G_ema.named_parameters()}
    beta = ema_beta(batch=4, nimg=4000, ema_kimg=10 * 4 / 32, rampup=0.05)
    assert beta == pytest.approx(0.5 ** (4 / 200))   # the half-life (1250 images) is capped at 5% of 4000 seen
    update_ema(G_ema, G, beta)
    for n, p in G.named_parameters():
        expected = beta * before[n] + (1 - beta) * p.detach()
        # lerp vs the formula, <= 3 roundings each: |difference| <= 3 u |expected| + 6 u (1 - beta)
        # max|p| (the terms cancel only when both are small), far inside atol 1e-6 + rtol 1e-5.
        assert torch.allclose(dict(G_ema.named_parameters())[n], expected, atol=1e-6), n
    for (n, b_ema), b in zip(G_ema.named_buffers(), G.buffers()):
        assert torch.equal(b_ema, b), n


# ---------------------------------------------------------------------- 5. refusals
@pytest.fixture(scope='module')
def bad(data, run_a, tmp_path_factory) -> dict[str, str]:
    """Inputs for the refused set-ups: datasets without labels / parsing maps, a file where a
    folder should be, broken config files, a state of another config, a torn state."""
    d = tmp_path_factory.mktemp('bad')
    folder = d / 'heads'
    with zipfile.ZipFile(data) as z:
        z.extractall(folder)
    f = {'data': str(data), 'run_a': str(run_a), 'state_a': str(run_a / 'training-state-000000.012.pt')}
    f['no_labels'] = str(d / 'no_labels')
    shutil.copytree(folder, f['no_labels'])
    os.remove(Path(f['no_labels']) / 'dataset.json')
    f['no_parsing'] = str(d / 'no_parsing')
    shutil.copytree(folder, f['no_parsing'])
    shutil.rmtree(Path(f['no_parsing']) / 'parsing')
    f['no_masks'] = str(d / 'no_masks')
    shutil.copytree(folder, f['no_masks'])
    shutil.rmtree(Path(f['no_masks']) / 'masks')
    f['file'] = str(d / 'a_file')
    Path(f['file']).write_text('x')
    f['not_json'] = str(d / 'not_json.json')
    Path(f['not_json']).write_text('{"kimg": 1,')
    f['unknown_key'] = str(d / 'unknown_key.json')
    Path(f['unknown_key']).write_text(json.dumps({**json.loads((run_a / 'training_options.json').read_text()),
                                                  'learning_rate': 1}))
    f['outdir_file'] = str(d / 'outdir_file.json')          # a config whose run folder has a file in the way
    Path(f['outdir_file']).write_text(json.dumps({**json.loads((run_a / 'training_options.json').read_text()),
                                                  'outdir': str(Path(f['file']) / 'runs')}))
    f['unclamped'] = str(d / 'unclamped.json')             # float16 D blocks without their clamp
    opts = json.loads((run_a / 'training_options.json').read_text())
    Path(f['unclamped']).write_text(json.dumps({**opts, 'precision': 'mixed',
                                                'discriminator': {**opts['discriminator'], 'conv_clamp': None}}))
    f['torn_state'] = str(d / 'training-state-000001.pt')
    raw = (run_a / 'training-state-000000.012.pt').read_bytes()
    Path(f['torn_state']).write_bytes(raw[:len(raw) // 2])
    f['empty_run'] = str(d / 'empty_run')
    os.mkdir(f['empty_run'])
    f['missing'] = str(d / 'missing.zip')
    f['demo'] = str(Path(sh.__file__).parent / 'assets' / 'demo.safetensors')
    f['out'] = str(d / 'out')
    return f


MICRO = ['--config', '{config}']
# (command line, exit status, words the one error line must contain)
REFUSALS = [
    (['--outdir', '{out}'], 1, ['no dataset given', '--data']),
    ([*MICRO, '--data', '{missing}'], 1, ['missing.zip', 'no such file']),
    ([*MICRO, '--data', '{no_labels}'], 1, ['dataset.json']),
    ([*MICRO, '--data', '{no_parsing}'], 1, ['no parsing maps', '--no-parsing']),
    ([*MICRO, '--data', '{no_masks}'], 1, ['no foreground masks', '--no-mask']),
    (['--cfg', 'tiny', '--data', '{data}', '--outdir', '{out}', '--device', 'cpu', '--batch', '4'], 1,
     ['32x32', '64x64', '--cfg tiny']),
    ([*MICRO, '--batch', '6'], 1, ['--batch 6', 'minibatch-std group 4']),
    # a shipped 128 px network with another preset's discriminator, or with data of another size
    (['--cfg', 'tiny', '--data', '{data}', '--outdir', '{out}', '--device', 'cpu', '--batch', '4', '--resume', '{demo}'],
     1, ['--resume', 'demo.safetensors generates 128 px images', '--cfg tiny', 'for 64 px',
         'pass --cfg demo (the preset of that network)', '--data at 128 px']),
    (['--cfg', 'demo', '--data', '{data}', '--outdir', '{out}', '--device', 'cpu', '--batch', '4', '--resume', '{demo}'],
     1, ['images are 32x32', 'the network of --resume', 'demo.safetensors generates 128x128', '--resolution 128']),
    (['--cfg', 'tiny', '--data', '{data}', '--outdir', '{out}', '--device', 'cpu', '--batch', '4',
      '--resume', '{state_a}'], 1, ['another generator config', 'img_resolution', '--config']),
    ([*MICRO, '--resume', '{torn_state}'], 1, ['not a readable training state']),
    ([*MICRO, '--resume', '{empty_run}'], 1, ['no training-state-*.pt']),
    ([*MICRO, '--resume', '{missing}'], 1, ['missing.zip', 'no such file']),
    ([*MICRO, '--outdir', '{file}/runs'], 2, ['--outdir', 'a_file', 'is a file']),
    (['--config', '{outdir_file}'], 1, ['--outdir', 'a_file/runs', 'cannot write there']),
    (['--config', '{not_json}', '--data', '{data}'], 1, ['not_json.json', 'training_options.json']),
    (['--config', '{unknown_key}'], 1, ['unknown_key.json', 'learning_rate']),
    (['--config', '{missing}'], 1, ['missing.zip']),
    (['--config', '{unclamped}'], 1, ['unclamped.json', 'precision mixed', 'conv_clamp']),
    ([*MICRO, '--cfg', 'paper'], 2, ['--cfg', 'with --config']),
    ([*MICRO, '--device', 'gpu'], 2, ['gpu']),
]


@pytest.mark.parametrize('args,status,words', REFUSALS, ids=[w[0] for _, _, w in REFUSALS])
def test_refused_setups_give_one_line_and_no_traceback(args, status, words, bad, config_file):
    values = {**bad, 'config': str(config_file)}
    argv = [a.format(**values) for a in args]
    if args[:2] == MICRO and '--outdir' not in argv:
        argv += ['--outdir', bad['out']]
    res = train(*argv)
    assert res.exit_code == status, (res.exit_code, res.output, res.exception)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith('Error: '), res.stderr
    assert 'Traceback' not in res.output
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert not [p for p in Path(bad['out']).glob('*') if p.is_dir()], 'a refused run must not make a run folder'


def test_batch_that_does_not_split_over_ranks_is_refused(config_file):
    cfg = TrainingConfig.from_json(config_file.read_text())
    check_batch(cfg, DistInfo(world_size=2))                   # 2 per rank, mbstd group 2
    with pytest.raises(UserError, match=r'--batch 4 does not split over 3 processes; use a multiple of 3'):
        check_batch(cfg, DistInfo(world_size=3))
    cfg12 = TrainingConfig.from_dict({**cfg.to_dict(), 'batch': 12})
    check_batch(cfg12, DistInfo(world_size=4))                 # 3 per rank, mbstd group 3
    with pytest.raises(UserError, match=r'--batch 12: 6 images per process .* group 4; use a batch of 8k'):
        check_batch(cfg12, DistInfo(world_size=2))


def test_refusal_in_a_real_process(bad, config_file):
    p = subprocess.run([sys.executable, str(ROOT / 'train.py'), '--config', str(config_file), '--data', bad['missing'],
                        '--outdir', bad['out']], capture_output=True, text=True, env=SUBPROCESS_ENV, cwd=ROOT,
                       timeout=120)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert 'Traceback' not in p.stderr + p.stdout
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith('Error: --data ') and 'no such file' in lines[0], p.stderr


# ---------------------------------------------------------------------- 6. two processes under torchrun
# train.py under torchrun, run through its click command; afterwards (process group still up)
# every rank all-gathers each parameter and buffer of G, D and G_ema, and rank 0 writes the
# names of those that differ between ranks. A process group that outlived destroy_process_group
# kept gloo's worker threads running into interpreter exit, where they could abort a good run.
TORCHRUN_SCRIPT = r'''
import importlib.util, json, os, sys
import torch
import torch.distributed as dist
import spherehead.train.distributed as du
import spherehead.train.loop as loop
report, train_py, args = sys.argv[1], sys.argv[2], sys.argv[3:]
trainers, run, shutdown = [], loop.Trainer.run, du.shutdown
def keep(self):
    run(self)
    trainers.append(self)
loop.Trainer.run = keep
du.shutdown = lambda: None
spec = importlib.util.spec_from_file_location('train_script', train_py)
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
try:
    mod.main(args, prog_name='train.py', standalone_mode=False)
    t = trainers[0]
    out = {'rank': dist.get_rank(), 'world': dist.get_world_size(), 'nimg': t.progress.nimg, 'numel': 0,
           'differ': []}
    for net in ('G', 'D', 'G_ema'):
        m = getattr(t, net)
        for name, x in list(m.named_parameters()) + list(m.named_buffers()):
            got = [torch.zeros_like(x) for _ in range(out['world'])]
            dist.all_gather(got, x.detach().contiguous())
            out['numel'] += x.numel()
            if not all(torch.equal(got[0], g) for g in got[1:]):
                out['differ'].append(f'{net}.{name}')
finally:
    shutdown()
# Threads left once the group is gone (Linux names them): gloo's must end with it. Its network-loop
# thread can outlive the destroy call for a moment (CI once listed it), so it is given up to 20 s.
import contextlib, time
tasks = f'/proc/{os.getpid()}/task'
def thread_names():
    names = []
    for t in os.listdir(tasks):
        with contextlib.suppress(OSError):     # the thread ended while listed
            names.append(open(f'{tasks}/{t}/comm').read().strip())
    return names
out['threads'] = None
if os.path.isdir(tasks):
    deadline = time.monotonic() + 20
    names = thread_names()
    while any('gloo' in n for n in names) and time.monotonic() < deadline:
        time.sleep(0.1)
        names = thread_names()
    out['threads'] = names
if out['rank'] == 0:
    open(report, 'w').write(json.dumps(out))
'''


@pytest.mark.slow
def test_two_process_gloo_run_under_torchrun(config_file, tmp_path):
    report, helper = tmp_path / 'report.json', tmp_path / 'train_and_compare.py'
    helper.write_text(TORCHRUN_SCRIPT)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
           str(helper), str(report), str(ROOT / 'train.py'),
           '--config', str(config_file), '--outdir', str(tmp_path / 'runs'), '--kimg', '0.012']
    p = subprocess.run(cmd, capture_output=True, text=True, env=SUBPROCESS_ENV, cwd=ROOT, timeout=300)
    assert p.returncode == 0, (p.stdout[-3000:], p.stderr[-3000:])
    out = json.loads(report.read_text())
    assert out['world'] == 2 and out['nimg'] == 12
    if out['threads'] is not None:
        assert not [t for t in out['threads'] if 'gloo' in t], out['threads']
    # Gradients are averaged, so every weight is identical on both ranks. Only the running
    # means of W (truncation centres) differ: each rank tracks its own latents, as in EG3D,
    # and rank 0's are the ones saved.
    assert out['numel'] > 300_000
    assert out['differ'] and all(name.endswith('mapping.w_avg') for name in out['differ']), out['differ']
    run = run_dir_of(tmp_path / 'runs')                # only rank 0 writes
    log = (run / 'log.txt').read_text()
    assert '2 rank(s) x batch 2 on cpu' in log
    assert log.count('snapshot: ') == 1
    state = load_state(newest_state(run))
    assert state['nimg'] == 12 and state['step'] == 3
    sh.load_generator(run / 'network-snapshot-000000.012.safetensors')
    records = [json.loads(line) for line in (run / 'stats.jsonl').read_text().splitlines()]
    assert len(records) == 3 and all(math.isfinite(r['G/loss']) and math.isfinite(r['D/loss']) for r in records)
    # Each tick checks the ranks' weights against each other and says so in the log.
    assert [r['Sync/param_spread'] for r in records] == [0.0, 0.0, 0.0]
    assert log.count('ranks 2 weights equal') == 3


# ---------------------------------------------------------------------- GPU
@pytest.mark.cuda
@pytest.mark.parametrize('precision', ['fp32', 'mixed', 'bf16'])
def test_two_cuda_steps_have_finite_losses(precision, config_file, tmp_path):
    ok(train('--config', config_file, '--outdir', tmp_path, '--device', 'cuda', '--kimg', 0.008,
             '--precision', precision))
    run = run_dir_of(tmp_path)
    records = [json.loads(line) for line in (run / 'stats.jsonl').read_text().splitlines()]
    assert len(records) == 2
    for r in records:
        assert math.isfinite(r['G/loss']) and math.isfinite(r['D/loss']), r
    log = (run / 'log.txt').read_text()
    assert 'on cuda' in log
    assert ('mixed precision: float16 in D.b32, D.b16, D.b8' in log) == (precision == 'mixed'), log
    sh.load_generator(newest_snapshot(run))


@pytest.mark.cuda
def test_fake_cameras_on_cuda_are_the_drawn_dataset_labels(data):
    """The labels live on the GPU and the drawn indices go there without a blocking copy; the draw
    is the same as on the CPU for the same random state."""
    from spherehead.train.data import RealStream
    ds = HeadDataset(DatasetOptions(path=str(data)))
    on_gpu = RealStream(ds, 2, DistInfo(device=torch.device('cuda')), seed=0, workers=0)
    on_cpu = RealStream(ds, 2, DistInfo(device=torch.device('cpu')), seed=0, workers=0)
    a = on_gpu.random_labels(5, np.random.RandomState(7))
    b = on_cpu.random_labels(5, np.random.RandomState(7))
    assert a.is_cuda and a.shape == (5, 25)
    assert torch.equal(a.cpu(), b)
    expected = torch.stack([ds.get_label(int(i)) for i in np.random.RandomState(7).randint(len(ds), size=5)])
    assert torch.equal(b, expected)


def newest_snapshot(run: Path) -> Path:
    return numbered_files(run)[-1][1]

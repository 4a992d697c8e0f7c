"""Train the arms of a study: one train.py process per arm, several at once, each resumable.

Study folder layout::

    study.json              the StudyConfig every arm shares (written once; checked on every run)
    sessions.jsonl          one line per `study run`: when, where (device), how many arms at once,
                            and the kimg each arm went from and to (GPU time per arm comes from here)
    <arm>/train.log         the arm's train.py output, appended session after session
    <arm>/<NNNNN>-.../      the arm's train.py run folder (snapshots, states, stats.jsonl, log.txt)

An arm that has a training state continues from it (``--resume`` of its run folder); an arm that
reached the study's kimg is skipped. Stopping (Ctrl-C, SIGTERM or ``max_minutes``) asks every
running arm to finish its step and write a snapshot, so a later run continues where this one
stopped.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from spherehead.errors import UserError
from spherehead.study.arms import ARMS, DEFAULT_ARMS, Arm

STUDY_FILE = 'study.json'
SESSIONS_FILE = 'sessions.jsonl'
# Options that make the arms comparable: a continued study must keep them.
FIXED_FIELDS = ('data', 'cfg', 'batch', 'seed', 'phase1_kimg', 'phase2_kimg', 'train_args')


@dataclass
class StudyConfig:
    """What every arm shares. Lengths in kimg; phase boundaries are absolute (resolved at creation,
    so lengthening a study with a larger ``kimg`` keeps its schedule)."""
    data: str
    kimg: float = 200.0
    cfg: str = 'demo'
    batch: int = 32
    seed: int = 0
    phase1_kimg: float = 40.0
    phase2_kimg: float = 90.0
    snap_kimg: float = 50.0
    tick_kimg: float = 4.0
    arms: tuple[str, ...] = DEFAULT_ARMS
    train_args: tuple[str, ...] = ()      # further train.py options, the same for every arm

    def __post_init__(self) -> None:
        self.arms = tuple(self.arms)
        self.train_args = tuple(self.train_args)
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise ValueError(f'unknown arm {unknown[0]!r}; arms: {", ".join(ARMS)}')

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> 'StudyConfig':
        d = json.loads(text)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f'unknown study keys {sorted(unknown)}')
        return cls(**d)


def load_study(out: Path) -> StudyConfig | None:
    path = Path(out) / STUDY_FILE
    if not path.is_file():
        return None
    try:
        return StudyConfig.from_json(path.read_text())
    except (ValueError, TypeError) as e:
        raise UserError(f'{path}: not a readable study file ({e}); move it away to start a new study') from None


def merge_study(out: Path, given: StudyConfig, given_fields: set[str]) -> StudyConfig:
    """The study to run in ``out``: the saved one (with the options the user gave on top, where
    they keep the arms comparable), or ``given`` for a new folder. UserError on a conflict."""
    saved = load_study(out)
    if saved is None:
        return given
    changes = {}
    for name in given_fields:
        new, old = getattr(given, name), getattr(saved, name)
        if new == old:
            continue
        if name in FIXED_FIELDS:
            raise UserError(f'{Path(out) / STUDY_FILE}: this study was started with {name} {old!r}, not {new!r}; '
                            f'continue it with the same value, or give another --out for a new study')
        changes[name] = new
    return dataclasses.replace(saved, **changes)


def save_study(out: Path, study: StudyConfig) -> None:
    from spherehead.checkpoint import atomic_file
    Path(out).mkdir(parents=True, exist_ok=True)
    with atomic_file(Path(out) / STUDY_FILE) as tmp:
        Path(tmp).write_text(study.to_json())


# ---------------------------------------------------------------------- arm folders
def arm_run_dir(out: Path, arm: str) -> Path | None:
    """The train.py run folder of an arm (the one folder under <out>/<arm> with training_options.json)."""
    root = Path(out) / arm
    runs = sorted(p for p in root.glob('*/training_options.json')) if root.is_dir() else []
    if len(runs) > 1:
        raise UserError(f'{root}: {len(runs)} training runs in one arm folder; keep only one '
                        f'({", ".join(p.parent.name for p in runs)})')
    return runs[0].parent if runs else None


def arm_progress(run_dir: Path | None) -> dict:
    """{'kimg': images shown so far / 1000 (from the newest training state), 'sec_per_kimg': last
    logged, 'has_state': bool} of an arm's run folder."""
    from spherehead.train.snapshot import STATE_PREFIX, STATE_SUFFIX
    from spherehead.checkpoint import numbered_files
    info = {'kimg': 0.0, 'sec_per_kimg': None, 'has_state': False}
    if run_dir is None:
        return info
    states = numbered_files(run_dir, STATE_PREFIX, STATE_SUFFIX)
    info['has_state'] = bool(states)
    last = last_stats(run_dir)
    if last:
        info['kimg'] = float(last.get('kimg', 0.0))
        info['sec_per_kimg'] = last.get('Timing/sec_per_kimg')
    return info


def last_stats(run_dir: Path) -> dict | None:
    """The last complete line of a run's stats.jsonl (None if there is none)."""
    path = Path(run_dir) / 'stats.jsonl'
    if not path.is_file():
        return None
    last = None
    with open(path) as f:
        for line in f:
            try:
                last = json.loads(line)
            except json.JSONDecodeError:   # a line being written
                continue
    return last


def train_command(study: StudyConfig, arm: Arm, out: Path, device: str, workers: int) -> list[str]:
    """The train.py command line that starts or continues ``arm``."""
    cmd = [sys.executable, '-m', 'spherehead.tools.train_command']
    common = ['--kimg', f'{study.kimg:g}', '--snap', f'{study.snap_kimg:g}', '--tick', f'{study.tick_kimg:g}',
              '--workers', str(workers), '--device', device]
    run_dir = arm_run_dir(out, arm.name)
    if run_dir is not None and arm_progress(run_dir)['has_state']:
        return cmd + ['--config', str(run_dir / 'training_options.json'), '--resume', str(run_dir)] + common
    return (cmd + ['--data', study.data, '--outdir', str(Path(out) / arm.name), '--cfg', study.cfg,
                   '--batch', str(study.batch), '--seed', str(study.seed),
                   '--phase1-kimg', f'{study.phase1_kimg:g}', '--phase2-kimg', f'{study.phase2_kimg:g}']
            + common + arm.train_args() + list(study.train_args))


def device_name(device: str) -> str:
    """The accelerator the arms train on, as the report prints it ('NVIDIA H200', 'CPU (...)')."""
    import platform
    import torch
    if device != 'cpu' and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    return f'CPU ({cpu}, {os.cpu_count()} cores)'


# ---------------------------------------------------------------------- running
@dataclass
class _Running:
    arm: Arm
    proc: subprocess.Popen
    log: object
    kimg_from: float
    started: float


@dataclass
class RunResult:
    """What one `study run` did: kimg per arm before and after, failures, wall time."""
    kimg_from: dict = field(default_factory=dict)
    kimg_to: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)      # arm -> one-line reason
    stopped: bool = False
    wall_s: float = 0.0


def run_study(study: StudyConfig, out: Path, *, parallel: int, device: str = 'auto', workers: int | None = None,
              max_minutes: float | None = None, status_every: float = 60.0,
              echo: Callable[[str], None] = print, poll: float = 1.0) -> RunResult:
    """Train every unfinished arm of ``study`` in ``out``, ``parallel`` at a time."""
    out = Path(out)
    save_study(out, study)
    cores = os.cpu_count() or 1
    if workers is None:   # data workers per arm: what the cores leave after one main process per arm
        workers = max(0, min(3, (cores - parallel) // parallel))
    if device == 'auto':
        import torch
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    env = dict(os.environ)
    # Each arm's main process mostly launches GPU work; give each its share of the cores.
    env.setdefault('OMP_NUM_THREADS', str(max(1, cores // parallel)))
    env.pop('SPHEREHEAD_TRACEBACK', None)
    todo: list[Arm] = []
    result = RunResult()
    for name in study.arms:
        kimg = arm_progress(arm_run_dir(out, name))['kimg']
        result.kimg_from[name] = result.kimg_to[name] = kimg
        if kimg >= study.kimg - 1e-9:
            echo(f'{name}: done ({kimg:g} of {study.kimg:g} kimg)')
        else:
            todo.append(ARMS[name])
    start = time.time()
    deadline = start + max_minutes * 60 if max_minutes else None
    running: list[_Running] = []
    stop_requested = {'signal': False}

    def request_stop(signum=None, frame=None):
        if not stop_requested['signal']:
            echo('stopping: each running arm finishes its step and writes a snapshot')
        stop_requested['signal'] = True
        for r in running:
            if r.proc.poll() is None:
                r.proc.send_signal(signal.SIGINT)

    old = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    name_device = device_name(device)
    echo(f'study {out}: {len(todo)} arm(s) to train ({", ".join(a.name for a in todo) or "none"}), '
         f'{parallel} at a time on {name_device}, to {study.kimg:g} kimg each')
    last_status = time.time()
    try:
        while todo or running:
            while todo and len(running) < parallel and not stop_requested['signal']:
                arm = todo.pop(0)
                (out / arm.name).mkdir(parents=True, exist_ok=True)
                cmd = train_command(study, arm, out, device, workers)
                log = open(out / arm.name / 'train.log', 'a', buffering=1)
                log.write(f'\n=== {time.strftime("%Y-%m-%d %H:%M:%S")} {" ".join(cmd)}\n')
                proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)   # our signal handler forwards Ctrl-C once
                running.append(_Running(arm, proc, log, result.kimg_from[arm.name], time.time()))
                echo(f'{arm.name}: started at {result.kimg_from[arm.name]:g} kimg (log {out / arm.name / "train.log"})')
            time.sleep(poll)
            if deadline is not None and time.time() > deadline and not stop_requested['signal']:
                echo(f'--max-minutes {max_minutes:g} reached')
                request_stop()
            for r in list(running):
                rc = r.proc.poll()
                if rc is None:
                    continue
                running.remove(r)
                r.log.close()
                kimg = arm_progress(arm_run_dir(out, r.arm.name))['kimg']
                result.kimg_to[r.arm.name] = kimg
                if rc != 0:
                    result.failed[r.arm.name] = f'train.py exited with status {rc}: {_last_line(out / r.arm.name / "train.log")}'
                    echo(f'{r.arm.name}: FAILED ({result.failed[r.arm.name]})')
                else:
                    echo(f'{r.arm.name}: {"stopped" if kimg < study.kimg - 1e-9 else "finished"} at {kimg:g} kimg '
                         f'({time.time() - r.started:.0f} s)')
            if running and time.time() - last_status >= status_every:
                last_status = time.time()
                echo('  '.join(_status(out, r.arm.name, study.kimg) for r in running))
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for r in running:   # only reached on an exception: don't leave orphans behind
            r.proc.send_signal(signal.SIGINT)
        for r in running:
            r.proc.wait()
    result.stopped = stop_requested['signal']
    result.wall_s = time.time() - start
    _record_session(out, study, result, name_device, parallel, start)
    return result


def _status(out: Path, arm: str, target: float) -> str:
    p = arm_progress(arm_run_dir(out, arm))
    spk = f' {p["sec_per_kimg"]:.1f} s/kimg' if p['sec_per_kimg'] else ''
    return f'{arm} {p["kimg"]:.1f}/{target:g} kimg{spk}'


def _last_line(path: Path) -> str:
    try:
        lines = [l.strip() for l in Path(path).read_text(errors='replace').splitlines() if l.strip()]
    except OSError:
        return '(no log)'
    return lines[-1][:300] if lines else '(empty log)'


def _record_session(out: Path, study: StudyConfig, result: RunResult, device: str, parallel: int, start: float) -> None:
    arms = {a: {'kimg_from': result.kimg_from[a], 'kimg_to': result.kimg_to[a]}
            for a in study.arms if result.kimg_to[a] > result.kimg_from[a] or a in result.failed}
    if not arms:
        return
    line = {'start': time.strftime('%Y-%m-%dT%H:%M:%S', time.localtime(start)), 'wall_s': round(result.wall_s, 1),
            'device': device, 'parallel': parallel, 'arms': arms, 'failed': result.failed}
    with open(Path(out) / SESSIONS_FILE, 'a') as f:
        f.write(json.dumps(line) + '\n')

"""A study's resume states in a compact, split, checksummed form: to carry a study between machines
whose file transfers are small (the GPU machine returns at most 8 files of 16 MiB per call).

`spherehead study pack STUDY --out DIR` writes, per arm, from its newest ``training-state-<tag>.pt``::

    <arm>-<tag>.part001-of-002 ...        the compact state split into parts of at most --part-mib MiB
    <arm>-<tag>.manifest.json             run folder, tag, kimg, size and sha256 of each part, format version
    study-common.json                     the study's study.json and sessions.jsonl (once per pack)

`spherehead study unpack DIR --out STUDY` checks the parts and rebuilds a full training state (the
original dtypes) with the arm's small files, in ``STUDY/<arm>/<run folder>/``; `study run` then
resumes it like any arm.

What is compacted (everything else is kept exactly: counters, config, Adam's ``step``, param groups):

- the float32 tensors of G, D and G_ema become float16 where they are finite and within float16's
  range (|x| <= 65504); otherwise they stay as they are. One rounding to float16 is a relative change
  of at most 2^-11 (~4.9e-4), below one Adam step at lr 0.0025 (Adam moves a weight by about lr
  per step, and the weights are of order 0.01-1), so the rounding is lost in the next steps' noise.
- Adam's ``exp_avg`` is dropped where the parameter group's beta1 is 0 (our default betas (0, 0.99)):
  the next step overwrites it with the gradient, never reading the stored value (torch's single-tensor
  path ``exp_avg.lerp_(grad, 1 - beta1)`` and the foreach path ``_foreach_lerp_`` compute
  ``grad - (grad - exp_avg) * 0 = grad`` exactly for weight 1; the fused CUDA kernel that trains on
  the GPU (ATen/native/cuda/fused_adam_utils.cuh, ``adam_math``) computes
  ``beta1 * exp_avg + (1 - beta1) * grad = 0 * exp_avg + grad``, and ``1 - beta1 ** step = 1``;
  tests/test_study_pack.py checks the single-tensor, foreach and fused paths that run on the CPU).
  It comes back as zeros. With beta1 != 0 it is kept as bfloat16.
- ``exp_avg_sq`` is kept as bfloat16 (float16 would underflow: squared gradients go far below 6e-8);
  bfloat16's relative rounding 2^-8 moves the step size ``1 / sqrt(v)`` by at most 0.2 %.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from spherehead.checkpoint import atomic_file, numbered_files
from spherehead.errors import UserError
from spherehead.study.arms import ARMS
from spherehead.study.runner import SESSIONS_FILE, STUDY_FILE, arm_run_dir

PACK_FORMAT = 'spherehead-study-pack'
PACK_VERSION = 1
COMMON_FILE = 'study-common.json'
ARM_FILES = ('training_options.json', 'log.txt', 'stats.jsonl')     # an arm's small files, kept whole
FLOAT16_MAX = 65504.0
MANIFEST_SUFFIX = '.manifest.json'
PART_RE = re.compile(r'\.part(\d{3,})-of-(\d{3,})$')


# ---------------------------------------------------------------------- compact <-> full state
ADAM_STATE_ORDER = ('step', 'exp_avg', 'exp_avg_sq')    # the order Adam writes (and reads) its state in


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace('torch.', '')


def _to_float16(t: torch.Tensor) -> bool:
    """Whether a weight tensor goes to float16: float32/64, finite, |x| <= 65504 (so it round-trips)."""
    if t.dtype not in (torch.float32, torch.float64) or t.numel() == 0:
        return False
    return bool(torch.isfinite(t).all()) and float(t.abs().max()) <= FLOAT16_MAX


def compact_state(state: dict) -> tuple[dict, dict]:
    """(compact state, restore info) of a full training state (tensors on the CPU). The restore
    info (JSON-able) names each tensor's original dtype and the dropped ``exp_avg`` shapes."""
    out = dict(state)
    restore: dict = {'weights': {}, 'optimizers': {}}
    for net in ('G', 'D', 'G_ema'):
        sd, dtypes = {}, {}
        for k, t in state[net].items():
            if isinstance(t, torch.Tensor) and _to_float16(t):
                dtypes[k] = _dtype_name(t)
                t = t.to(torch.float16)
            sd[k] = t
        out[net], restore['weights'][net] = sd, dtypes
    for key in ('opt_G', 'opt_D'):
        if key not in state:
            continue
        opt = state[key]
        info = {'dropped_exp_avg': {}, 'dtypes': {}}
        new_state = {}
        for group in opt['param_groups']:
            beta1 = float(group['betas'][0])
            for pid in group['params']:
                if pid not in opt['state']:
                    continue
                s = dict(opt['state'][pid])
                ea = s.get('exp_avg')
                if isinstance(ea, torch.Tensor):
                    if beta1 == 0.0:
                        info['dropped_exp_avg'][str(pid)] = {'shape': list(ea.shape), 'dtype': _dtype_name(ea)}
                        del s['exp_avg']
                    elif ea.is_floating_point():
                        info['dtypes'][f'{pid}.exp_avg'] = _dtype_name(ea)
                        s['exp_avg'] = ea.to(torch.bfloat16)
                eas = s.get('exp_avg_sq')
                if isinstance(eas, torch.Tensor) and eas.is_floating_point():
                    info['dtypes'][f'{pid}.exp_avg_sq'] = _dtype_name(eas)
                    s['exp_avg_sq'] = eas.to(torch.bfloat16)
                new_state[pid] = s
        out[key] = {'state': new_state, 'param_groups': opt['param_groups']}
        restore['optimizers'][key] = info
    return out, restore


def full_state(compact: dict, restore: dict) -> dict:
    """The inverse of ``compact_state``: original dtypes, dropped ``exp_avg`` as zeros."""
    out = dict(compact)
    for net, dtypes in restore['weights'].items():
        out[net] = {k: (t.to(getattr(torch, dtypes[k])) if k in dtypes else t) for k, t in compact[net].items()}
    for key, info in restore['optimizers'].items():
        opt = compact[key]
        new_state = {}
        for pid, s in opt['state'].items():
            s = dict(s)
            for name in ('exp_avg', 'exp_avg_sq'):
                dt = info['dtypes'].get(f'{pid}.{name}')
                if dt is not None:
                    s[name] = s[name].to(getattr(torch, dt))
            dropped = info['dropped_exp_avg'].get(str(pid))
            if dropped is not None:
                s['exp_avg'] = torch.zeros(dropped['shape'], dtype=getattr(torch, dropped['dtype']))
            new_state[pid] = {**{k: s[k] for k in ADAM_STATE_ORDER if k in s},
                              **{k: v for k, v in s.items() if k not in ADAM_STATE_ORDER}}
        out[key] = {'state': new_state, 'param_groups': opt['param_groups']}
    return out


# ---------------------------------------------------------------------- pack
@dataclass
class PackedArm:
    arm: str
    tag: str
    kimg: float
    parts: list[Path]
    bytes: int
    state_bytes: int


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as tmp:
        Path(tmp).write_bytes(data)


def arms_with_state(study: Path) -> list[str]:
    """The arms (in ARMS order) whose run folder in ``study`` holds a training state."""
    from spherehead.train.snapshot import newest_state
    found = []
    for name in ARMS:
        run = arm_run_dir(study, name)
        if run is not None and newest_state(run) is not None:
            found.append(name)
    return found


def pack_arm(study: Path, arm: str, out: Path, part_bytes: int) -> PackedArm:
    """Write one arm's newest state as parts + manifest under ``out``."""
    from spherehead.train.snapshot import STATE_PREFIX, STATE_SUFFIX, load_state
    run = arm_run_dir(study, arm)
    states = numbered_files(run, STATE_PREFIX, STATE_SUFFIX) if run is not None else []
    if not states:
        raise UserError(f'{Path(study) / arm}: no training state to pack; train the arm first or leave it out of --arms')
    path = states[-1][1]
    tag = path.name[len(STATE_PREFIX):-len(STATE_SUFFIX)]
    state = load_state(path)
    compact, restore = compact_state(state)
    files = {}
    for name in ARM_FILES:
        p = run / name
        if p.is_file():
            files[name] = torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) if p.stat().st_size \
                else torch.zeros(0, dtype=torch.uint8)
    payload = {'format': PACK_FORMAT, 'version': PACK_VERSION, 'arm': arm, 'run_folder': run.name, 'tag': tag,
               'state': compact, 'restore': json.dumps(restore), 'files': files}
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    n = max(1, math.ceil(len(data) / part_bytes))
    stem = f'{arm}-{tag}'
    parts, entries = [], []
    for i in range(n):
        chunk = data[i * part_bytes:(i + 1) * part_bytes]
        name = f'{stem}.part{i + 1:03d}-of-{n:03d}'
        _write_bytes(out / name, chunk)
        parts.append(out / name)
        entries.append({'name': name, 'bytes': len(chunk), 'sha256': _sha256(chunk)})
    nimg = int(state['nimg'])
    manifest = {'format': PACK_FORMAT, 'version': PACK_VERSION, 'arm': arm, 'run_folder': run.name, 'tag': tag,
                'nimg': nimg, 'kimg': nimg / 1000, 'bytes': len(data), 'sha256': _sha256(data), 'parts': entries,
                'state_file': path.name, 'state_bytes': path.stat().st_size,
                'dropped_exp_avg': {k: len(v['dropped_exp_avg']) for k, v in restore['optimizers'].items()},
                'created': time.strftime('%Y-%m-%dT%H:%M:%S')}
    _write_bytes(out / f'{stem}{MANIFEST_SUFFIX}', json.dumps(manifest, indent=2).encode())
    return PackedArm(arm, tag, nimg / 1000, parts, len(data), path.stat().st_size)


def pack_study(study: Path, out: Path, arms: list[str] | None = None, part_mib: float = 16.0,
               echo: Callable[[str], None] = print) -> list[PackedArm]:
    """Pack the newest state of each arm in ``arms`` (default: every arm with a state)."""
    study, out = Path(study), Path(out)
    if not (study / STUDY_FILE).is_file():
        raise UserError(f'{study}: no {STUDY_FILE}; give a study folder (made by `spherehead study run`)')
    have = arms_with_state(study)
    names = list(arms) if arms else have
    if not names:
        raise UserError(f'{study}: no arm has a training state yet; nothing to pack')
    without = [a for a in names if a not in have]
    if without:
        raise UserError(f'--arms: no training state for {", ".join(without)} in {study}; '
                        f'pack only arms that have one ({", ".join(have) or "none yet"})')
    part_bytes = max(1, int(part_mib * 2 ** 20))
    out.mkdir(parents=True, exist_ok=True)
    common = {'format': PACK_FORMAT, 'version': PACK_VERSION,
              'files': {n: (study / n).read_text() for n in (STUDY_FILE, SESSIONS_FILE) if (study / n).is_file()}}
    _write_bytes(out / COMMON_FILE, json.dumps(common, indent=1).encode())
    done = []
    for arm in names:
        p = pack_arm(study, arm, out, part_bytes)
        done.append(p)
        echo(f'{arm}: {p.kimg:g} kimg, {len(p.parts)} part(s), {p.bytes / 1e6:.1f} MB '
             f'(state file {p.state_bytes / 1e6:.1f} MB)')
    total = sum(p.bytes for p in done)
    echo(f'packed {len(done)} arm(s) into {out}: {sum(len(p.parts) for p in done)} part(s) + '
         f'{len(done)} manifest(s) + {COMMON_FILE}, {total / 1e6:.1f} MB')
    return done


# ---------------------------------------------------------------------- unpack
@dataclass
class UnpackResult:
    unpacked: list[str] = field(default_factory=list)
    incomplete: dict = field(default_factory=dict)    # arm -> one-line reason
    kept: list[str] = field(default_factory=list)     # arms whose STUDY state was as new or newer


def _check_parts(src: Path, manifest: dict) -> tuple[bytes | None, str]:
    """(joined payload, '') when every part is there with its sha256; else (None, what is wrong)."""
    missing, bad, chunks = [], [], []
    for e in manifest['parts']:
        p = src / e['name']
        if not p.is_file():
            missing.append(e['name'])
            continue
        data = p.read_bytes()
        if len(data) != e['bytes'] or _sha256(data) != e['sha256']:
            bad.append(e['name'])
        chunks.append(data)
    if missing or bad:
        what = []
        if missing:
            what.append(f'missing {", ".join(missing)}')
        if bad:
            what.append(f'bad (size or sha256) {", ".join(bad)}')
        return None, f'{len(missing) + len(bad)} of {len(manifest["parts"])} part(s) ' + '; '.join(what)
    data = b''.join(chunks)
    if _sha256(data) != manifest['sha256']:
        return None, 'the joined parts do not match the manifest sha256'
    return data, ''


def _read_manifests(src: Path, echo) -> dict[str, list[tuple[Path, dict]]]:
    by_arm: dict[str, list[tuple[Path, dict]]] = {}
    for path in sorted(src.glob(f'*{MANIFEST_SUFFIX}')):
        try:
            m = json.loads(path.read_text())
            if m.get('format') != PACK_FORMAT:
                raise ValueError('not a study pack manifest')
            if m.get('version') != PACK_VERSION:
                raise ValueError(f'format version {m.get("version")}, this SphereHead reads {PACK_VERSION}')
            if m.get('arm') not in ARMS:
                raise ValueError(f'unknown arm {m.get("arm")!r}')
        except (ValueError, OSError) as e:
            echo(f'{path.name}: skipped: {e}')
            continue
        by_arm.setdefault(m['arm'], []).append((path, m))
    return by_arm


def unpack_study(src: Path, study: Path, echo: Callable[[str], None] = print) -> UnpackResult:
    """Rebuild full training states from the packs in ``src`` into ``study`` (see the module doc)."""
    from spherehead.train.snapshot import STATE_PREFIX, STATE_SUFFIX, atomic_torch_save, load_state, state_name
    src, study = Path(src), Path(study)
    if not src.is_dir():
        raise UserError(f'{src}: no such folder; give the folder that holds the *.manifest.json and parts')
    by_arm = _read_manifests(src, echo)
    if not by_arm:
        raise UserError(f'{src}: no *{MANIFEST_SUFFIX}; give the folder `spherehead study pack --out` wrote')
    study.mkdir(parents=True, exist_ok=True)
    _unpack_common(src, study, echo)
    result = UnpackResult()
    for arm in [a for a in ARMS if a in by_arm]:
        packs = sorted(by_arm[arm], key=lambda pm: pm[1]['nimg'], reverse=True)
        problems = []
        chosen = None
        for path, m in packs:          # the newest complete pack of the arm
            data, why = _check_parts(src, m)
            if data is not None:
                chosen = (m, data)
                break
            problems.append(f'{m["arm"]}-{m["tag"]}: {why}')
        if problems:
            result.incomplete[arm] = '; '.join(problems)
            tail = f'; unpacking the older {chosen[0]["tag"]}' if chosen else ''
            echo(f'{arm}: not unpacked: {result.incomplete[arm]}{tail}; bring them back and run unpack again')
        if chosen is None:
            continue
        m, data = chosen
        run = study / arm / m['run_folder']
        existing = arm_run_dir(study, arm)
        if existing is not None and existing.name != m['run_folder']:
            result.incomplete[arm] = f'{study / arm} holds another run, {existing.name}'
            echo(f'{arm}: not unpacked: {study / arm} holds another run, {existing.name}, not the packed '
                 f'{m["run_folder"]}; move it away to unpack {arm}')
            continue
        states = numbered_files(run, STATE_PREFIX, STATE_SUFFIX) if run.is_dir() else []
        if states:
            have = int(load_state(states[-1][1])['nimg'])
            if have >= m['nimg']:
                result.kept.append(arm)
                echo(f'{arm}: kept {states[-1][1].name} in {run} ({have / 1000:g} kimg, not older than the '
                     f'packed {m["kimg"]:g} kimg)')
                continue
        payload = torch.load(io.BytesIO(data), map_location='cpu', weights_only=True)
        state = full_state(payload['state'], json.loads(payload['restore']))
        run.mkdir(parents=True, exist_ok=True)
        for name, t in payload['files'].items():
            _write_bytes(run / name, t.numpy().tobytes())
        atomic_torch_save(state, run / state_name(m['tag']))
        snapshot = _write_ema_snapshot(state, run, m)
        result.unpacked.append(arm)
        echo(f'{arm}: unpacked {m["kimg"]:g} kimg into {run / state_name(m["tag"])}'
             + (f' and {snapshot.name}' if snapshot else ''))
    echo(f'unpacked {len(result.unpacked)} arm(s) into {study}'
         + (f' ({", ".join(result.unpacked)})' if result.unpacked else '')
         + (f'; {len(result.kept)} kept as newer or equal' if result.kept else '')
         + (f'; {len(result.incomplete)} incomplete' if result.incomplete else ''))
    return result


def _write_ema_snapshot(state: dict, run: Path, manifest: dict) -> Path | None:
    """The arm's network snapshot at the packed kimg, from the unpacked G_ema, unless the run folder
    already has one: `study report` and the visualizer read snapshots, not training states. Its
    weights went through float16 once (the module doc); the provenance says so."""
    from spherehead.checkpoint import save_generator
    from spherehead.networks.generator import Generator
    from spherehead.train.config import TrainingConfig
    from spherehead.train.snapshot import snapshot_name
    path = run / snapshot_name(manifest['tag'])
    if path.exists():
        return None
    G = Generator(TrainingConfig.from_json(state['config']).generator)
    G.load_state_dict(state['G_ema'])
    G.provenance = (f'{run.name} at {manifest["kimg"]:.1f} kimg (G_ema unpacked from a study pack: '
                    'weights rounded to float16 once)')
    save_generator(G.eval(), path)
    return path


def _unpack_common(src: Path, study: Path, echo) -> None:
    """study.json (when the study has none) and sessions.jsonl (the packed lines it lacks, appended)."""
    path = src / COMMON_FILE
    if not path.is_file():
        return
    try:
        files = json.loads(path.read_text())['files']
    except (ValueError, KeyError) as e:
        echo(f'{COMMON_FILE}: skipped: not readable ({e})')
        return
    if STUDY_FILE in files and not (study / STUDY_FILE).is_file():
        _write_bytes(study / STUDY_FILE, files[STUDY_FILE].encode())
    if SESSIONS_FILE in files:
        have = (study / SESSIONS_FILE).read_text().splitlines() if (study / SESSIONS_FILE).is_file() else []
        new = [l for l in files[SESSIONS_FILE].splitlines() if l.strip() and l not in set(have)]
        if new:
            _write_bytes(study / SESSIONS_FILE, ''.join(l + '\n' for l in have + new).encode())

"""Checked values of the command line: the option types (seed and float lists, finite numbers,
devices, networks, output paths), and the checks a command's body makes (folders created, huge
requests refused). A bad value is one line naming it (click.BadParameter, exit 2).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable

import click

from spherehead.errors import UserError

MAX_SEED = 2 ** 32 - 1          # numpy RandomState accepts seeds 0 .. 2**32 - 1
MAX_LIST = 1_000_000            # never expand a list of seeds longer than this (memory)
NETWORK_SUFFIXES = ('.safetensors', '.pkl')
NETWORK_HELP = ("network: a .safetensors of ours, a released EG3D/PanoHead/SphereHead .pkl, 'demo', 'demo-triplane' "
                "or 'random:tiny'")


class SeedList(click.ParamType):
    """'0,1,2', '0-7' or '0-3,10' -> list[int] in 0..2**32-1, in the order given.

    unique: a seed listed twice is an error (its files would have one name).
    """
    name = 'seeds'

    def __init__(self, unique: bool = True, max_count: int = MAX_LIST):
        self.unique, self.max_count = unique, max_count

    def _int(self, s: str, text: str, param, ctx) -> int:
        try:
            v = int(s)
        except ValueError:
            where = '' if s == text.strip() else f' in {text!r}'
            self.fail(f"{s!r}{where} is not a seed; seeds are whole numbers, e.g. 0,1,2 or 0-7", param, ctx)
        if not 0 <= v <= MAX_SEED:
            self.fail(f'seed {v} is out of range; seeds go from 0 to {MAX_SEED}', param, ctx)
        return v

    def convert(self, value, param, ctx) -> list[int]:
        if isinstance(value, list):
            return value
        text = str(value)
        parts = [p.strip() for p in text.split(',')]
        if not text.strip() or not all(parts):
            self.fail(f'{text!r} has an empty entry; give seeds like 0,1,2 or 0-7', param, ctx)
        spans = []
        for p in parts:
            a, sep, b = p.partition('-')
            if sep and a.strip():                  # 'a-b' (a leading '-' is a negative number, refused below)
                lo, hi = self._int(a.strip(), text, param, ctx), self._int(b.strip(), text, param, ctx)
                if hi < lo:
                    self.fail(f'range {p!r} is reversed; write it as {hi}-{lo}', param, ctx)
                spans.append((lo, hi))
            else:
                v = self._int(p, text, param, ctx)
                spans.append((v, v))
        count = sum(hi - lo + 1 for lo, hi in spans)
        if count > self.max_count:
            self.fail(f'{text!r} asks for {count} seeds; at most {self.max_count} at once', param, ctx)
        seeds = [s for lo, hi in spans for s in range(lo, hi + 1)]
        if self.unique and len(set(seeds)) != len(seeds):
            seen: set[int] = set()
            dup = next(s for s in seeds if s in seen or seen.add(s))
            self.fail(f'seed {dup} is listed twice in {text!r}; list each seed once', param, ctx)
        return seeds


class FloatList(click.ParamType):
    """'0,90,180' -> list[float]: finite numbers, optionally within [lo, hi], unique if asked."""
    name = 'numbers'

    def __init__(self, what: str = 'value', lo: float | None = None, hi: float | None = None, unique: bool = True):
        self.what, self.lo, self.hi, self.unique = what, lo, hi, unique

    def convert(self, value, param, ctx) -> list[float]:
        if isinstance(value, list):
            return value
        text = str(value)
        parts = [p.strip() for p in text.split(',')]
        if not text.strip() or not all(parts):
            self.fail(f'{text!r} has an empty entry; list {self.what}s with commas, e.g. 0,90,180', param, ctx)
        out = []
        for p in parts:
            out.append(check_finite(p, self.what, self.lo, self.hi, param, ctx, hint=' (list values with commas, '
                                    'e.g. 0,90,180; ranges like 0-90 are for seeds only)'))
        if self.unique and len(set(out)) != len(out):
            dup = next(v for i, v in enumerate(out) if v in out[:i])
            self.fail(f'{self.what} {dup:g} is listed twice in {text!r}; list each once', param, ctx)
        return out


def check_finite(text, what: str, lo: float | None, hi: float | None, param=None, ctx=None, hint: str = '') -> float:
    """float(text), refusing non-numbers, nan, inf and values outside [lo, hi] with a BadParameter."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise click.BadParameter(f'{text!r} is not a number{hint}', ctx, param) from None
    if not math.isfinite(v):
        raise click.BadParameter(f'{what} {text!r} is not a finite number', ctx, param)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f'{lo:g}..{hi:g}' if lo is not None and hi is not None else (f'>= {lo:g}' if lo is not None
                                                                         else f'<= {hi:g}')
        raise click.BadParameter(f'{what} {v:g} is out of range; use {rng}', ctx, param)
    return v


class Finite(click.ParamType):
    """A float that is not nan/inf, optionally within [lo, hi] (click.FloatRange lets nan through)."""
    name = 'number'

    def __init__(self, what: str = 'value', lo: float | None = None, hi: float | None = None):
        self.what, self.lo, self.hi = what, lo, hi

    def convert(self, value, param, ctx) -> float:
        if isinstance(value, float) and math.isfinite(value):
            text = value
        else:
            text = str(value)
        return check_finite(text, self.what, self.lo, self.hi, param, ctx)


class Device(click.ParamType):
    """'cpu', 'cuda', 'cuda:N' or 'mps' that this machine can use -> str; 'auto' -> cuda if usable, else cpu."""
    name = 'device'

    def convert(self, value, param, ctx) -> str:
        import torch
        text = str(value).strip()
        if text == 'auto':
            return default_device()
        try:
            dev = torch.device(text)
        except (RuntimeError, ValueError):
            self.fail(f'{text!r} is not a device; use cpu, cuda or cuda:N', param, ctx)
        if dev.type == 'cpu':
            return 'cpu'
        if dev.type == 'cuda':
            if not torch.cuda.is_available():
                why = ('this PyTorch build has no CUDA' if torch.version.cuda is None else 'no CUDA GPU is visible')
                self.fail(f'{text!r}: {why} (torch {torch.__version__}); use --device cpu, or install a CUDA '
                          f'build of PyTorch (see README)', param, ctx)
            n = torch.cuda.device_count()
            if dev.index is not None and dev.index >= n:
                self.fail(f'{text!r}: this machine has {n} CUDA GPU(s), numbered 0..{n - 1}', param, ctx)
            return text
        if dev.type == 'mps':
            if not torch.backends.mps.is_available():
                self.fail(f"{text!r}: Apple's MPS is not available here; use --device cpu", param, ctx)
            return text
        self.fail(f'{text!r}: unsupported device type; use cpu, cuda or cuda:N', param, ctx)


def default_device() -> str:
    """'cuda' when a CUDA GPU is usable, else 'cpu'."""
    import torch
    return 'cuda' if torch.cuda.is_available() else 'cpu'


class Network(click.ParamType):
    """A network source: 'demo', 'random:<preset>[@seed]' or an existing .safetensors / .pkl file -> str.

    Checked when parsed (exit 2); problems inside the file are found when it is loaded (exit 1).
    allow_dir: also accept a folder (a training run folder, for tools that follow one).
    """
    name = 'network'

    def __init__(self, allow_dir: bool = False):
        self.allow_dir = allow_dir

    def convert(self, value, param, ctx) -> str:
        text = str(value)
        from spherehead.checkpoint import SHIPPED_MODELS
        if text in SHIPPED_MODELS:
            return text
        if text.startswith('random:'):
            from spherehead.config import PRESETS
            name, _, seed = text[len('random:'):].partition('@')
            if name not in PRESETS:
                self.fail(f"{text!r}: unknown preset {name!r}; use random:{' or random:'.join(sorted(PRESETS))}",
                          param, ctx)
            if seed and not (seed.isdigit() and int(seed) <= MAX_SEED):
                self.fail(f"{text!r}: the part after '@' must be a seed 0..{MAX_SEED}, e.g. random:tiny@3", param, ctx)
            return text
        path = Path(text)
        if not path.exists():
            self.fail(f"{text!r}: no such file; give a .safetensors or .pkl network, 'demo' or 'random:tiny'",
                      param, ctx)
        if path.is_dir():
            if self.allow_dir:
                return text
            self.fail(f'{text!r} is a folder; give a network file (.safetensors or .pkl)', param, ctx)
        if path.suffix.lower() not in NETWORK_SUFFIXES:
            self.fail(f'{text!r}: unknown network file type {path.suffix or "(no extension)"!r}; '
                      f'expected .safetensors or .pkl', param, ctx)
        return text


def _check_creatable(path: Path) -> str | None:
    """Why a folder at ``path`` could not be created (None if it exists or could be)."""
    p = path.absolute()
    for parent in [p, *p.parents]:
        if parent.exists():
            if not parent.is_dir():
                return f'{parent} is a file, not a folder'
            if parent != p and not os.access(parent, os.W_OK | os.X_OK):
                return f'no permission to create folders in {parent}'
            return None
    return None


class OutputFile(click.ParamType):
    """A file to write, with one of ``exts`` (lower-case, with dot) -> str. Its folder is made by make_parent."""
    name = 'file'

    def __init__(self, exts: Iterable[str], what: str = 'output'):
        self.exts = tuple(e.lower() for e in exts)
        self.what = what

    def convert(self, value, param, ctx) -> str:
        text = str(value)
        path = Path(text)
        if path.is_dir() or text.endswith(('/', os.sep)):
            self.fail(f'{text!r} is a folder; give a file name ending in {" or ".join(self.exts)}, '
                      f'e.g. {Path(text) / ("out" + self.exts[0])}', param, ctx)
        if path.suffix.lower() not in self.exts:
            self.fail(f'{text!r} does not end in {" or ".join(self.exts)}; name the {self.what} file '
                      f'e.g. {path.with_suffix(self.exts[0]) if path.name else "out" + self.exts[0]}', param, ctx)
        why = _check_creatable(path.parent)
        if why:
            self.fail(f'{text!r}: cannot create its folder ({why}); choose another path', param, ctx)
        return text


class OutputDir(click.ParamType):
    """A folder to write into (created by make_dir) -> str."""
    name = 'folder'

    def convert(self, value, param, ctx) -> str:
        text = str(value)
        why = _check_creatable(Path(text))
        if why:
            self.fail(f'{text!r}: cannot use it as the output folder ({why}); choose another path', param, ctx)
        return text


class OutputPath(click.ParamType):
    """A file or folder to be written (any name) -> str; refused when its parent folder cannot be made."""
    name = 'path'

    def convert(self, value, param, ctx) -> str:
        text = str(value)
        why = _check_creatable(Path(text).parent)
        if why:
            self.fail(f'{text!r}: cannot create its folder ({why}); choose another path', param, ctx)
        return text


def make_dir(path: str | os.PathLike) -> Path:
    """Create a folder (and parents); a failure is a UserError naming it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f'{path}: cannot create this folder ({e.strerror or e}); choose another path') from None
    return path


def make_parent(path: str | os.PathLike) -> Path:
    """Create the folder of a file to be written; returns the file's Path."""
    path = Path(path)
    make_dir(path.parent if str(path.parent) else '.')
    return path


def check_count(count: int, what: str, detail: str, go_on: bool, limit: int = 1000, flag: str = '--yes') -> None:
    """Refuse a huge request (more than ``limit`` items) unless ``go_on`` (the user passed ``flag``)."""
    if count > limit and not go_on:
        raise click.UsageError(f'this asks for {count} {what} ({detail}), more than {limit}; pass {flag} to go on, '
                               f'or ask for fewer')

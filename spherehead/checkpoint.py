"""Network files: our .safetensors format (config JSON in the metadata) and the sources
``load_generator`` accepts: a .safetensors of ours, a released .pkl, 'demo', 'random:<preset>'."""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

import torch

from spherehead.config import PRESETS, GeneratorConfig, preset
from spherehead.errors import UserError
from spherehead.networks.generator import Generator

FORMAT_NAME = 'spherehead-generator'
FORMAT_VERSION = '1'
ASSETS = Path(__file__).parent / 'assets'
DEMO_PATH = ASSETS / 'demo.safetensors'
# Models shipped with the package: name -> file under spherehead/assets (see docs/study.md for demo-triplane).
SHIPPED_MODELS = {'demo': 'demo.safetensors', 'demo-triplane': 'demo_triplane.safetensors'}


def shipped_model_path(name: str) -> Path:
    """The file of a shipped model ('demo', 'demo-triplane')."""
    return DEMO_PATH if name == 'demo' else ASSETS / SHIPPED_MODELS[name]


def random_generator(preset_name: str = 'tiny', seed: int = 0) -> Generator:
    """A freshly initialised generator of a preset, identical for the same seed."""
    if preset_name not in PRESETS:
        raise UserError(f"random:{preset_name}: unknown preset; use one of {', '.join(sorted(PRESETS))}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = Generator(preset(preset_name))
    G.provenance = f'random:{preset_name} (untrained, random weights)'
    return G


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike):
    """Yields ``<path>.tmp`` to write; renames it over ``path`` when the block ends without an
    error, so an interrupted write leaves the old file (or none), never a torn one. On an error
    (or Ctrl-C) the partial ``.tmp`` is removed."""
    path = Path(path)
    tmp = path.with_name(path.name + '.tmp')
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def save_generator(G: Generator, path: str | os.PathLike) -> None:
    """Write G's parameters and buffers to a .safetensors file with its config as JSON metadata
    (written to a temporary file and renamed, so an interrupted save leaves no broken file)."""
    from safetensors.torch import save_file
    path = Path(path)
    state = {k: v.detach().to('cpu').contiguous().clone() for k, v in G.state_dict().items()}
    meta = {'format': FORMAT_NAME, 'version': FORMAT_VERSION, 'config': G.config.to_json(),
            'provenance': str(getattr(G, 'provenance', ''))}
    with atomic_file(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
        os.chmod(tmp, _new_file_mode())          # safetensors creates owner-only (0600) files; use the usual mode


def _new_file_mode() -> int:
    """The mode a newly created file gets here: 0666 minus the process umask (0644 with umask 022)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_TORCH_LEGACY_MAGIC = bytes.fromhex('80028a0a6cfc9c46f9206aa85019')   # pickle of torch's legacy magic number


def check_network_file(path: str | os.PathLike) -> Path:
    """Refuse, with one line saying what the file really is, a path that cannot be a network file:
    missing, a folder, an unknown extension, a torch.save archive named .pkl, a .safetensors
    without a safetensors header. Returns the path; the loaders find deeper problems."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file; give a .safetensors or .pkl network, 'demo' or 'random:tiny'")
    if path.is_dir():
        raise UserError(f'{path}: is a folder, not a network file; give a .safetensors or .pkl file')
    suffix = path.suffix.lower()
    if suffix not in ('.pkl', '.safetensors'):
        raise UserError(f'{path}: unknown network file type {path.suffix or "(no extension)"!r}; '
                        f'expected .safetensors or .pkl')
    with open(path, 'rb') as f:
        head = f.read(16)
    size = path.stat().st_size
    if size == 0:
        raise UserError(f'{path}: the file is empty; use a complete copy of the network')
    if suffix == '.pkl':
        if head.startswith(b'PK\x03\x04') or head.startswith(_TORCH_LEGACY_MAGIC):
            raise UserError(f'{path}: a torch.save file (e.g. a state_dict), not a network pickle; give the '
                            f'network-snapshot-*.pkl written by EG3D / PanoHead / SphereHead training, or load '
                            f'it in Python and save the generator with sh.save_generator')
    else:
        n = int.from_bytes(head[:8], 'little') if len(head) >= 8 else -1
        if n <= 0 or 8 + n > size or head[8:9] != b'{':
            raise UserError(f'{path}: not a .safetensors file (no safetensors header: damaged, cut short or '
                            f'another kind of file); use the original file or write it again')
    return path


def read_safetensors_config(path: str | os.PathLike) -> GeneratorConfig:
    """The generator config stored in a .safetensors network file."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework='pt') as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise UserError(f'{path}: not a readable .safetensors file ({" ".join(str(e).split())}); the file is '
                        f'damaged or of another kind; use the original file or write it again') from None
    if meta.get('format') != FORMAT_NAME or 'config' not in meta:
        raise UserError(f'{path}: a .safetensors file without SphereHead generator metadata; '
                        'convert released pickles with `spherehead convert MODEL.pkl OUT.safetensors`')
    try:
        return GeneratorConfig.from_json(meta['config'])
    except (ValueError, TypeError, json.JSONDecodeError) as e:
        raise UserError(f'{path}: invalid generator config in metadata ({e})')


def load_safetensors_generator(path: str | os.PathLike) -> Generator:
    from safetensors.torch import load_file
    cfg = read_safetensors_config(path)
    G = Generator(cfg)
    state = load_file(str(path))
    missing, unexpected = G.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f'{path}: tensors do not match the stored config '
                        f'(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})')
    G.provenance = str(path)
    stored = _stored_provenance(path)
    if stored:   # what the file says it is (training run and kimg, conversion source, ...)
        G.provenance = f'{path}: {stored}'
    return G


def _stored_provenance(path: str | os.PathLike) -> str:
    from safetensors import safe_open
    with safe_open(str(path), framework='pt') as f:
        return (f.metadata() or {}).get('provenance', '')


SNAPSHOT_PREFIX = 'network-snapshot-'
SNAPSHOT_SUFFIX = '.safetensors'


def numbered_files(run_dir: str | os.PathLike, prefix: str = SNAPSHOT_PREFIX,
                   suffix: str = SNAPSHOT_SUFFIX) -> list[tuple[float, Path]]:
    """[(kimg, path)] of the files ``<prefix><kimg><suffix>`` in a training run folder, oldest first.

    kimg is the exact kimg with three decimals ('000000.224', '000200.000': train.py's rule), or,
    in runs written before that rule, whole digits ('000200', the kimg rounded down) with decimals
    only for a second snapshot within one kimg ('000000.064'); the list is ordered by that number.
    Only complete names count: the ``*.tmp`` files of a snapshot being written are ignored
    (snapshots are written to a temporary file and renamed). Raises UserError when ``run_dir``
    is not a folder.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f'{run_dir}: not a folder; give a training run folder (it holds {prefix}*{suffix} files)')
    found = []
    for entry in os.scandir(run_dir):
        name = entry.name
        digits = name[len(prefix):len(name) - len(suffix)]
        whole, _, frac = digits.partition('.')
        if (name.startswith(prefix) and name.endswith(suffix) and whole.isascii() and whole.isdigit()
                and (not frac or (frac.isascii() and frac.isdigit())) and entry.is_file()):
            found.append((float(digits), Path(entry.path)))
    return sorted(found)


def newest_snapshot(run_dir: str | os.PathLike, prefix: str = SNAPSHOT_PREFIX,
                    suffix: str = SNAPSHOT_SUFFIX) -> Path | None:
    """The file ``<prefix><kimg><suffix>`` with the highest kimg in a training run folder, or None
    (see :func:`numbered_files`)."""
    found = numbered_files(run_dir, prefix, suffix)
    return found[-1][1] if found else None


def load_generator(source: str | os.PathLike = 'demo', device: str | torch.device = 'cpu') -> Generator:
    """A generator in eval mode on ``device``.

    source: a .safetensors of ours, a released network pickle (.pkl: EG3D, PanoHead, SphereHead),
    'demo' (the shipped model, spherehead/assets/demo.safetensors), 'demo-triplane' (the tri-plane arm
    of the study, trained the same way: its artefacts beside SphereHead's) or 'random:<preset>'
    ('random:tiny', 'random:demo', 'random:paper'; optional '@seed').
    """
    source = str(source)
    if source.startswith('random:'):
        name, _, seed = source[len('random:'):].partition('@')
        if seed and not seed.isdigit():
            raise UserError(f"{source}: the part after '@' must be a whole-number seed, e.g. random:tiny@3")
        G = random_generator(name, int(seed) if seed else 0)
    elif source == 'demo':
        if DEMO_PATH.is_file():
            G = load_safetensors_generator(DEMO_PATH)
            G.provenance = _stored_provenance(DEMO_PATH) or 'demo (shipped model)'
        else:
            # A broken install (the asset left out of a package): say so, keep working on a random model.
            G = random_generator('tiny')
            G.provenance = f'demo model file missing ({DEMO_PATH}): random:tiny (untrained, random weights)'
            # Once per process (the default warning filter shows a warning once per code location).
            warnings.warn(f"the demo model file is missing ({DEMO_PATH}): 'demo' is an untrained random:tiny "
                          "generator; reinstall the package (pip install -e .)", UserWarning, stacklevel=1)
    elif source in SHIPPED_MODELS:
        path = shipped_model_path(source)
        if not path.is_file():
            raise UserError(f'{source}: the shipped model file {path} is missing from this install; '
                            'reinstall the package (pip install -e .)')
        G = load_safetensors_generator(path)
        G.provenance = _stored_provenance(path) or f'{source} (shipped model)'
    else:
        path = check_network_file(source)
        if path.suffix.lower() == '.pkl':
            from spherehead.released import load_released_generator
            G = load_released_generator(path)
        else:
            G = load_safetensors_generator(path)
    return G.eval().requires_grad_(False).to(device)

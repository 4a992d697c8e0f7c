"""Network files: our .safetensors format (config JSON in the metadata) and the sources
``load_generator`` accepts: a .safetensors of ours, a released .pkl, 'demo', 'random:<preset>'."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from spherehead.config import PRESETS, GeneratorConfig, preset
from spherehead.errors import UserError
from spherehead.networks.generator import Generator

FORMAT_NAME = 'spherehead-generator'
FORMAT_VERSION = '1'
DEMO_PATH = Path(__file__).parent / 'assets' / 'demo.safetensors'


def random_generator(preset_name: str = 'tiny', seed: int = 0) -> Generator:
    """A freshly initialised generator of a preset, identical for the same seed."""
    if preset_name not in PRESETS:
        raise UserError(f"random:{preset_name}: unknown preset; use one of {', '.join(sorted(PRESETS))}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = Generator(preset(preset_name))
    G.provenance = f'random:{preset_name} (untrained, random weights)'
    return G


def save_generator(G: Generator, path: str | os.PathLike) -> None:
    """Write G's parameters and buffers to a .safetensors file with its config as JSON metadata
    (written to a temporary file and renamed, so an interrupted save leaves no broken file)."""
    from safetensors.torch import save_file
    path = Path(path)
    state = {k: v.detach().to('cpu').contiguous().clone() for k, v in G.state_dict().items()}
    meta = {'format': FORMAT_NAME, 'version': FORMAT_VERSION, 'config': G.config.to_json(),
            'provenance': str(getattr(G, 'provenance', ''))}
    tmp = path.with_name(path.name + '.tmp')
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)


def read_safetensors_config(path: str | os.PathLike) -> GeneratorConfig:
    """The generator config stored in a .safetensors network file."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework='pt') as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise UserError(f'{path}: not a readable .safetensors file ({e}); re-export it with `spherehead convert`')
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
    return G


SNAPSHOT_PREFIX = 'network-snapshot-'
SNAPSHOT_SUFFIX = '.safetensors'


def newest_snapshot(run_dir: str | os.PathLike, prefix: str = SNAPSHOT_PREFIX,
                    suffix: str = SNAPSHOT_SUFFIX) -> Path | None:
    """The file ``<prefix><kimg digits><suffix>`` with the highest kimg in a training run folder, or None.

    Only complete names count: the ``*.tmp`` files of a snapshot being written are ignored
    (snapshots are written to a temporary file and renamed). Raises UserError when
    ``run_dir`` is not a folder.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f'{run_dir}: not a folder; give a training run folder (it holds {prefix}*{suffix} files)')
    best: tuple[int, Path] | None = None
    for entry in os.scandir(run_dir):
        name = entry.name
        digits = name[len(prefix):len(name) - len(suffix)]
        if not (name.startswith(prefix) and name.endswith(suffix) and digits.isascii() and digits.isdigit()
                and entry.is_file()):
            continue
        if best is None or int(digits) > best[0]:
            best = (int(digits), Path(entry.path))
    return best[1] if best else None


def load_generator(source: str | os.PathLike = 'demo', device: str | torch.device = 'cpu') -> Generator:
    """A generator in eval mode on ``device``.

    source: a .safetensors of ours, a released network pickle (.pkl: EG3D, PanoHead, SphereHead),
    'demo' (the shipped model; a random tiny model while none ships) or 'random:<preset>'
    ('random:tiny', 'random:demo', 'random:paper'; optional '@seed').
    """
    source = str(source)
    if source.startswith('random:'):
        name, _, seed = source[len('random:'):].partition('@')
        G = random_generator(name, int(seed) if seed else 0)
    elif source == 'demo':
        if DEMO_PATH.is_file():
            G = load_safetensors_generator(DEMO_PATH)
            G.provenance = 'demo (shipped model)'
        else:
            G = random_generator('tiny')
            G.provenance = 'demo model not shipped yet: random:tiny (untrained, random weights)'
    else:
        path = Path(source)
        if not path.exists():
            raise UserError(f"{source}: no such file; give a .safetensors or .pkl network, 'demo' or 'random:tiny'")
        if path.suffix == '.pkl':
            from spherehead.released import load_released_generator
            G = load_released_generator(path)
        elif path.suffix == '.safetensors':
            G = load_safetensors_generator(path)
        else:
            raise UserError(f'{source}: unknown network file type {path.suffix!r}; expected .safetensors or .pkl')
    return G.eval().requires_grad_(False).to(device)

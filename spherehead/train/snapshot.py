"""What a run writes: network snapshots, resume states and sample grids, all written atomically.

Run folder layout::

    training_options.json                    the resolved TrainingConfig
    network-snapshot-<kimg>.safetensors      the EMA generator (sh.load_generator, the visualizer)
    training-state-<kimg>.pt                 resume state: G, D, G_ema, optimisers, counters, RNG states
    fakes-<kimg>.png                         sample grid: per seed, front/side/back for A, B and fused
    log.txt, stats.jsonl, events.out.tfevents.*

<kimg> is the exact image count in kimg, six digits, a point and three decimals: 0.224 kimg
(224 images) is '000000.224', 200 kimg is '000200.000'. One rule for every snapshot: the names
sort by kimg as text, say the true kimg, and two snapshots share a name only at the same image
count. (Runs written before this rule used the whole kimg, '000200', with decimals only for a
second snapshot within the same kimg; ``numbered_files`` reads both.)

Every file is written to ``<name>.tmp`` and renamed, so a killed process leaves either the old
file or the new one, never half of one; the newest complete state is the one to resume from.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from spherehead.camera import lookat
from spherehead.checkpoint import SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX, atomic_file, newest_snapshot, numbered_files

STATE_PREFIX, STATE_SUFFIX = 'training-state-', '.pt'
GRID_YAWS = (0.0, 90.0, 180.0)


def snapshot_tag(nimg: int) -> str:
    """The kimg part of a snapshot's file names for ``nimg`` images: '000000.224' for 224 images,
    '000200.000' for 200,000 (exact: integer arithmetic)."""
    if nimg < 0:
        raise ValueError(f'image count must be >= 0, got {nimg}')
    return f'{nimg // 1000:06d}.{nimg % 1000:03d}'


def snapshot_name(tag: str) -> str:
    return f'{SNAPSHOT_PREFIX}{tag}{SNAPSHOT_SUFFIX}'


def state_name(tag: str) -> str:
    return f'{STATE_PREFIX}{tag}{STATE_SUFFIX}'


def newest_state(run_dir: str | os.PathLike) -> Path | None:
    """The training-state file of the highest kimg in a run folder (None if there is none)."""
    return newest_snapshot(run_dir, STATE_PREFIX, STATE_SUFFIX)


def prune_states(run_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` training-state files (network snapshots are all kept)."""
    for _, path in numbered_files(run_dir, STATE_PREFIX, STATE_SUFFIX)[:-keep] if keep > 0 else []:
        path.unlink(missing_ok=True)


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file, flushed to disk, then renamed over ``path``."""
    with atomic_file(path) as tmp, open(tmp, 'wb') as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def numpy_rng_to_tensors(state) -> dict:
    """np.random.RandomState.get_state() as tensors (so the state file loads with weights_only)."""
    name, keys, pos, has_gauss, cached = state
    assert name == 'MT19937'
    return {'keys': torch.from_numpy(keys.astype(np.int64)), 'pos': int(pos), 'has_gauss': int(has_gauss),
            'cached': float(cached)}


def numpy_rng_from_tensors(d: dict):
    return ('MT19937', d['keys'].numpy().astype(np.uint32), int(d['pos']), int(d['has_gauss']), float(d['cached']))


def load_state(path: str | os.PathLike) -> dict:
    """A training-state file, read without executing code (tensors, numbers, strings only)."""
    return torch.load(str(path), map_location='cpu', weights_only=True)


# ---------------------------------------------------------------------- sample grid
def grid_latents(G, seeds: int) -> torch.Tensor:
    """[seeds, z_dim] fixed latents of the sample grid (seed 0 .. seeds-1)."""
    return torch.from_numpy(np.stack([np.random.RandomState(s).randn(G.z_dim) for s in range(seeds)])).float()


@torch.no_grad()
def render_grid(G, z: torch.Tensor, spheres: tuple[str, ...], neural_rendering_resolution: int | None = None,
                device: torch.device | str = 'cpu') -> np.ndarray:
    """uint8 [rows * H, cols * W, 3]: row = seed; columns = for each sphere, yaws 0 / 90 / 180."""
    rows = []
    c_map = lookat(0, 0).to(device)
    for i in range(z.shape[0]):
        zi = z[i:i + 1].to(device)
        ws = G.mapping(zi, c_map)
        tiles = []
        for sphere in spheres:
            for yaw in GRID_YAWS:
                c = lookat(yaw, 0).to(device)
                img = G.synthesis(ws, c, sphere=sphere, noise_mode='const', deterministic=True,
                                  neural_rendering_resolution=neural_rendering_resolution)['image']
                tiles.append(img[0])
        rows.append(torch.cat(tiles, dim=2))
    grid = torch.cat(rows, dim=1)
    return (grid.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy())


def save_png(arr: np.ndarray, path: str | os.PathLike) -> None:
    """uint8 [H, W, 3] -> PNG, written atomically."""
    from PIL import Image
    with atomic_file(path) as tmp:
        Image.fromarray(arr).save(tmp, format='PNG')

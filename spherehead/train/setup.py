"""Everything decided before the first step: set-up checks (each a one-line UserError), the
networks to train (fresh, from a training state, from our .safetensors or a released .pkl)
and the run folder.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path

import torch

from spherehead.config import DiscriminatorConfig, GeneratorConfig
from spherehead.data.dataset import HeadDataset
from spherehead.data.errors import DatasetError
from spherehead.errors import UserError
from spherehead.networks.discriminator import DualDiscriminator
from spherehead.networks.generator import Generator
from spherehead.train.config import TrainingConfig
from spherehead.train.distributed import DistInfo
from spherehead.train.loop import STATE_FORMAT, Networks
from spherehead.train.snapshot import load_state, newest_state


def check_dataset(cfg: TrainingConfig) -> HeadDataset:
    """Open the dataset and check that it can train this config; UserError otherwise."""
    if not cfg.data.path:
        raise UserError('no dataset given; pass --data DATASET (a folder or .zip with dataset.json)')
    if not os.path.exists(cfg.data.path):
        raise UserError(f'--data {cfg.data.path}: no such file or folder; give a dataset folder or .zip '
                        '(make one with `spherehead dataset synth` or `spherehead dataset pack`)')
    try:
        ds = HeadDataset(cfg.data)
    except DatasetError as e:
        raise UserError(str(e)) from None
    g, d = cfg.generator, cfg.discriminator
    if ds.resolution != g.img_resolution:
        raise UserError(f'--data {cfg.data.path}: images are {ds.resolution}x{ds.resolution} but --cfg {cfg.cfg} '
                        f'generates {g.img_resolution}x{g.img_resolution}; repack the data with '
                        f'`spherehead dataset pack --resolution {g.img_resolution}` or pick a matching --cfg')
    if d.parsing_channels and not ds.has_parsing:
        raise UserError(f'--data {cfg.data.path}: no parsing maps, but the model has a parsing branch; '
                        'add parsing/ maps to the dataset or train without it (--no-parsing)')
    if d.mask_channels and not ds.has_masks:
        raise UserError(f'--data {cfg.data.path}: no foreground masks, but the discriminator sees the mask '
                        '(PanoHead / SphereHead); add masks/ to the dataset or pass --no-mask')
    front = abs(ds.item_yaw()) < cfg.phases.front_yaw_deg
    if cfg.phase1_end_kimg > 0 and not front.any():
        raise UserError(f'--data {cfg.data.path}: no near-front images (|yaw| < {cfg.phases.front_yaw_deg} deg) '
                        'for phase I; widen --front-yaw or set --phase1-kimg 0')
    return ds


def check_batch(cfg: TrainingConfig, info: DistInfo) -> None:
    """The batch splits over the ranks and each rank's share over the minibatch-std group
    (``cfg`` as it trains on ``info.world_size`` ranks: ``cfg.for_world``)."""
    if cfg.batch_gpu is not None:
        per_rank, option = cfg.batch_gpu, f'--batch-gpu {cfg.batch_gpu}'
    else:
        if cfg.batch <= 0 or cfg.batch % info.world_size:
            raise UserError(f'--batch {cfg.batch} does not split over {info.world_size} processes; '
                            f'use a multiple of {info.world_size}')
        per_rank, option = cfg.batch // info.world_size, f'--batch {cfg.batch}'
    group = min(cfg.discriminator.mbstd_group_size, per_rank)
    if per_rank % group:
        fix = (f'use a multiple of {group}' if cfg.batch_gpu is not None
               else f'use a batch of {info.world_size * group}k')
        raise UserError(f'{option}: {per_rank} images per process is not a multiple of the '
                        f'minibatch-std group {group}; {fix}')


def check_outdir(outdir: str) -> None:
    path = Path(outdir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / '.write-test'
        probe.write_bytes(b'')
        probe.unlink()
    except OSError as e:
        raise UserError(f'--outdir {outdir}: cannot write there ({e.strerror or e}); choose another folder') from None


# ---------------------------------------------------------------------- resume
def resolve_resume(source: str) -> tuple[str, Path]:
    """('state' | 'released' | 'network', path) for --resume DIR|FILE."""
    path = Path(source)
    if path.is_dir():
        state = newest_state(path)
        if state is None:
            raise UserError(f'--resume {source}: no training-state-*.pt in this folder; give a run folder '
                            'with a saved state, a training-state file, a .safetensors or a released .pkl')
        return 'state', state
    if not path.is_file():
        raise UserError(f'--resume {source}: no such file or folder')
    if path.suffix == '.pt':
        return 'state', path
    if path.suffix == '.pkl':
        return 'released', path
    if path.suffix == '.safetensors':
        return 'network', path
    raise UserError(f'--resume {source}: unknown file type {path.suffix!r}; expected a run folder, '
                    'training-state-*.pt, .safetensors or a released .pkl')


def read_training_state(path: Path, cfg: TrainingConfig) -> dict:
    """A training state whose networks match ``cfg`` (UserError naming the difference otherwise)."""
    try:
        state = load_state(path)
    except Exception as e:  # a truncated or foreign file: torch raises several error types
        raise UserError(f'--resume {path}: not a readable training state ({type(e).__name__}); '
                        'resume from an earlier training-state file of the run') from None
    if not isinstance(state, dict) or state.get('format') != STATE_FORMAT:
        raise UserError(f'--resume {path}: not a SphereHead training state')
    saved = TrainingConfig.from_json(state['config'])
    for what, a, b in (('generator', saved.generator, cfg.generator),
                       ('discriminator', saved.discriminator, cfg.discriminator)):
        if a != b:
            diff = sorted(k for k, v in a.to_dict().items() if b.to_dict().get(k) != v)
            raise UserError(f'--resume {path}: the state was trained with another {what} config '
                            f'(differs in {", ".join(diff)}); resume with the run\'s own options '
                            f'(--config {path.parent / "training_options.json"})')
    return state


def build_networks(cfg: TrainingConfig, seed: int) -> Networks:
    """Fresh G, D and G_ema (G_ema starts as a copy of G), identical for the same seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        G = Generator(cfg.generator)
        D = DualDiscriminator.from_config(cfg.discriminator)
    G_ema = copy.deepcopy(G).eval()
    return Networks(G, D, G_ema)


def networks_for(cfg: TrainingConfig) -> tuple[TrainingConfig, Networks, dict | None]:
    """(config, networks, training state or None) for this run, following --resume.

    A released .pkl or our .safetensors starts a fine-tune: its G (and D, from a released
    snapshot) replace the fresh ones, the generator config becomes the file's, and, as the
    family does on resume, the EMA ramp-up and the D-input blur are off.
    """
    if cfg.resume is None:
        return cfg, build_networks(cfg, cfg.seed), None
    kind, path = resolve_resume(cfg.resume)
    if kind == 'state':
        state = read_training_state(path, cfg)
        return cfg, build_networks(cfg, cfg.seed), state
    finetune = dataclasses.replace(cfg, ema_rampup=None, loss=dataclasses.replace(cfg.loss, blur_init_sigma=0.0))
    if kind == 'network':
        from spherehead.checkpoint import load_safetensors_generator
        G_ema = load_safetensors_generator(path)
        cfg2 = dataclasses.replace(finetune, generator=G_ema.config)
        nets = build_networks(cfg2, cfg.seed)
        nets.G.load_state_dict(G_ema.state_dict())
        nets.G_ema.load_state_dict(G_ema.state_dict())
        nets.origin = f'fine-tuned from {path} (D fresh)'
        return cfg2, nets, None
    from spherehead.released import load_released
    rel = load_released(path)
    d_cfg = rel.d_config if rel.D is not None else cfg.discriminator
    cfg2 = dataclasses.replace(finetune, generator=rel.g_config, discriminator=d_cfg)
    D = rel.D if rel.D is not None else DualDiscriminator.from_config(d_cfg)
    G = rel.G if rel.G is not None else copy.deepcopy(rel.G_ema)
    nets = Networks(G.train().requires_grad_(False), D, rel.G_ema.eval(),
                    origin=f'fine-tuned from released {path.name}' + ('' if rel.D is not None else ' (D fresh)'))
    return cfg2, nets, None


def run_description(cfg: TrainingConfig) -> str:
    data = Path(cfg.data.path).name.replace('.zip', '') or 'data'
    per_gpu = '' if cfg.batch_gpu is None else f'-pergpu{cfg.batch_gpu}'   # a fixed per-GPU batch shows
    return f'{cfg.cfg}-{cfg.generator.representation}-{data}-batch{cfg.batch}{per_gpu}'


def validate_config_dicts(g: GeneratorConfig, d: DiscriminatorConfig) -> None:
    """The discriminator must match the generator's output (resolution; parsing when G has it)."""
    if d.img_resolution != g.img_resolution:
        raise UserError(f'discriminator resolution {d.img_resolution} differs from the generator\'s '
                        f'{g.img_resolution}; fix the config file')
    if d.parsing_channels and not g.use_parsing:
        raise UserError('the discriminator expects parsing maps but the generator has no parsing branch; '
                        'set discriminator.parsing_channels to 0 or turn the parsing branch on')

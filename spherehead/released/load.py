"""Released snapshots onto our modules: ``load_released`` (G, G_ema, D, to train from),
``load_released_generator`` (one generator, to render) and ``released_state`` (raw tensors).
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from spherehead.config import DiscriminatorConfig, GeneratorConfig
from spherehead.errors import UserError
from spherehead.released.discriminator import ReleasedDiscriminator, describe_discriminator
from spherehead.released.generator import describe_generator
from spherehead.released.reader import NETWORK_KEYS, ModuleRecord, read_network_pickle, record_tensors, select_network

GENERATOR_KEYS = ('G_ema', 'G')


def _load_strict(module: torch.nn.Module, tensors: dict[str, torch.Tensor], what: str, path: Path) -> None:
    """Copy released tensors into `module` by name: all of ours present, none left over, same shapes."""
    ours = module.state_dict()
    missing = sorted(set(ours) - set(tensors))
    unexpected = sorted(set(tensors) - set(ours))
    if missing or unexpected:
        raise UserError(f'{path}: {what} does not map onto our modules: '
                        f'{len(missing)} missing {missing[:6]}, {len(unexpected)} unmapped {unexpected[:6]}')
    bad = [f'{k} {tuple(v.shape)} vs ours {tuple(ours[k].shape)}' for k, v in tensors.items()
           if tuple(v.shape) != tuple(ours[k].shape)]
    if bad:
        raise UserError(f'{path}: {what}: {len(bad)} tensors of another shape than the config gives: {bad[:4]}')
    module.load_state_dict({k: v.detach().to(ours[k].dtype) for k, v in tensors.items()}, strict=True)


def _build_discriminator(rel: ReleasedDiscriminator, path: Path):
    """Our DualDiscriminator with the weights of a described released D."""
    from spherehead.networks.discriminator import DualDiscriminator
    try:
        D = DualDiscriminator.from_config(rel.config)
    except (ValueError, TypeError, KeyError) as e:
        raise UserError(f'{path}: D {rel.class_name} with unsupported options ({e})')
    _load_strict(D, rel.tensors, f'D ({rel.class_name})', path)
    D.provenance = f'{path} (D {rel.class_name})'
    return D


def _build_generator(rec: ModuleRecord, path: Path, which: str):
    """Our Generator with the weights of a TriPlaneGenerator record, and what the record said."""
    from spherehead.networks.generator import Generator
    rel = describe_generator(rec, path)
    G = Generator(rel.config)
    _load_strict(G, rel.tensors, f'{rel.family} {which}', path)
    G.provenance = f'{path} ({rel.family} {which})'
    G.released_family = rel.family
    G.released_ignored = list(rel.ignored)   # training-only tensors skipped, for `convert --verbose`
    return G, rel


def load_released_generator(path: str | os.PathLike, which: str = 'G_ema'):
    """Our Generator (eval mode, CPU) with the weights of a released pickle's G_ema (or G)."""
    path = Path(path)
    if which not in GENERATOR_KEYS:
        raise UserError(f"which={which!r}: a generator is 'G_ema' or 'G' (D is a discriminator)")
    data = read_network_pickle(path)
    G, _ = _build_generator(select_network(data, which, path), path, which)
    return G.eval().requires_grad_(False)


@dataclass
class ReleasedNetworks:
    """The networks of a released snapshot on our modules, ready to train from.

    G: our Generator in training state (train mode, requires_grad True); G_ema: eval mode,
    requires_grad False; D: our DualDiscriminator in training state, or None when the pickle
    has no D. ignored: the training-only tensors skipped, as '<network>.<name>'.
    """
    G: Any
    G_ema: Any
    D: Any
    g_config: GeneratorConfig
    d_config: DiscriminatorConfig | None
    ignored: list[str] = field(default_factory=list)
    family: str = ''
    augment_p: float | None = None          # ADA strength p of the snapshot's augment_pipe (None: no pipe)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: what was loaded and what was skipped."""
        d = f'D ({self.d_config.mask_channels} mask, {self.d_config.parsing_channels} parsing channels)' \
            if self.D is not None else 'no D'
        ig = ', '.join(self.ignored) if self.ignored else 'nothing'
        extra = f'; {"; ".join(self.notes)}' if self.notes else ''
        return f'{self.family} G, G_ema, {d}; ignored {ig}{extra}'


def load_released(path: str | os.PathLike, device: str | torch.device = 'cpu') -> ReleasedNetworks:
    """G, G_ema and D of a released snapshot pickle (EG3D, PanoHead, SphereHead) on our modules.

    Nothing in the pickle executes. A generator missing from the pickle is copied from the other
    one (said in `notes`); a D that cannot be mapped raises UserError (one line). The augment
    pipe, training_set_kwargs and progress entries are read as inert data and not used beyond
    `augment_p`.
    """
    path = Path(path)
    data = read_network_pickle(path)
    recs = {k: data.get(k) for k in NETWORK_KEYS if isinstance(data.get(k), ModuleRecord)}
    if not any(k in recs for k in GENERATOR_KEYS):
        raise UserError(f'{path}: has no generator (G_ema / G); only {", ".join(recs) or "nothing"} to load')
    d_rel = describe_discriminator(recs['D'], path) if 'D' in recs else None   # refuse early, before building
    nets, rels, notes = {}, {}, []
    for which in GENERATOR_KEYS:
        if which in recs:
            nets[which], rels[which] = _build_generator(recs[which], path, which)
    if len(nets) == 2 and rels['G'].config != rels['G_ema'].config:
        raise UserError(f'{path}: G and G_ema have different architectures; load one with load_released_generator')
    for which, other in (('G', 'G_ema'), ('G_ema', 'G')):
        if which not in nets:
            nets[which] = copy.deepcopy(nets[other])
            nets[which].provenance = f'{path} ({rels[other].family} {other}, copied: the pickle has no {which})'
            rels[which] = rels[other]
            notes.append(f'{which} copied from {other} (the pickle has no {which})')
    ignored = [f'{which}.{n}' for which in GENERATOR_KEYS if which in recs for n in rels[which].ignored]
    D = _build_discriminator(d_rel, path) if d_rel is not None else None

    augment_p = None
    pipe = data.get('augment_pipe')
    if isinstance(pipe, ModuleRecord):
        pipe_tensors = record_tensors(pipe)
        ignored += [f'augment_pipe.{n}' for n in pipe_tensors]
        p = pipe_tensors.get('p')
        if p is not None and p.numel() == 1:
            augment_p = float(p)

    device = torch.device(device)
    G = nets['G'].to(device).train().requires_grad_(True)
    G_ema = nets['G_ema'].to(device).eval().requires_grad_(False)
    if D is not None:
        D = D.to(device).train().requires_grad_(True)
    return ReleasedNetworks(G=G, G_ema=G_ema, D=D, g_config=rels['G_ema'].config,
                            d_config=D.config if D is not None else None, ignored=ignored,
                            family=rels['G_ema'].family, augment_p=augment_p, notes=notes)


def released_state(path: str | os.PathLike, which: str = 'G_ema') -> dict[str, torch.Tensor]:
    """Flat {released name: tensor} of one network of a released pickle (G_ema, G or D), read safely."""
    path = Path(path)
    return record_tensors(select_network(read_network_pickle(path), which, path))

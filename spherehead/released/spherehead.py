"""SphereHead: dual-sphere generator (``ConvA`` / ``ConvB`` heads, one per sphere), ``HoloDiscriminator``."""
from __future__ import annotations

import re
from pathlib import Path

from spherehead.errors import UserError
from spherehead.released.family import D_FIRST_ARGS, RELEASED_BOX_CROP, ReleasedFamily, configured_activation


def rename(name: str) -> str:
    """Released ``ConvA.*`` / ``ConvB.*`` (the per-sphere plane heads) -> our ``heads.A.*`` / ``heads.B.*``."""
    return re.sub(r'^ConvA\.', 'heads.A.', re.sub(r'^ConvB\.', 'heads.B.', name))


def generator_options(tensors: dict, shape, depth: int, path: Path) -> dict:
    """The plane heads' sizes (from ConvA's first layer) and the planes per sphere."""
    a0 = shape('heads.A.0.weight')
    options = dict(backbone_channels=a0[1], head_hidden_channels=a0[0], planes_per_sphere=depth)
    if 'heads.B.0.weight' not in tensors:
        raise UserError(f'{path}: a SphereHead generator with ConvA but no ConvB is not supported')
    return options


FAMILY = ReleasedFamily(
    name='spherehead', title='SphereHead', representation='dual_sphere',
    box_crop=RELEASED_BOX_CROP,
    recognises=lambda rec, rk: 'ConvA' in rec.modules or 'ConvB' in rec.modules,
    decoder_activation=configured_activation,
    generator_options=generator_options, rename=rename,
    # Stacks the mask (seg_channels), then the parsing map (parsing_channels). seg_resolution and
    # parsing_resolution are constructor arguments its forward pass never reads.
    discriminator='HoloDiscriminator', discriminator_inputs=('seg', 'parsing'),
    discriminator_args=D_FIRST_ARGS + ('seg_resolution', 'seg_channels', 'parsing_resolution', 'parsing_channels'),
)

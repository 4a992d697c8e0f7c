"""A released discriminator record as our ``DualDiscriminator``'s config and tensors (released names = ours).

Each family's D class (eg3d.py: ``DualDiscriminator``, panohead.py: ``MaskDualDiscriminatorV2``,
spherehead.py: ``HoloDiscriminator``) is the EG3D dual discriminator with the family's extra
inputs stacked after the image and the upsampled raw image (all resized to the image size, 2x-1);
our ``DualDiscriminator`` reproduces all three.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spherehead.config import DiscriminatorConfig
from spherehead.errors import UserError
from spherehead.released import eg3d, panohead, spherehead
from spherehead.released.reader import ModuleRecord, record_tensors

_FAMILIES = (eg3d.FAMILY, panohead.FAMILY, spherehead.FAMILY)
# Released D class -> the inputs it stacks after the image and the upsampled raw image.
D_CLASSES = {f.discriminator: f.discriminator_inputs for f in _FAMILIES}
_D_COMMON = ('architecture', 'channel_base', 'channel_max', 'num_fp16_res', 'conv_clamp', 'cmap_dim', 'disc_c_noise',
             'block_kwargs', 'mapping_kwargs', 'epilogue_kwargs')
_D_POSITIONAL = {f.discriminator: f.discriminator_args + _D_COMMON for f in _FAMILIES}
_REFUSED = {name: why for f in _FAMILIES for name, why in f.refused_discriminators.items()}
# Options of the released parts (networks_stylegan2 DiscriminatorBlock / MappingNetwork /
# DiscriminatorEpilogue). Free: any value maps (freeze_layers = Freeze-D, which layers train, a
# training choice that changes no weight or value; fp16_channels_last = memory format; the
# rest we carry). Fixed: must be the released default, since ours computes with it.
_D_PART_FREE = {'block_kwargs': ('freeze_layers', 'fp16_channels_last'), 'mapping_kwargs': ('num_layers',),
                'epilogue_kwargs': ('mbstd_group_size', 'mbstd_num_channels')}
_D_PART_FIXED = {'block_kwargs': {'activation': 'lrelu', 'resample_filter': [1, 3, 3, 1]},
                 'mapping_kwargs': {'embed_features': None, 'layer_features': None, 'activation': 'lrelu',
                                    'lr_multiplier': 0.01},
                 'epilogue_kwargs': {'activation': 'lrelu'}}


@dataclass
class ReleasedDiscriminator:
    """What a released discriminator record says: its class, our config and its tensors."""
    class_name: str
    config: DiscriminatorConfig
    tensors: dict[str, torch.Tensor] = field(repr=False)


def _d_part(kw: dict, part: str, path: Path) -> dict:
    opts = kw.get(part) or {}
    if not isinstance(opts, dict):
        raise UserError(f'{path}: D with {part} a {type(opts).__name__}, not a dict of options')
    opts = dict(opts)
    for key, value in opts.items():
        if key in _D_PART_FREE[part]:
            continue
        fixed = _D_PART_FIXED[part]
        if key not in fixed:
            raise UserError(f'{path}: D with unsupported option {part}.{key}={value!r}')
        same = list(value) == fixed[key] if isinstance(value, (list, tuple)) else value == fixed[key]
        if not same:
            raise UserError(f'{path}: D with {part}.{key}={value!r}; only the released default {fixed[key]!r} '
                            'is supported')
    return opts


def describe_discriminator(rec: ModuleRecord, path: Path) -> ReleasedDiscriminator:
    """Our DiscriminatorConfig + tensors (released names = ours) of a released D record. Raises UserError."""
    name = rec.class_name
    if name not in D_CLASSES:
        why = f' ({_REFUSED[name]})' if name in _REFUSED else ''
        supported = ', '.join(f'{f.discriminator} ({f.title})' for f in _FAMILIES)
        raise UserError(f'{path}: cannot map D {rec.qualname}{why}; supported: {supported}')
    kw = dict(zip(_D_POSITIONAL[name], rec.init_args))
    kw.update(rec.init_kwargs)
    unknown = sorted(set(kw) - set(_D_POSITIONAL[name]))
    if unknown:
        raise UserError(f'{path}: D {name} with unsupported constructor arguments {unknown}')
    mapping_kwargs = _d_part(kw, 'mapping_kwargs', path)
    epilogue_kwargs = _d_part(kw, 'epilogue_kwargs', path)
    _d_part(kw, 'block_kwargs', path)
    tensors = record_tensors(rec)
    fcs = {n for n in tensors if re.fullmatch(r'mapping\.fc\d+\.weight', n)}
    extra = D_CLASSES[name]
    try:
        cfg = DiscriminatorConfig(
            c_dim=int(kw['c_dim']), img_resolution=int(kw['img_resolution']), img_channels=int(kw['img_channels']),
            mask_channels=int(kw['seg_channels']) if 'seg' in extra else 0,
            parsing_channels=int(kw['parsing_channels']) if 'parsing' in extra else 0,
            architecture=str(kw.get('architecture', 'resnet')),
            channel_base=int(kw.get('channel_base', 32768)), channel_max=int(kw.get('channel_max', 512)),
            num_fp16_res=int(kw.get('num_fp16_res', 4)), conv_clamp=kw.get('conv_clamp', 256),
            cmap_dim=kw.get('cmap_dim'), disc_c_noise=float(kw.get('disc_c_noise', 0) or 0),
            mapping_layers=len(fcs) if fcs else int(mapping_kwargs.get('num_layers', 8)),
            mbstd_group_size=epilogue_kwargs.get('mbstd_group_size', 4),
            mbstd_num_channels=int(epilogue_kwargs.get('mbstd_num_channels', 1)))
    except KeyError as e:
        raise UserError(f'{path}: D {name} without constructor argument {e.args[0]}')
    except (ValueError, TypeError) as e:
        raise UserError(f'{path}: D {name} with unsupported options ({e})')
    return ReleasedDiscriminator(name, cfg, tensors)

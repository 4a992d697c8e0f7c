"""A released generator record (``TriPlaneGenerator`` of EG3D, PanoHead or SphereHead) as our config and tensors.

The records are mapped onto our ``Generator``: a config from the constructor arguments,
rendering options and tensor shapes, and every parameter and buffer by name (EG3D names, with
the family's renames, e.g. SphereHead's ``ConvA``/``ConvB`` -> ``heads.A``/``heads.B``),
checking that nothing is missing or left over. What differs per family is in eg3d.py,
panohead.py and spherehead.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spherehead.config import GeneratorConfig, RenderingConfig
from spherehead.errors import UserError
from spherehead.released import eg3d, panohead, spherehead
from spherehead.released.family import ReleasedFamily
from spherehead.released.reader import ModuleRecord, record_tensors

# Tensors the official training loops add to a network and no forward pass reads; skipped (and
# listed) instead of refused as unmapped.
TRAINING_ONLY_TENSORS = {
    # EG3D and PanoHead training/training_loop.py: right after building G,
    # `G.register_buffer('dataset_label_std', torch.tensor(training_set.get_label_std()))`, and only
    # then `G_ema = copy.deepcopy(G)`, so both generators of every snapshot carry it. It is the
    # per-entry std of the dataset's camera labels [c_dim]; the generators never read it.
    'dataset_label_std': 'std of the training labels, registered on G by the training loop',
}
SR_CLASSES = {'SuperresolutionHybrid2X': 'hybrid2x', 'SuperresolutionHybrid4X': 'hybrid4x',
              'SuperresolutionHybrid8X': 'hybrid8x', 'SuperresolutionHybrid8XDC': 'hybrid8xdc'}
# The families, in the order messages name them; a record is of the first one (most specific
# first: SphereHead's heads, PanoHead's depth, else EG3D) that recognises it.
RELEASED_FAMILIES = (eg3d.FAMILY, panohead.FAMILY, spherehead.FAMILY)
FAMILIES = tuple(f.name for f in RELEASED_FAMILIES)
_RECOGNITION_ORDER = (spherehead.FAMILY, panohead.FAMILY, eg3d.FAMILY)
# Modules of the released renderers carry no weights (plane axes are plain attributes).
IGNORED_PREFIXES = ('renderer.', 'ray_sampler.')


@dataclass
class ReleasedGenerator:
    """What a released generator record says: its family, our config and its tensors (our names)."""
    family: str
    config: GeneratorConfig
    tensors: dict[str, torch.Tensor] = field(repr=False)
    ignored: list[str] = field(default_factory=list)


_POSITIONAL = ('z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels', 'sr_num_fp16_res', 'mapping_kwargs',
               'rendering_kwargs', 'sr_kwargs')


def family_of(rec: ModuleRecord, rendering_kwargs: dict) -> ReleasedFamily:
    """The family whose generator ``rec`` (with these rendering_kwargs) is."""
    return next(f for f in _RECOGNITION_ORDER if f.recognises(rec, rendering_kwargs))


def _num(value: Any, what: str, path: Path, kind=float):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise UserError(f'{path}: unsupported rendering option {what}={value!r} (a number is needed)')
    return kind(value)


def describe_generator(rec: ModuleRecord, path: Path) -> ReleasedGenerator:
    """Config + renamed tensors of a released TriPlaneGenerator record (EG3D, PanoHead or SphereHead)."""
    if rec.class_name != 'TriPlaneGenerator':
        raise UserError(f'{path}: unsupported architecture {rec.qualname}; '
                        'supported: TriPlaneGenerator of EG3D, PanoHead and SphereHead')
    kw = dict(zip(_POSITIONAL, rec.init_args))
    kw.update(rec.init_kwargs)
    rk = dict(kw.get('rendering_kwargs') or {})
    family = family_of(rec, rk)
    fam = family.name
    mods = rec.modules

    sr_rec = mods.get('superresolution')
    sr_name = str(rk.get('superresolution_module', '')).rsplit('.', 1)[-1]
    if isinstance(sr_rec, ModuleRecord):
        sr_name = sr_rec.class_name
    if sr_name not in SR_CLASSES:
        raise UserError(f'{path}: unsupported super-resolution module {sr_name or "(none)"}; '
                        f"supported: {', '.join(SR_CLASSES)}")

    raw = record_tensors(rec)
    tensors, ignored = {}, []
    for name, t in raw.items():
        if name.startswith(IGNORED_PREFIXES) or name in TRAINING_ONLY_TENSORS:
            ignored.append(name)
            continue
        tensors[family.rename(name)] = t

    def shape(name: str) -> tuple[int, ...]:
        if name not in tensors:
            raise UserError(f'{path}: {fam} generator without tensor {name}; the file is not a complete network')
        return tuple(tensors[name].shape)

    res = [int(m.group(1)) for n in tensors if (m := re.match(r'backbone\.synthesis\.b(\d+)\.', n))]
    if not res:
        raise UserError(f'{path}: generator without a StyleGAN2 backbone (backbone.synthesis.b*)')
    mapping_layers = len({n for n in tensors if re.fullmatch(r'backbone\.mapping\.fc\d+\.weight', n)})
    feature_channels = shape('decoder.net.0.weight')[1]
    ray_start, ray_end = rk.get('ray_start'), rk.get('ray_end')
    if ray_start == 'auto' or ray_end == 'auto':
        raise UserError(f"{path}: ray_start/ray_end 'auto' (camera-dependent bounds) is not supported")
    clamp_mode = rk.get('clamp_mode', 'softplus')
    if clamp_mode != 'softplus':
        raise UserError(f'{path}: unsupported clamp_mode {clamp_mode!r} (the released marchers use softplus)')
    activation = family.decoder_activation(rk)
    rendering = RenderingConfig(
        box_warp=_num(rk.get('box_warp'), 'box_warp', path),
        ray_start=_num(ray_start, 'ray_start', path), ray_end=_num(ray_end, 'ray_end', path),
        depth_resolution=_num(rk.get('depth_resolution'), 'depth_resolution', path, int),
        depth_resolution_importance=_num(rk.get('depth_resolution_importance', 0), 'depth_resolution_importance',
                                         path, int),
        neural_rendering_resolution=_num(rec.state.get('neural_rendering_resolution', 64),
                                         'neural_rendering_resolution', path, int),
        box_crop=family.box_crop,
        disparity_space_sampling=bool(rk.get('disparity_space_sampling', False)),
        clamp_mode='softplus', decoder_activation=activation,
        decoder_lr_mul=_num(rk.get('decoder_lr_mul', 1), 'decoder_lr_mul', path),
        white_back=bool(rk.get('white_back', False)),
        density_noise=_num(rk.get('density_noise', 0), 'density_noise', path),
        sr_antialias=bool(rk.get('sr_antialias', True)),
        sr_noise_mode=str(rk.get('superresolution_noise_mode', 'none')),
        c_gen_conditioning_zero=bool(rk.get('c_gen_conditioning_zero', False)),
        # The released generators read c_scale with a default of 0 (camera ignored when absent).
        c_scale=_num(rk.get('c_scale', 0), 'c_scale', path),
    )
    conv_clamp = kw.get('conv_clamp')
    sr_fp16 = int(kw.get('sr_num_fp16_res', 0) or 0)
    if conv_clamp is not None and sr_fp16 == 0:
        raise UserError(f'{path}: conv_clamp={conv_clamp} with sr_num_fp16_res=0 (unclamped super-resolution '
                        'beside a clamped backbone) is not supported')
    depth = int(rk.get('triplane_depth', 1))
    options = {'trigrid_depth': 3, **family.generator_options(tensors, shape, depth, path)}
    try:
        cfg = GeneratorConfig(
            representation=family.representation,
            z_dim=int(kw['z_dim']), w_dim=int(kw['w_dim']), c_dim=int(kw['c_dim']),
            img_resolution=int(kw['img_resolution']), triplane_size=max(res),
            feature_channels=feature_channels,
            channel_base=int(kw.get('channel_base', 32768)), channel_max=int(kw.get('channel_max', 512)),
            mapping_layers=mapping_layers, conv_clamp=conv_clamp, num_fp16_res=int(kw.get('num_fp16_res', 0) or 0),
            sr_num_fp16_res=sr_fp16, superresolution=SR_CLASSES[sr_name],
            sr_channels=(shape('superresolution.block0.conv1.weight')[0],
                         shape('superresolution.block1.conv1.weight')[0]),
            use_parsing=isinstance(mods.get('toparsing'), ModuleRecord),
            use_background=isinstance(mods.get('bcg_synthesis'), ModuleRecord),
            use_torgb_raw=isinstance(mods.get('torgb'), ModuleRecord),
            use_camera_offset=isinstance(mods.get('t_mapping'), ModuleRecord),
            rendering=rendering, **options)
    except KeyError as e:
        raise UserError(f'{path}: generator without constructor argument {e.args[0]}')
    except (ValueError, TypeError) as e:
        raise UserError(f'{path}: unsupported generator options ({e})')
    return ReleasedGenerator(fam, cfg, tensors, ignored)

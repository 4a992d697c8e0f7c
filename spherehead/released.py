"""Released network pickles (EG3D, PanoHead, SphereHead) read without executing their code.

A released ``network-snapshot-*.pkl`` is a plain pickle of ``dict(G=..., D=..., G_ema=..., ...)``
written by ``torch_utils.persistence``: every persistent module is stored as a call
``_reconstruct_persistent_obj(meta)`` with ``meta = {type: 'class', version, module_src,
class_name, state}``, where ``state`` is the module's ``__dict__`` (``_init_args``,
``_init_kwargs``, ``_parameters``, ``_buffers``, ``_modules``, plain attributes). Other
modules (``torch.nn.Sequential``, EG3D's ``OSGDecoder``, ...) are stored by class name.

``RestrictedUnpickler`` resolves only:
- torch's tensor / parameter / storage rebuild functions (storages are read back with
  ``torch.load(weights_only=True)``), ``collections.OrderedDict``, numpy arrays and dtypes,
  torch dtypes, ``torch.Size``;
- ``dnnlib.util.EasyDict`` -> a plain dict;
- ``torch_utils.persistence._reconstruct_persistent_obj`` -> a ``ModuleRecord`` (class name,
  constructor arguments, state); ``module_src`` is kept as text and never executed;
- module classes named by reference from ``torch.nn.modules.*`` and the released code's own
  packages (``training.*``, ``torch_utils.*``, ``dnnlib.*``) -> inert ``ModuleRecord`` stubs:
  nothing is imported and no code of theirs runs.
Any other global (``os.system``, ``builtins.eval``, ...) is refused with its name.

The records are then mapped onto our ``Generator``: a config from the constructor arguments,
rendering options and tensor shapes, and every parameter and buffer by name (EG3D names,
SphereHead's ``ConvA``/``ConvB`` -> ``heads.A``/``heads.B``), checking that nothing is
missing or left over. ``load_released`` also maps the discriminator record (EG3D's
``DualDiscriminator``, PanoHead's ``MaskDualDiscriminatorV2``, SphereHead's
``HoloDiscriminator``) onto our ``DualDiscriminator``, for fine-tuning.

What a training snapshot holds (``training/training_loop.py`` of EG3D and PanoHead; the
released checkpoints are such snapshots): ``dict(training_set_kwargs=<plain dict>, G=..., D=...,
G_ema=..., augment_pipe=<AugmentPipe or None>)``, each module ``deepcopy``'d, put in eval mode and
moved to the CPU. Other training loops of the family add progress entries (counters as tensors
or numbers); those load as plain data and are not used here.
"""
from __future__ import annotations

import collections
import copy
import io
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spherehead.config import DiscriminatorConfig, GeneratorConfig, RenderingConfig
from spherehead.errors import UserError

GENERATOR_KEYS = ('G_ema', 'G')
# Tensors the official training loops add to a network and no forward pass reads; skipped (and
# listed) instead of refused as unmapped.
TRAINING_ONLY_TENSORS = {
    # EG3D and PanoHead training/training_loop.py: right after building G,
    # `G.register_buffer('dataset_label_std', torch.tensor(training_set.get_label_std()))`, and only
    # then `G_ema = copy.deepcopy(G)`, so both generators of every snapshot carry it. It is the
    # per-entry std of the dataset's camera labels [c_dim]; the generators never read it.
    'dataset_label_std': 'std of the training labels, registered on G by the training loop',
}
NETWORK_KEYS = ('G_ema', 'G', 'D')
SR_CLASSES = {'SuperresolutionHybrid2X': 'hybrid2x', 'SuperresolutionHybrid4X': 'hybrid4x',
              'SuperresolutionHybrid8X': 'hybrid8x', 'SuperresolutionHybrid8XDC': 'hybrid8xdc'}
FAMILIES = ('eg3d', 'panohead', 'spherehead')
# Modules of the released renderers carry no weights (plane axes are plain attributes).
IGNORED_PREFIXES = ('renderer.', 'ray_sampler.')
# Released box crop margin of the PanoHead / SphereHead renderers (EG3D has none).
RELEASED_BOX_CROP = 0.1
STUB_MODULE_PREFIXES = ('torch.nn.modules.', 'training.', 'torch_utils.', 'dnnlib.')


class RefusedPickle(pickle.UnpicklingError):
    """The pickle names something the restricted unpickler does not allow."""


# ---------------------------------------------------------------------------- records

class ModuleRecord:
    """An inert stand-in for a pickled module: class name, constructor arguments, state.

    ``state`` is the pickled ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``, ...).
    """
    qualname = '?'

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Called only when a pickle REDUCEs a stub with arguments: keep them, run nothing.
        self.call_args = args
        self.state: dict = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:   # (dict state, slot state)
            state = state[0] or {}
        self.state = dict(state) if isinstance(state, dict) else {}

    @property
    def class_name(self) -> str:
        return self.qualname.rsplit('.', 1)[-1]

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get('_init_kwargs') or {})

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get('_init_args') or ())

    @property
    def modules(self) -> dict:
        return dict(self.state.get('_modules') or {})

    def __repr__(self) -> str:
        return f'<{type(self).__name__} {self.qualname}>'


class PersistentRecord(ModuleRecord):
    """A module saved by ``torch_utils.persistence`` (its source text kept, never executed)."""

    def __init__(self, meta: dict) -> None:
        super().__init__()
        self.qualname = str(meta['class_name'])
        self.version = meta.get('version')
        self.module_src = meta.get('module_src') if isinstance(meta.get('module_src'), str) else ''
        self.__setstate__(meta.get('state') or {})


_STUB_CLASSES: dict[str, type] = {}


def _stub_class(module: str, name: str) -> type:
    qualname = f'{module}.{name}'
    cls = _STUB_CLASSES.get(qualname)
    if cls is None:
        cls = type(name, (ModuleRecord,), {'qualname': qualname, '__module__': __name__})
        _STUB_CLASSES[qualname] = cls
    return cls


class _EasyDict(dict):
    """Stand-in for dnnlib.util.EasyDict: a plain dict (attribute state, if any, becomes items)."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.update(state)


# ---------------------------------------------------------------------------- safe callables

def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get('type') != 'class' or not isinstance(meta.get('class_name'), str) \
            or not isinstance(meta.get('state'), dict):
        raise RefusedPickle('a persistent object with malformed metadata')
    return PersistentRecord(meta)


def _load_storage_bytes(b: bytes):
    if not isinstance(b, (bytes, bytearray)):
        raise RefusedPickle('a tensor storage that is not bytes')
    return torch.load(io.BytesIO(bytes(b)), weights_only=True, map_location='cpu')


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, (torch.storage.TypedStorage, torch.storage.UntypedStorage)):
        raise RefusedPickle(f'a tensor built from {type(storage).__name__}, not a storage')
    t = torch._utils._rebuild_tensor(storage, int(storage_offset), tuple(size), tuple(stride))
    t.requires_grad = bool(requires_grad) and t.is_floating_point()
    return t


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *state):
    if not isinstance(data, torch.Tensor):
        raise RefusedPickle('a parameter that is not a tensor')
    return data.detach()


def _torch_device(*args):
    return torch.device(*(str(a) if not isinstance(a, int) else a for a in args))


_ALLOWED: dict[tuple[str, str], Any] = {
    ('torch_utils.persistence', '_reconstruct_persistent_obj'): _reconstruct_persistent_obj,
    ('dnnlib.util', 'EasyDict'): _EasyDict,
    ('dnnlib', 'EasyDict'): _EasyDict,
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter,
    ('torch.storage', '_load_from_bytes'): _load_storage_bytes,
    ('torch', 'Size'): torch.Size,
    ('torch', 'device'): _torch_device,
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
}
try:
    from numpy._core import multiarray as _np_multiarray
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _np_multiarray
for _m in ('numpy.core.multiarray', 'numpy._core.multiarray'):
    _ALLOWED[(_m, '_reconstruct')] = _np_multiarray._reconstruct
    _ALLOWED[(_m, 'scalar')] = _np_multiarray.scalar


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles released network pickles into records; refuses every other global by name."""

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in _ALLOWED:
            return _ALLOWED[key]
        if module == 'torch' and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith(STUB_MODULE_PREFIXES) and re.fullmatch(r'[A-Z][A-Za-z0-9_]*', name):
            return _stub_class(module, name)
        raise RefusedPickle(f'refused {module}.{name} (not a tensor, dict or network module)')

    def persistent_load(self, pid: Any) -> Any:
        raise RefusedPickle('refused a persistent id (torch.save zip archives are not network pickles)')


# ---------------------------------------------------------------------------- reading

def read_network_pickle(path: str | os.PathLike) -> dict:
    """The top-level dict of a released network pickle, modules as records. Raises UserError."""
    path = Path(path)
    try:
        with open(path, 'rb') as f:
            data = RestrictedUnpickler(f).load()
    except RefusedPickle as e:
        raise UserError(f'{path}: unsafe or unsupported pickle: {e}; nothing was executed')
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, RuntimeError, MemoryError) as e:
        raise UserError(f'{path}: not a readable network pickle (truncated or corrupt: '
                        f'{type(e).__name__}: {str(e)[:120]})')
    except OSError as e:
        raise UserError(f'{path}: cannot read ({e.strerror or e})')
    if not isinstance(data, dict) or not any(isinstance(data.get(k), ModuleRecord) for k in NETWORK_KEYS):
        kind = type(data).__name__
        raise UserError(f'{path}: not a network pickle (a {kind} without G_ema / G / D networks); '
                        'expected a released EG3D, PanoHead or SphereHead network-snapshot .pkl')
    return data


def record_tensors(record: ModuleRecord, prefix: str = '') -> dict[str, torch.Tensor]:
    """Flat {name: tensor} of a module record's parameters and persistent buffers, like state_dict()."""
    out: dict[str, torch.Tensor] = {}
    state = record.state
    skip = set(state.get('_non_persistent_buffers_set') or ())
    for group in ('_parameters', '_buffers'):
        for name, t in (state.get(group) or {}).items():
            if t is None or (group == '_buffers' and name in skip):
                continue
            if not isinstance(t, torch.Tensor):
                raise UserError(f'{prefix}{name}: a {type(t).__name__} where a tensor was expected')
            out[prefix + name] = t
    for name, m in (state.get('_modules') or {}).items():
        if isinstance(m, ModuleRecord):
            out.update(record_tensors(m, f'{prefix}{name}.'))
    return out


def select_network(data: dict, which: str, path: Path) -> ModuleRecord:
    if which not in NETWORK_KEYS:
        raise UserError(f"which={which!r}: choose one of {', '.join(NETWORK_KEYS)}")
    rec = data.get(which)
    if not isinstance(rec, ModuleRecord):
        have = ', '.join(k for k in NETWORK_KEYS if isinstance(data.get(k), ModuleRecord))
        raise UserError(f'{path}: has no {which} network (has: {have or "none"})')
    return rec


# ---------------------------------------------------------------------------- config

@dataclass
class ReleasedGenerator:
    """What a released generator record says: its family, our config and its tensors (our names)."""
    family: str
    config: GeneratorConfig
    tensors: dict[str, torch.Tensor] = field(repr=False)
    ignored: list[str] = field(default_factory=list)


_POSITIONAL = ('z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels', 'sr_num_fp16_res', 'mapping_kwargs',
               'rendering_kwargs', 'sr_kwargs')


def _family(rec: ModuleRecord, rk: dict) -> str:
    mods = rec.modules
    if 'ConvA' in mods or 'ConvB' in mods:
        return 'spherehead'
    if 'triplane_depth' in rk:
        return 'panohead'
    return 'eg3d'


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
    fam = _family(rec, rk)
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
        name = re.sub(r'^ConvA\.', 'heads.A.', re.sub(r'^ConvB\.', 'heads.B.', name))
        tensors[name] = t

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
    if fam == 'eg3d':
        activation = 'sigmoid'
    else:
        # PanoHead / SphereHead decoders: 'sigmoid', 'lrelu', anything else (e.g. 'none') = linear.
        activation = rk.get('decoder_activation', 'sigmoid')
        activation = activation if activation in ('sigmoid', 'lrelu') else 'linear'
    rendering = RenderingConfig(
        box_warp=_num(rk.get('box_warp'), 'box_warp', path),
        ray_start=_num(ray_start, 'ray_start', path), ray_end=_num(ray_end, 'ray_end', path),
        depth_resolution=_num(rk.get('depth_resolution'), 'depth_resolution', path, int),
        depth_resolution_importance=_num(rk.get('depth_resolution_importance', 0), 'depth_resolution_importance',
                                         path, int),
        neural_rendering_resolution=_num(rec.state.get('neural_rendering_resolution', 64),
                                         'neural_rendering_resolution', path, int),
        box_crop=0.0 if fam == 'eg3d' else RELEASED_BOX_CROP,
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
    representation = {'eg3d': 'triplane', 'panohead': 'trigrid', 'spherehead': 'dual_sphere'}[fam]
    heads = {}
    if fam == 'spherehead':
        a0 = shape('heads.A.0.weight')
        heads = dict(backbone_channels=a0[1], head_hidden_channels=a0[0], planes_per_sphere=depth)
        if 'heads.B.0.weight' not in tensors:
            raise UserError(f'{path}: a SphereHead generator with ConvA but no ConvB is not supported')
    try:
        cfg = GeneratorConfig(
            representation=representation,
            z_dim=int(kw['z_dim']), w_dim=int(kw['w_dim']), c_dim=int(kw['c_dim']),
            img_resolution=int(kw['img_resolution']), triplane_size=max(res),
            trigrid_depth=depth if fam == 'panohead' else 3, feature_channels=feature_channels,
            channel_base=int(kw.get('channel_base', 32768)), channel_max=int(kw.get('channel_max', 512)),
            mapping_layers=mapping_layers, conv_clamp=conv_clamp, num_fp16_res=int(kw.get('num_fp16_res', 0) or 0),
            sr_num_fp16_res=sr_fp16, superresolution=SR_CLASSES[sr_name],
            sr_channels=(shape('superresolution.block0.conv1.weight')[0],
                         shape('superresolution.block1.conv1.weight')[0]),
            use_parsing=isinstance(mods.get('toparsing'), ModuleRecord),
            use_background=isinstance(mods.get('bcg_synthesis'), ModuleRecord),
            use_torgb_raw=isinstance(mods.get('torgb'), ModuleRecord),
            use_camera_offset=isinstance(mods.get('t_mapping'), ModuleRecord),
            rendering=rendering, **heads)
    except KeyError as e:
        raise UserError(f'{path}: generator without constructor argument {e.args[0]}')
    except (ValueError, TypeError) as e:
        raise UserError(f'{path}: unsupported generator options ({e})')
    return ReleasedGenerator(fam, cfg, tensors, ignored)


# ---------------------------------------------------------------------------- discriminator

# Released discriminator classes that our DualDiscriminator reproduces, and the inputs each
# stacks after the image and the upsampled raw image (all resized to the image size, 2x-1):
# - EG3D training/dual_discriminator.py DualDiscriminator: nothing more;
# - PanoHead MaskDualDiscriminatorV2 (its README recipe's --disc_module): the mask (seg_channels);
# - SphereHead HoloDiscriminator: the mask (seg_channels), then the parsing map (parsing_channels).
# seg_resolution / parsing_resolution are constructor arguments their forward passes never read.
D_CLASSES = {'DualDiscriminator': (), 'MaskDualDiscriminatorV2': ('seg',), 'HoloDiscriminator': ('seg', 'parsing')}
_D_COMMON = ('architecture', 'channel_base', 'channel_max', 'num_fp16_res', 'conv_clamp', 'cmap_dim', 'disc_c_noise',
             'block_kwargs', 'mapping_kwargs', 'epilogue_kwargs')
_D_POSITIONAL = {
    'DualDiscriminator': ('c_dim', 'img_resolution', 'img_channels') + _D_COMMON,
    'MaskDualDiscriminatorV2': ('c_dim', 'img_resolution', 'img_channels', 'seg_resolution', 'seg_channels') + _D_COMMON,
    'HoloDiscriminator': ('c_dim', 'img_resolution', 'img_channels', 'seg_resolution', 'seg_channels',
                          'parsing_resolution', 'parsing_channels') + _D_COMMON,
}
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
        why = {'MaskDualDiscriminator': " (PanoHead's first variant: the mask runs through separate sb* blocks, "
                                        'which our discriminator does not have)'}.get(name, '')
        raise UserError(f'{path}: cannot map D {rec.qualname}{why}; supported: DualDiscriminator (EG3D), '
                        'MaskDualDiscriminatorV2 (PanoHead), HoloDiscriminator (SphereHead)')
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


# ---------------------------------------------------------------------------- loading

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

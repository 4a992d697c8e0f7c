"""The shared reader of released network pickles: records of their modules, no code executed.

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

What a training snapshot holds (``training/training_loop.py`` of EG3D and PanoHead; the
released checkpoints are such snapshots): ``dict(training_set_kwargs=<plain dict>, G=..., D=...,
G_ema=..., augment_pipe=<AugmentPipe or None>)``, each module ``deepcopy``'d, put in eval mode and
moved to the CPU. Other training loops of the family add progress entries (counters as tensors
or numbers); those load as plain data and are not used here.
"""
from __future__ import annotations

import collections
import io
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spherehead.errors import UserError

NETWORK_KEYS = ('G_ema', 'G', 'D')
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
    """The record of network ``which`` ('G_ema', 'G' or 'D') of a read pickle. Raises UserError."""
    if which not in NETWORK_KEYS:
        raise UserError(f"which={which!r}: choose one of {', '.join(NETWORK_KEYS)}")
    rec = data.get(which)
    if not isinstance(rec, ModuleRecord):
        have = ', '.join(k for k in NETWORK_KEYS if isinstance(data.get(k), ModuleRecord))
        raise UserError(f'{path}: has no {which} network (has: {have or "none"})')
    return rec

"""The feature network of FID / KID: loading it from a file the user names, and calling it.

Nothing is downloaded. The user gives a file with ``--inception FILE`` or the environment
variable ``SPHEREHEAD_INCEPTION``. Accepted:

- a TorchScript archive (``torch.jit.save`` zip), such as ``inception-2015-12-05.pt`` that the
  StyleGAN2-ADA metrics use: the TensorFlow FID Inception-v3 (inception-2015-12-05.tgz)
  translated to TorchScript. It is called as ``net(images, return_features=True)`` with
  images [N, 3, H, W] uint8 in 0..255 at any size (it resizes to 299 itself) and returns the
  [N, 2048] pool features.
- a ``.pkl`` that embeds such an archive as bytes. The StyleGAN3 / EG3D metrics load their
  ``inception-2015-12-05.pkl`` with a plain ``pickle.load``, which runs whatever code the file
  names; we never do that. The pickle's opcodes are scanned without executing them, and an
  embedded TorchScript archive is loaded by itself; a pickle without one is refused with a
  line saying to use the ``.pt``.

pytorch-fid's ``pt_inception-*.pth`` (a state dict for its own Python InceptionV3 class) is
not read: it would need a second copy of the Inception-v3 graph here, and its features differ
slightly from the TensorFlow ones the published FIDs use.

TorchScript runs only TorchScript operators (no arbitrary Python), which is why an archive
is acceptable where a pickle is not.
"""
from __future__ import annotations

import io
import os
import pickletools
import warnings
import zipfile
from pathlib import Path

import torch

from spherehead.errors import UserError

ENV_VAR = 'SPHEREHEAD_INCEPTION'
HINT = (f'give the Inception-v3 TorchScript file inception-2015-12-05.pt (StyleGAN2-ADA metrics) '
        f'with --inception FILE or {ENV_VAR}=FILE; nothing is downloaded')


def resolve_inception_path(inception: str | os.PathLike | None) -> Path:
    """The feature network file: ``inception`` if given, else $SPHEREHEAD_INCEPTION; UserError if neither exists."""
    name = os.fspath(inception) if inception else os.environ.get(ENV_VAR, '')
    if not name:
        raise UserError(f'no Inception network named: {HINT}')
    path = Path(name).expanduser()
    if not path.is_file():
        raise UserError(f'{name}: Inception network file not found; {HINT}')
    return path


def _is_torchscript_zip(data: bytes | Path) -> bool:
    """Whether ``data`` (bytes or a file) is a TorchScript zip from its first byte on (zipfile alone
    also accepts a zip appended to other data, such as a pickle that embeds one)."""
    if isinstance(data, Path):
        with open(data, 'rb') as f:
            if f.read(4) != b'PK\x03\x04':
                return False
    elif data[:4] != b'PK\x03\x04':
        return False
    try:
        with zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith('/data.pkl') for n in names) and any('/code/' in n for n in names)


def _embedded_archives(path: Path) -> list[bytes]:
    """Byte strings inside a pickle that are TorchScript archives, found by reading its opcodes only."""
    found = []
    with open(path, 'rb') as f:
        try:
            for op, arg, _pos in pickletools.genops(f):
                if isinstance(arg, (bytes, bytearray)) and _is_torchscript_zip(bytes(arg)):
                    found.append(bytes(arg))
        except Exception as e:  # truncated or not a pickle: pickletools raises ValueError and friends
            raise UserError(f'{path}: not a readable pickle ({type(e).__name__}: {e}); {HINT}')
    return found


def load_torchscript(path: str | os.PathLike, device: str | torch.device = 'cpu') -> torch.jit.ScriptModule:
    """Load a feature network file (TorchScript archive, or a .pkl embedding one) in eval mode on ``device``."""
    path = Path(path)
    try:
        with warnings.catch_warnings():   # torch 2.13 marks TorchScript deprecated; loading still works
            warnings.simplefilter('ignore', DeprecationWarning)
            return _load(path).eval().to(device)
    except UserError:
        raise
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f'{path}: TorchScript archive does not load with this torch ({first}); {HINT}')


def _load(path: Path) -> torch.jit.ScriptModule:
    if _is_torchscript_zip(path):
        return torch.jit.load(str(path), map_location='cpu')
    archives = _embedded_archives(path)
    if not archives:
        raise UserError(f'{path}: neither a TorchScript archive nor a pickle embedding one '
                        f'(a pickle that needs its own code to load is never run); {HINT}')
    return torch.jit.load(io.BytesIO(archives[0]), map_location='cpu')


def rgb_uint8(images: torch.Tensor, who: str) -> torch.Tensor:
    """Check a feature network's input, uint8 [N, 3, H, W] (or [N, 1, H, W], repeated to 3 channels)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f'{who}: need uint8 [N, 3, H, W] images, got {images.dtype} {tuple(images.shape)}')
    return images.repeat(1, 3, 1, 1) if images.shape[1] == 1 else images


class FeatureNetwork:
    """A loaded feature network: uint8 images [N, 3, H, W] -> float32 features [N, D] on the CPU."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device = 'cpu'):
        self.path = Path(path)
        self.device = torch.device(device)
        self.module = load_torchscript(self.path, self.device)
        args = [a.name for a in self.module.forward.schema.arguments]
        self._kwargs = {'return_features': True} if 'return_features' in args else {}

    @property
    def identity(self) -> str:
        """File name, size and modification time: enough to tell cached statistics of another file."""
        st = self.path.stat()
        return f'{self.path.name}:{st.st_size}:{int(st.st_mtime)}'

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        images = rgb_uint8(images, 'FeatureNetwork')
        feats = self.module(images.to(self.device), **self._kwargs)
        if not isinstance(feats, torch.Tensor) or feats.ndim != 2 or feats.shape[0] != images.shape[0]:
            shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
            raise UserError(f'{self.path}: the feature network returned {shape}, not [N, D] features; {HINT}')
        return feats.float().cpu()


def load_feature_network(inception: str | os.PathLike | None = None,
                         device: str | torch.device = 'cpu') -> FeatureNetwork:
    """The feature network named by ``inception`` or $SPHEREHEAD_INCEPTION (UserError if missing or unreadable)."""
    return FeatureNetwork(resolve_inception_path(inception), device)

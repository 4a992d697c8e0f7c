"""Output files of the tools and of inversion: checked paths and videos (.mp4 through imageio-ffmpeg,
.gif through Pillow).

Every output is written to a temporary name beside its target and renamed at the end, so an
interrupted run never leaves half a file and never destroys the previous result.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from spherehead.errors import UserError

KIND_NAMES = {'.mp4': 'an MP4 video', '.gif': 'a GIF image', '.ply': 'a PLY file (mesh or splats)',
              '.obj': 'an OBJ mesh', '.glb': 'a glTF binary (GLB)'}
_OBJ_KEYWORDS = ('#', 'v ', 'vt ', 'vn ', 'f ', 'o ', 'g ', 's ', 'mtllib', 'usemtl', 'l ')


def sniff_kind(path: Path) -> str | None:
    """The extension ('.mp4', '.gif', '.ply', '.obj', '.glb') that a file's content looks like, or None."""
    with open(path, 'rb') as f:
        head = f.read(4096)
    if head[4:8] == b'ftyp':
        return '.mp4'
    if head[:6] in (b'GIF87a', b'GIF89a'):
        return '.gif'
    if head[:4] == b'ply\n' or head[:5] == b'ply\r\n':
        return '.ply'
    if head[:4] == b'glTF':
        return '.glb'
    try:
        text = head.decode('ascii')
    except UnicodeDecodeError:
        return None
    first = next((line.strip() for line in text.splitlines() if line.strip()), '')
    return '.obj' if first.startswith(_OBJ_KEYWORDS) else None


def check_replaceable(path: str | os.PathLike) -> Path:
    """Refuse (UserError, one line) to replace an existing non-empty file whose content is of another
    kind than its extension promises, so a run never silently replaces, say, a photo named out.mp4.
    A file of the same kind is replaced (re-running a command)."""
    p = Path(path)
    ext = p.suffix.lower()
    if p.is_file() and p.stat().st_size > 0 and sniff_kind(p) != ext:
        raise UserError(f'{path} exists and is not {KIND_NAMES.get(ext, "a " + ext + " file")}; '
                        'remove it or choose another name (it was left untouched)')
    return p


def partial_path(path: Path) -> Path:
    """The temporary name a file is written under before the final rename (same folder and extension)."""
    return path.with_name(f'.{path.stem}.partial{path.suffix}')


class VideoWriter:
    """Writes frames [H, W, 3] uint8 (all of one size) to ``path``: .mp4 (H.264, yuv420p) or .gif.

    Use as a context manager; the file appears under its name only when the block ends without
    an error. MP4 frames of odd width or height get one black column / row (yuv420p needs even
    sizes). Pillow merges identical consecutive GIF frames into one longer frame.
    """

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = Path(path), float(fps)
        self.tmp = partial_path(self.path)
        self.kind = self.path.suffix.lower()
        if self.kind not in ('.mp4', '.gif'):
            raise UserError(f'{path}: videos are .mp4 or .gif, not {self.kind!r}')
        self.frames: list[np.ndarray] = []   # .gif: kept until the end (Pillow writes all frames at once)
        self.size: tuple[int, int] | None = None
        self.count = 0
        self._ffmpeg = None

    def __enter__(self) -> 'VideoWriter':
        return self

    def append(self, frame: np.ndarray) -> None:
        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f'frames must be [H, W, 3] uint8, got {frame.shape}')
        if self.size is None:
            self.size = frame.shape[:2]
        elif frame.shape[:2] != self.size:
            raise ValueError(f'frame {self.count} is {frame.shape[:2]}, earlier frames {self.size}')
        self.count += 1
        if self.kind == '.gif':
            self.frames.append(frame)
            return
        h, w = frame.shape[:2]
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))
        if self._ffmpeg is None:
            import imageio_ffmpeg
            # bitexact: no encoder version or time stamps in the file, so equal frames give equal bytes.
            self._ffmpeg = imageio_ffmpeg.write_frames(
                str(self.tmp), (frame.shape[1], frame.shape[0]), fps=self.fps, codec='libx264', quality=8,
                macro_block_size=1, ffmpeg_log_level='error',
                output_params=['-fflags', '+bitexact', '-flags:v', '+bitexact', '-map_metadata', '-1'])
            self._ffmpeg.send(None)
        self._ffmpeg.send(frame)

    def close(self) -> None:
        if self.count == 0:
            raise ValueError('no frames to write')
        if self.kind == '.gif':
            import imageio.v3 as iio
            iio.imwrite(self.tmp, np.stack(self.frames), extension='.gif', duration=1000.0 / self.fps, loop=0)
        else:
            self._ffmpeg.close()
            self._ffmpeg = None
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._ffmpeg is not None:
            try:
                self._ffmpeg.close()
            except Exception:  # ffmpeg may already be gone; the partial file is removed below anyway
                pass
            self._ffmpeg = None
        self.tmp.unlink(missing_ok=True)

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

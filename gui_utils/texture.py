"""An RGB(A) image kept on the GPU: allocated once (glTexImage2D), then updated in place
with glTexSubImage2D; re-allocated only when the image size changes."""
from __future__ import annotations

import numpy as np
import OpenGL.GL as gl
from imgui_bundle import imgui


class Texture:
    """A 2D texture for uint8 images [H, W, 3] or [H, W, 4]. Needs a current GL context."""

    def __init__(self, nearest: bool = False) -> None:
        self.gl_id = int(gl.glGenTextures(1))
        self.width = 0
        self.height = 0
        self.channels = 0
        self.nearest = nearest
        self.uploads = 0
        self._ref = imgui.ImTextureRef(self.gl_id)

    @property
    def ref(self) -> imgui.ImTextureRef:
        """What imgui.image / draw_list.add_image take."""
        return self._ref

    @property
    def valid(self) -> bool:
        return self.width > 0 and self.height > 0

    def set_filter(self, nearest: bool) -> None:
        if nearest != self.nearest:
            self.nearest = nearest
            if self.valid:
                gl.glBindTexture(gl.GL_TEXTURE_2D, self.gl_id)
                self._apply_filter()
                gl.glBindTexture(gl.GL_TEXTURE_2D, 0)

    def _apply_filter(self) -> None:
        f = gl.GL_NEAREST if self.nearest else gl.GL_LINEAR
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MIN_FILTER, f)
        gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_MAG_FILTER, f)

    def update(self, image: np.ndarray) -> None:
        """Upload ``image`` [H, W, 3|4] uint8 (row 0 = top)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f'expected a [H, W, 3|4] uint8 image, got {image.dtype} {image.shape}')
        image = np.ascontiguousarray(image)
        h, w, ch = image.shape
        fmt = gl.GL_RGB if ch == 3 else gl.GL_RGBA
        gl.glBindTexture(gl.GL_TEXTURE_2D, self.gl_id)
        gl.glPixelStorei(gl.GL_UNPACK_ALIGNMENT, 1)
        gl.glPixelStorei(gl.GL_UNPACK_ROW_LENGTH, 0)
        if (w, h, ch) != (self.width, self.height, self.channels):
            self._apply_filter()
            gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_WRAP_S, gl.GL_CLAMP_TO_EDGE)
            gl.glTexParameteri(gl.GL_TEXTURE_2D, gl.GL_TEXTURE_WRAP_T, gl.GL_CLAMP_TO_EDGE)
            gl.glTexImage2D(gl.GL_TEXTURE_2D, 0, gl.GL_RGBA8, w, h, 0, fmt, gl.GL_UNSIGNED_BYTE, image)
            self.width, self.height, self.channels = w, h, ch
        else:
            gl.glTexSubImage2D(gl.GL_TEXTURE_2D, 0, 0, 0, w, h, fmt, gl.GL_UNSIGNED_BYTE, image)
        gl.glBindTexture(gl.GL_TEXTURE_2D, 0)
        self.uploads += 1

    def delete(self) -> None:
        if self.gl_id:
            gl.glDeleteTextures([self.gl_id])
            self.gl_id = 0
            self.width = self.height = 0

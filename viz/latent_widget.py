"""Latent: seed, truncation, interpolation between two seeds (slider + animation), save / load w."""
from __future__ import annotations

import math
import os

import numpy as np
from imgui_bundle import imgui

from viz.render_args import RenderArgs
from viz.widget import Widget


class LatentWidget(Widget):
    title = 'Latent'
    default_open = True

    def __init__(self, viz=None) -> None:
        super().__init__(viz)
        self.seed = 0
        self.seed2 = 1
        self.interp = 0.0
        self.psi = 0.7
        self.cutoff = 0             # 0 = no cutoff (all ws truncated)
        self.animate = False
        self.period = 4.0           # seconds for seed -> seed2 -> seed
        self._phase = 0.0
        self.w_path: str | None = None
        self.w_file = 'out/w.npy'
        self.message = ''

    def tick(self, dt: float) -> None:
        if self.animate:
            self._phase = (self._phase + dt / max(self.period, 0.1)) % 1.0
            self.interp = 0.5 - 0.5 * math.cos(2 * math.pi * self._phase)

    def apply(self, args: RenderArgs) -> RenderArgs:
        return args.replace(seed=int(self.seed), seed2=int(self.seed2), interp=round(float(self.interp), 4),
                            truncation_psi=round(float(self.psi), 4),
                            truncation_cutoff=int(self.cutoff) if self.cutoff > 0 else None,
                            w_path=self.w_path)

    def save_w(self, w: np.ndarray | None, path: str) -> str:
        if w is None:
            return 'nothing rendered yet'
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        np.save(path, w)
        return f'saved w {tuple(w.shape)} to {path}'

    def load_w(self, path: str) -> str:
        if not os.path.isfile(path):
            return f'{path}: no such file'
        self.w_path = os.path.abspath(path)
        return f'using w from {path}'

    def draw(self) -> None:
        _, self.seed = imgui.input_int('seed', self.seed)
        self.seed = max(0, min(self.seed, 2**32 - 1))
        _, self.psi = imgui.slider_float('truncation psi', self.psi, 0.0, 1.5, '%.2f')
        _, self.cutoff = imgui.slider_int('trunc. cutoff', self.cutoff, 0, 16, '%d' if self.cutoff else 'none')
        _, self.seed2 = imgui.input_int('seed 2', self.seed2)
        self.seed2 = max(0, min(self.seed2, 2**32 - 1))
        _, self.interp = imgui.slider_float('seed -> seed 2', self.interp, 0.0, 1.0, '%.2f')
        _, self.animate = imgui.checkbox('animate', self.animate)
        imgui.same_line()
        imgui.set_next_item_width(-60)
        _, self.period = imgui.slider_float('period', self.period, 0.5, 20.0, '%.1f s')
        imgui.set_next_item_width(-110)
        _, self.w_file = imgui.input_text('##wfile', self.w_file)
        imgui.same_line()
        if imgui.button('save w'):
            result = self.viz.result if self.viz else None
            self.message = self.save_w(result.w if result else None, self.w_file)
        imgui.same_line()
        if imgui.button('load w'):
            self.message = self.load_w(self.w_file)
        if self.w_path:
            imgui.text_colored(imgui.ImVec4(1.0, 0.8, 0.3, 1.0), f'w from {os.path.basename(self.w_path)}')
            imgui.same_line()
            if imgui.small_button('back to seeds'):
                self.w_path = None
        if self.message:
            imgui.text_wrapped(self.message)

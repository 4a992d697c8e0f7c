"""Spheres: F1 (sphere A) / F2 (sphere B) / fused, and A | B | fused side by side."""
from __future__ import annotations

from imgui_bundle import imgui

from viz.render_args import SPHERES, RenderArgs
from viz.widget import Widget

LABELS = {'A': 'F1 (A)', 'B': 'F2 (B)', 'fused': 'fused'}


class SpheresWidget(Widget):
    title = 'Spheres'
    default_open = True

    def __init__(self, viz=None) -> None:
        super().__init__(viz)
        self.sphere = 'fused'
        self.side_by_side = False

    def set_sphere(self, sphere: str) -> None:
        if sphere not in SPHERES:
            raise ValueError(f'sphere must be one of {SPHERES}, got {sphere!r}')
        self.sphere = sphere

    def apply(self, args: RenderArgs) -> RenderArgs:
        return args.replace(sphere=self.sphere, side_by_side=self.side_by_side)

    def draw(self) -> None:
        info = self.viz.network_info if self.viz else {}
        if info and not info.get('is_sphere', True):
            imgui.text_disabled(f'{info.get("representation")} network: no spheres')
            return
        for i, s in enumerate(SPHERES):
            if i:
                imgui.same_line()
            if imgui.radio_button(LABELS[s], self.sphere == s):
                self.sphere = s
        imgui.same_line()
        _, self.side_by_side = imgui.checkbox('all three', self.side_by_side)

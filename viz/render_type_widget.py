"""Render type: image, raw, depth, mask, parsing, sphere weight."""
from __future__ import annotations

from imgui_bundle import imgui

from viz.render_args import RENDER_TYPES, RenderArgs
from viz.widget import Widget


class RenderTypeWidget(Widget):
    title = 'Render type'
    default_open = True

    def __init__(self, viz=None) -> None:
        super().__init__(viz)
        self.render_type = 'image'
        self.nearest = False          # display filter: nearest shows the pixels of low-res outputs

    def set_type(self, kind: str) -> None:
        if kind not in RENDER_TYPES:
            raise ValueError(f'render type must be one of {RENDER_TYPES}, got {kind!r}')
        self.render_type = kind

    def apply(self, args: RenderArgs) -> RenderArgs:
        return args.replace(render_type=self.render_type)

    def draw(self) -> None:
        for i, kind in enumerate(RENDER_TYPES):
            if i % 3:
                imgui.same_line()
            if imgui.radio_button(f'{kind} [{i + 1}]', self.render_type == kind):
                self.render_type = kind
        _, self.nearest = imgui.checkbox('show pixels (nearest filter)', self.nearest)

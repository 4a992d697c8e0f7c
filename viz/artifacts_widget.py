"""Artifact inspection: overlay of the surface near the seam / poles of A and of B, the
unwrapped weight maps with the visible surface on them, and the feature planes."""
from __future__ import annotations

from imgui_bundle import imgui

from gui_utils.widgets import help_marker, rgb_u32
from viz import colormaps
from viz.render_args import PLANE_MODES, RenderArgs
from viz.widget import Widget


class ArtifactsWidget(Widget):
    title = 'Artifacts: seams and poles'

    def __init__(self, viz=None) -> None:
        super().__init__(viz)
        self.overlay = False
        self.threshold = 0.15
        self.inspect = False
        self.plane_mode = 'pca'
        self.plane_channel = 0

    def apply(self, args: RenderArgs) -> RenderArgs:
        return args.replace(overlay_seams=self.overlay, seam_threshold=round(float(self.threshold), 4),
                            inspect=self.inspect, plane_mode=self.plane_mode, plane_channel=int(self.plane_channel))

    def draw(self) -> None:
        _, self.overlay = imgui.checkbox('overlay seams and poles [O]', self.overlay)
        help_marker('Marks the visible surface where a sphere\'s weight falls below the threshold, '
                    'i.e. near its seam or poles. Red: sphere A, cyan: sphere B, white: both.')
        _, self.threshold = imgui.slider_float('weight threshold', self.threshold, 0.01, 0.5, '%.2f')
        dl = imgui.get_window_draw_list()
        for label, rgb in (('A', colormaps.SEAM_A_RGB), ('B', colormaps.SEAM_B_RGB), ('both', colormaps.SEAM_BOTH_RGB)):
            p = imgui.get_cursor_screen_pos()
            h = imgui.get_text_line_height()
            dl.add_rect_filled(p, imgui.ImVec2(p.x + h, p.y + h), rgb_u32(rgb))
            imgui.dummy(imgui.ImVec2(h, h))
            imgui.same_line()
            imgui.text(label)
            imgui.same_line()
        result = self.viz.result if self.viz else None
        if result is not None and result.seam_fraction:
            imgui.text('  near: ' + ', '.join(f'{k} {100 * v:.0f}%' for k, v in result.seam_fraction.items()))
        else:
            imgui.new_line()
        _, self.inspect = imgui.checkbox('weight maps and feature planes', self.inspect)
        if not self.inspect:
            return
        for m in PLANE_MODES:
            imgui.same_line()
            if imgui.radio_button(m, self.plane_mode == m):
                self.plane_mode = m
        if self.plane_mode == 'channel':
            _, self.plane_channel = imgui.slider_int('channel', self.plane_channel, 0, self._channels() - 1)
        imgui.text_disabled('shown right of the render')

    def _channels(self) -> int:
        info = self.viz.network_info if self.viz else {}
        return int(info.get('config', {}).get('feature_channels', 32))

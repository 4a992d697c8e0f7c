"""The render view: the newest image fitted into the area right of the panel, its overlays
(panel labels, depth colour bar, parsing legend, sphere colours, errors, status line) and
the mouse on it (drag = orbit, scroll = radius, double-click = front view). In compare mode
each half is labelled with its network, its frame time and rate, its notes and errors; the
mouse acts on the whole area, so orbiting moves both halves."""
from __future__ import annotations

from typing import TYPE_CHECKING

from imgui_bundle import imgui

from gui_utils.texture import Texture
from gui_utils.widgets import color_bar, legend, text_with_background, wrap_lines, wrapped_text_with_background
from viz import colormaps
from viz.compare import GAP
from viz.render_args import RENDER_TYPE_LABELS, SPHERE_LABELS

if TYPE_CHECKING:
    from viz.app import Visualizer

VIEW_FLAGS = (imgui.WindowFlags_.no_decoration | imgui.WindowFlags_.no_move | imgui.WindowFlags_.no_saved_settings
              | imgui.WindowFlags_.no_bring_to_front_on_focus | imgui.WindowFlags_.no_scroll_with_mouse
              | imgui.WindowFlags_.no_background).value


def fit_rect(img_w: int, img_h: int, x: float, y: float, w: float, h: float, margin: float = 8.0
             ) -> tuple[float, float, float, float]:
    """The largest rect of the image's aspect inside (x, y, w, h), centred: (x0, y0, x1, y1)."""
    w, h = max(w - 2 * margin, 1.0), max(h - 2 * margin, 1.0)
    scale = min(w / img_w, h / img_h)
    dw, dh = img_w * scale, img_h * scale
    x0, y0 = x + margin + (w - dw) / 2, y + margin + (h - dh) / 2
    return x0, y0, x0 + dw, y0 + dh


class View:
    def __init__(self, viz: 'Visualizer') -> None:
        self.viz = viz
        self.texture = Texture()
        self.planes_texture = Texture(nearest=True)
        self.weights_texture = Texture(nearest=True)
        self.image_rect: tuple[float, float, float, float] | None = None   # where the image was drawn (screen px)
        self.texts: list[str] = []       # the overlay texts drawn in the last frame (what the window says)

    def upload(self, result, nearest: bool) -> None:
        """Put a finished render on the GPU (glTexSubImage2D while the sizes stay the same)."""
        self.texture.set_filter(nearest)
        self.texture.update(result.image)
        if result.planes_image is not None:
            self.planes_texture.update(result.planes_image)
        if result.weight_maps_image is not None:
            self.weights_texture.update(result.weight_maps_image)

    def draw(self, x: float, y: float, w: float, h: float) -> None:
        viz = self.viz
        imgui.set_next_window_pos(imgui.ImVec2(x, y))
        imgui.set_next_window_size(imgui.ImVec2(w, h))
        imgui.push_style_var(imgui.StyleVar_.window_padding.value, imgui.ImVec2(0, 0))
        imgui.begin('##view', None, VIEW_FLAGS)
        imgui.pop_style_var()
        self.texts = []
        imgui.set_cursor_screen_pos(imgui.ImVec2(x, y))
        imgui.invisible_button('##orbit', imgui.ImVec2(max(w, 1), max(h, 1)))
        io = imgui.get_io()
        if imgui.is_item_active() and (io.mouse_delta.x or io.mouse_delta.y):
            viz.camera.drag(io.mouse_delta.x, io.mouse_delta.y)
        if imgui.is_item_hovered():
            if io.mouse_wheel:
                viz.camera.zoom(io.mouse_wheel)
            if imgui.is_mouse_double_clicked(imgui.MouseButton_.left.value):
                viz.camera.preset('front')
        dl = imgui.get_window_draw_list()
        shown = viz.shown
        line = imgui.get_text_line_height_with_spacing()
        side = shown is not None and shown.args.inspect and (shown.planes_image is not None
                                                            or shown.weight_maps_image is not None)
        main_w = w * 0.62 if side else w
        if side:
            self._inspection(dl, shown, x + main_w, y + line, w - main_w, h - 2 * line)
        if self.texture.valid and shown is not None:
            x0, y0, x1, y1 = fit_rect(self.texture.width, self.texture.height, x, y + line, main_w, h - 2 * line)
            self.image_rect = (x0, y0, x1, y1)
            dl.add_image(self.texture.ref, imgui.ImVec2(x0, y0), imgui.ImVec2(x1, y1))
            self._overlays(dl, shown, x0, y0, x1, y1, top=y + 2 * line + 4)
        else:
            self.image_rect = None
            wrapped_text_with_background(dl, (x + 12, y + h / 2), f'{viz.network.status_line()} ...', w - 24)
        self._status_lines(dl, x, y, w, h)
        imgui.end()

    def _inspection(self, dl, shown, x: float, y: float, w: float, h: float) -> None:
        """Right column: unwrapped weight maps of A and B with the visible surface, then the feature planes."""
        line = imgui.get_text_line_height_with_spacing()
        yy = y + 8
        w = w - 8
        blocks = []
        if shown.weight_maps_image is not None and self.weights_texture.valid:
            blocks.append((self.weights_texture, shown.weight_maps_rows,
                           'unwrapped weight maps, visible surface green'))
        if shown.planes_image is not None and self.planes_texture.valid:
            blocks.append((self.planes_texture, shown.planes_rows, f'feature planes ({shown.args.plane_mode})'))
        avail = h - 8 - len(blocks) * line
        heights = [w * t.height / t.width for t, _, _ in blocks]
        scale = min(1.0, avail / max(sum(heights), 1.0))
        for (tex, rows, title), bh in zip(blocks, heights):
            bw, bh = w * scale, bh * scale
            text_with_background(dl, (x + 4, yy), title, (0.85, 0.85, 0.85))
            yy += line
            dl.add_image(tex.ref, imgui.ImVec2(x, yy), imgui.ImVec2(x + bw, yy + bh))
            for i, name in enumerate(rows):
                text_with_background(dl, (x + 4, yy + i * bh / len(rows) + 2), name)
            yy += bh + 6

    def _text(self, dl, pos, text: str, color=(1.0, 1.0, 1.0)) -> None:
        self.texts.append(text)
        text_with_background(dl, pos, text, color)

    def _wrapped(self, dl, pos, text: str, width: float, color=(1.0, 1.0, 1.0)) -> float:
        self.texts.append(text)
        return wrapped_text_with_background(dl, pos, text, width, color)

    def _compare_overlays(self, dl, shown, x0, y0, x1, y1, top: float) -> None:
        """Above each panel: its network, frame time and rate, notes and errors (the difference
        panel: its measure); below: seam shares or the depth range. Outside the image, so the
        pixels stay clean; above it down to ``top`` at most. Panel i starts at i * (S + GAP) image px."""
        cmp = shown.comparison
        args = shown.args
        scale = (x1 - x0) / max(shown.image.shape[1], 1)
        pw = cmp.panel_size * scale
        line = imgui.get_text_line_height_with_spacing()
        white, yellow, red = (1.0, 1.0, 1.0), (1.0, 0.85, 0.3), (1.0, 0.45, 0.45)
        blocks = []
        for side in (cmp.left, cmp.right):
            above = [(side.label(), white)] + ([(side.error, red)] if side.error else [])
            above += [(note, yellow) for note in side.notes[:2]]
            below = []
            if args.overlay_seams and side.seam_fraction:
                below.append(('near seam/poles: ' + ', '.join(f'{k} {100 * v:.0f}%'
                                                             for k, v in side.seam_fraction.items()), white))
            if args.render_type == 'depth' and side.depth_range is not None:
                below.append((f'depth {side.depth_range[0]:.2f} (bright) - {side.depth_range[1]:.2f}', white))
            blocks.append((above, below))
        if len(shown.panels) > 2:
            blocks.append(([(cmp.diff_text, white)], []))
        bottom = y1 + 4
        for i, (above, below) in enumerate(blocks):
            px = x0 + i * (cmp.panel_size + GAP) * scale
            rows = sum(len(wrap_lines(text, pw - 8)) for text, _ in above)
            yy = max(top, y0 - rows * line - 2)
            for text, color in above:
                yy += self._wrapped(dl, (px + 4, yy), text, pw - 8, color)
            yy = y1 + 4
            for text, color in below:
                yy += self._wrapped(dl, (px + 4, yy), text, pw - 8, color)
            bottom = max(bottom, yy)
        if args.overlay_seams:
            entries = [(f'near seam/poles of {s}', rgb.astype(int).tolist()) for s, rgb in
                       (('A', colormaps.SEAM_A_RGB), ('B', colormaps.SEAM_B_RGB))]
            legend(dl, x0 + 6, bottom + 4, entries)

    def _overlays(self, dl, shown, x0, y0, x1, y1, top: float = 0.0) -> None:
        args = shown.args
        if shown.comparison is not None and shown.image is not None:
            self._compare_overlays(dl, shown, x0, y0, x1, y1, top)
            return
        n = max(len(shown.panels), 1)
        if n > 1:
            pw = (x1 - x0) / n
            for i, label in enumerate(shown.panels):
                text_with_background(dl, (x0 + i * pw + 6, y0 + 4), label)
        if args.render_type == 'depth' and shown.depth_range is not None:
            lo, hi = shown.depth_range
            colors = colormaps.depth_colors([1 - i / 31 for i in range(32)])   # bottom = far
            bar_h = min(200.0, (y1 - y0) * 0.6)
            color_bar(dl, x1 - 34, y0 + (y1 - y0 - bar_h) / 2, 14, bar_h, colors,
                      f'{lo:.2f}', f'{hi:.2f}', 'depth')
        elif args.render_type == 'parsing' and shown.parsing_legend:
            legend(dl, x0 + 6, y0 + 26 if n > 1 else y0 + 6,
                   [(f'{name} {100 * share:.0f}%', rgb) for name, rgb, share in shown.parsing_legend[:20]])
        elif args.render_type == 'weight':
            legend(dl, x0 + 6, y0 + 26 if n > 1 else y0 + 6,
                   [('sphere A owns', colormaps.SPHERE_A_RGB.astype(int).tolist()),
                    ('sphere B owns', colormaps.SPHERE_B_RGB.astype(int).tolist())])
        if args.overlay_seams and shown.seam_fraction:
            entries = [(f'near seam/poles of {s}', rgb.astype(int).tolist()) for s, rgb in
                       (('A', colormaps.SEAM_A_RGB), ('B', colormaps.SEAM_B_RGB)) if s in shown.seam_fraction]
            legend(dl, x0 + 6, y1 - 6 - len(entries) * (imgui.get_text_line_height() + 2), entries)

    def _status_lines(self, dl, x, y, w, h) -> None:
        viz = self.viz
        a = viz.args
        line = imgui.get_text_line_height_with_spacing()
        sphere = 'A | B | fused' if a.side_by_side and not a.compare else SPHERE_LABELS[a.sphere]
        top = (f'seed {a.seed}' + (f' -> {a.seed2} @ {a.interp:.2f}' if a.interp > 0 else '') +
               f'   yaw {a.yaw:.0f}  pitch {a.pitch:.0f}  r {a.radius:.2f}   {sphere}   {RENDER_TYPE_LABELS[a.render_type]}'
               + ('   compare' + (' + difference' if a.compare_diff else '') if a.compare else ''))
        self._text(dl, (x + 8, y + 4), top)
        busy = viz.worker is not None and viz.worker.busy
        if busy:
            label = (viz.worker.status.split(' ', 1)[0] or 'busy') + ' ...'     # 'loading' / 'rendering'
            text_with_background(dl, (x + w - imgui.calc_text_size(label).x - 10, y + 4), label, (1.0, 0.85, 0.3))
        r = viz.result
        yy = y + line + 4
        red = (1.0, 0.45, 0.45)
        if viz.network.error:
            yy += wrapped_text_with_background(dl, (x + 8, yy), f'could not load {viz.network.failed}; '
                                               'see the Network panel', w - 16, red)
        if viz.network.compare_error:
            yy += self._wrapped(dl, (x + 8, yy), f'could not load {viz.network.compare_failed} to compare; '
                                'see the Network panel', w - 16, red)
        elif r is not None and r.error:
            yy += wrapped_text_with_background(dl, (x + 8, yy), f'render error: {r.error}', w - 16, red)
        if viz.shown is not None:
            for note in viz.shown.notes[:3]:
                yy += self._wrapped(dl, (x + 8, yy), note, w - 16, (1.0, 0.85, 0.3))
        footer = f"network: {viz.network_info.get('provenance', 'none loaded')}"
        cmp = viz.shown.comparison if viz.shown is not None else None
        if cmp is not None and a.compare:
            footer = (f"left: {cmp.left.network_info.get('provenance', cmp.left.source)}\n"
                      f"right: {cmp.right.network_info.get('provenance', cmp.right.source)}")
        if viz.network.follow_dir:
            footer += '  (following the run: newer snapshots replace it)'
        rows = len(wrap_lines(footer, w - 16))
        wrapped_text_with_background(dl, (x + 8, y + h - rows * line), footer, w - 16, (0.8, 0.8, 0.8))

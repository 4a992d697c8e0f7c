"""The visualizer application: widgets, the render worker, the window and its main loop,
plus the scripted modes (``snapshot``, ``benchmark``).

Per GUI frame: poll events -> take a finished render (upload it with glTexSubImage2D) ->
keyboard -> animations -> draw the panel and the view -> rebuild RenderArgs from the
widgets and send them to the worker if they changed -> draw -> swap. The GUI never waits
for the worker.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from viz.artifacts_widget import ArtifactsWidget
from viz.camera_widget import CameraWidget
from viz.capture_widget import CaptureWidget
from viz.latent_widget import LatentWidget
from viz.network_widget import NetworkWidget
from viz.performance_widget import PerformanceWidget
from viz.quality_widget import QualityWidget
from viz.render_args import RENDER_TYPES, RenderArgs
from viz.render_type_widget import RenderTypeWidget
from viz.renderer import RenderResult
from viz.spheres_widget import SpheresWidget

KEYS_HELP = (
    'drag: orbit   scroll: radius   double-click: front   arrows: yaw/pitch 10 deg   '
    '1-6: render type   F1/F2/F3: sphere A/B/fused   F4: all three   O: seams overlay   '
    'Space: turntable   PgUp/PgDn: seed   R: reset camera   S: save image   P: save window   Ctrl+Q: quit')


class Visualizer:
    """Widgets + worker + window. ``open_window=False`` builds only the widgets (unit tests)."""

    def __init__(self, network: str = 'demo', device: str = 'cpu', width: int = 1280, height: int = 800,
                 fps_limit: float = 60.0, open_window: bool = True, verbose: bool = False) -> None:
        self.network = NetworkWidget(self, network)
        self.camera = CameraWidget(self)
        self.latent = LatentWidget(self)
        self.spheres = SpheresWidget(self)
        self.render_type = RenderTypeWidget(self)
        self.artifacts = ArtifactsWidget(self)
        self.quality = QualityWidget(self)
        self.performance = PerformanceWidget(self)
        self.capture = CaptureWidget(self)
        # Panel order; apply() runs in the same order (capture last: it drives the yaw while recording).
        self.widgets = [self.network, self.latent, self.camera, self.spheres, self.render_type,
                        self.artifacts, self.quality, self.performance, self.capture]
        self.verbose = verbose
        self.result: RenderResult | None = None     # newest finished render (may be an error)
        self.shown: RenderResult | None = None      # newest render with an image (what the view shows)
        self.network_info: dict = {}
        self.args = self.build_args()
        self._submitted: RenderArgs | None = None
        self._window_capture: str | None = None
        self.last_capture: np.ndarray | None = None
        self.window = self.view = self.worker = None
        if open_window:
            from gui_utils.window import Window
            from viz.renderer import Renderer
            from viz.view import View
            from viz.worker import RenderWorker
            self.window = Window('SphereHead visualizer', width, height, fps_limit=fps_limit)
            self.view = View(self)
            self.worker = RenderWorker(lambda: Renderer(device))

    # ------------------------------------------------------------------ state
    def build_args(self) -> RenderArgs:
        """Widget state -> render arguments (no GL, no network)."""
        args = RenderArgs()
        for w in self.widgets:
            args = w.apply(args)
        return args

    def set_state(self, seed: int | None = None, yaw: float | None = None, pitch: float | None = None,
                  sphere: str | None = None, render: str | None = None, overlay: str | None = None,
                  side_by_side: bool | None = None, inspect: bool | None = None) -> None:
        """The command line's state flags, applied to the widgets."""
        if seed is not None:
            self.latent.seed = int(seed)
        self.camera.set_view(yaw, pitch)
        if sphere is not None:
            self.spheres.set_sphere(sphere)
        if render is not None:
            self.render_type.set_type(render)
        if overlay is not None:
            if overlay not in ('none', 'seams'):
                raise ValueError(f"overlay must be 'none' or 'seams', got {overlay!r}")
            self.artifacts.overlay = overlay == 'seams'
        if side_by_side is not None:
            self.spheres.side_by_side = bool(side_by_side)
        if inspect is not None:
            self.artifacts.inspect = bool(inspect)
            self.artifacts.open = self.artifacts.open or bool(inspect)
        self.args = self.build_args()

    def request_window_capture(self, path: str) -> None:
        """Write the next drawn frame (whole window) to ``path``."""
        self._window_capture = path

    # ------------------------------------------------------------------ frame
    def _poll_worker(self) -> None:
        result = self.worker.poll()
        if result is None:
            return
        self.result = result
        if result.network_info:
            self.network_info = result.network_info
        if result.image is not None:
            t0 = time.perf_counter()
            self.view.upload(result, self.render_type.nearest)
            result.timings['upload'] = time.perf_counter() - t0
            self.shown = result
        elif result.error and self.verbose and result.traceback:
            print(result.traceback, file=sys.stderr)
        self.performance.add_worker_frame(result.timings, result.backbone_cached)

    def _keyboard(self) -> None:
        from imgui_bundle import imgui
        io = imgui.get_io()
        if io.want_text_input:
            return
        K, pressed = imgui.Key, imgui.is_key_pressed
        if io.key_ctrl and pressed(K.q):
            self.window.request_close()
            return
        if io.want_capture_keyboard and not io.nav_active:
            return
        cam = self.camera
        if pressed(K.left_arrow):
            cam.set_view(yaw=cam.yaw - 10)
        if pressed(K.right_arrow):
            cam.set_view(yaw=cam.yaw + 10)
        if pressed(K.up_arrow):
            cam.set_view(pitch=cam.pitch + 10)
        if pressed(K.down_arrow):
            cam.set_view(pitch=cam.pitch - 10)
        for i, kind in enumerate(RENDER_TYPES):
            if pressed(getattr(K, f'_{i + 1}'), False):
                self.render_type.set_type(kind)
        for key, sphere in ((K.f1, 'A'), (K.f2, 'B'), (K.f3, 'fused')):
            if pressed(key, False):
                self.spheres.set_sphere(sphere)
        if pressed(K.f4, False):
            self.spheres.side_by_side = not self.spheres.side_by_side
        if pressed(K.o, False):
            self.artifacts.overlay = not self.artifacts.overlay
        if pressed(K.space, False):
            cam.turntable = not cam.turntable
        if pressed(K.r, False):
            cam.reset()
        if pressed(K.page_up):
            self.latent.seed += 1
        if pressed(K.page_down):
            self.latent.seed = max(0, self.latent.seed - 1)
        if pressed(K.s, False) and not io.key_ctrl:
            self.capture.message = self.capture.save_image()
        if pressed(K.p, False):
            self.capture.message = self.capture.save_window()

    def _draw_panel(self, width: float, height: float) -> None:
        from imgui_bundle import imgui
        imgui.set_next_window_pos(imgui.ImVec2(0, 0))
        imgui.set_next_window_size(imgui.ImVec2(width, height))
        flags = (imgui.WindowFlags_.no_move | imgui.WindowFlags_.no_resize | imgui.WindowFlags_.no_collapse
                 | imgui.WindowFlags_.no_saved_settings | imgui.WindowFlags_.no_title_bar).value
        imgui.begin('SphereHead##panel', None, flags)
        imgui.text('SphereHead visualizer')
        imgui.same_line()
        imgui.text_disabled(f'{self.performance.gui_fps:.0f} FPS')
        imgui.push_item_width(-110)
        for w in self.widgets:
            imgui.set_next_item_open(w.open, imgui.Cond_.once.value)
            if imgui.collapsing_header(w.title):
                imgui.push_id(w.title)
                w.draw()
                imgui.pop_id()
        imgui.pop_item_width()
        if imgui.collapsing_header('Keyboard and mouse'):
            imgui.text_wrapped(KEYS_HELP.replace('   ', '\n'))
        imgui.end()

    def frame(self) -> None:
        """One GUI frame; never waits for the worker."""
        win = self.window
        win.begin_frame()
        dt = min(win.frame_time or 1 / 60, 0.25)
        for path in win.take_dropped_paths():
            self.network.load(path)
        self._poll_worker()
        self._keyboard()
        for w in self.widgets:
            w.tick(dt)
        ww, wh = win.size
        panel_w = float(min(max(0.34 * ww, 300), 440))
        self._draw_panel(panel_w, wh)
        self.view.draw(panel_w, 0, ww - panel_w, wh)
        self.args = self.build_args()
        if self.args != self._submitted:
            self.worker.submit(self.args)
            self._submitted = self.args
        win.render()
        if self._window_capture is not None:
            path, self._window_capture = self._window_capture, None
            self.last_capture = win.read_pixels()
            if path:
                from PIL import Image
                Image.fromarray(self.last_capture).save(path)
        win.end_frame()
        self.performance.add_gui_frame(win.frame_time)

    def run(self) -> None:
        try:
            while not self.window.should_close:
                self.frame()
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self.capture.recording:
            self.capture.stop_recording()
        if self.worker is not None:
            self.worker.stop()
        if self.window is not None:
            self.window.close()
            self.window = None

    # ------------------------------------------------------------------ scripted modes
    def wait_for_current(self, timeout: float = 600.0, settle_frames: int = 2) -> str | None:
        """Draw frames until the view shows a render of the current args (then ``settle_frames`` more).

        Returns None when ready, else a one-line error (render failed, or timed out).
        """
        deadline = time.perf_counter() + timeout
        ready = 0
        while ready <= settle_frames:
            if time.perf_counter() > deadline:
                return f'timed out after {timeout:.0f} s waiting for the render worker'
            self.frame()
            r = self.result
            if r is not None and r.args == self.args and r.error:
                return f'render failed: {r.error}'
            ready = ready + 1 if self.shown is not None and self.shown.args == self.args else 0
        return None

    def snapshot(self, path: str | None, timeout: float = 600.0) -> tuple[str | None, np.ndarray | None]:
        """Render the current state, draw the window, read its framebuffer and (if ``path``) write a PNG.

        Returns (error line or None, [H, W, 3] uint8 framebuffer or None).
        """
        err = self.wait_for_current(timeout)
        if err:
            return err, None
        self.request_window_capture(path or '')
        self.frame()
        return None, self.last_capture

    def benchmark(self, seconds: float = 10.0) -> dict[str, float]:
        """GUI FPS with the worker idle, then with the turntable on (worker busy all the time), and
        the worker's frame time split by stage. Returns the numbers (seconds / FPS)."""
        err = self.wait_for_current(600)
        if err:
            raise RuntimeError(err)

        def run_for(duration: float) -> tuple[int, float]:
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < duration:
                self.frame()
                n += 1
            return n, time.perf_counter() - t0

        n_idle, t_idle = run_for(seconds / 3)
        self.camera.turntable, self.camera.speed = True, 45.0
        completed0 = self.worker.completed
        totals: dict[str, list[float]] = {}
        seen = set()
        n_busy, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            self.frame()
            n_busy += 1
            r = self.shown
            if r is not None and r.serial not in seen and r.args.yaw != 0.0:
                seen.add(r.serial)
                for k, v in r.timings.items():
                    totals.setdefault(k, []).append(v)
        t_busy = time.perf_counter() - t0
        self.camera.turntable = False
        out = {'gui_fps_idle': n_idle / t_idle, 'gui_fps_rendering': n_busy / t_busy,
               'renders_per_s': (self.worker.completed - completed0) / t_busy}
        for k, v in totals.items():
            out[f'worker_{k}_ms_median'] = 1000 * float(np.median(v))
            out[f'worker_{k}_ms_mean'] = 1000 * float(np.mean(v))
        return out

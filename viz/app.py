"""The visualizer application: widgets, the render worker, the window and its main loop,
plus the scripted modes (``snapshot``, ``benchmark``).

Per GUI frame: poll events -> take a finished render (upload it with glTexSubImage2D) ->
keyboard -> animations -> draw the panel and the view -> rebuild RenderArgs from the
widgets and send them to the worker if they changed -> draw -> swap. The GUI never waits
for the worker.

Frames are drawn on demand (``step``): after input, when a render arrives, when the state
changed, and continuously only while something animates (turntable, latent animation,
recording). Otherwise the GUI thread sleeps in ``glfwWaitEventsTimeout``; the worker wakes
it when a render is done, and a timeout lets it follow a training run folder.
"""
from __future__ import annotations

import sys
import time
from typing import Callable

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

REDRAW_FRAMES_AFTER_EVENT = 3      # ImGui settles hover / release / layout over a couple of frames
MAX_IDLE_WAIT = 1.0                # seconds; the longest the loop sleeps without looking at the widgets
BUSY_IDLE_WAIT = 0.25              # seconds; while the worker renders, the status line is refreshed this often

KEYS_HELP = (
    'drag: orbit   scroll: radius   double-click: front   arrows: yaw/pitch 10 deg   '
    '1-6: render type   F1/F2/F3: sphere A/B/fused   F4: all three   O: seams overlay   '
    'D: difference view (comparing)   Space: turntable   PgUp/PgDn: seed   R: reset camera   S: save image   '
    'P: save window   Ctrl+Q: quit')


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
        self.compare_info: dict = {}                # network_info of the right-hand network (compare mode)
        self.args = self.build_args()
        self._submitted: RenderArgs | None = None
        self._window_capture: tuple[str, Callable[[str], None] | None] | None = None
        self.capture_error: str | None = None
        self.last_capture: np.ndarray | None = None
        self._redraw = REDRAW_FRAMES_AFTER_EVENT    # frames still to draw without a new event
        self.window = self.view = self.worker = None
        if open_window:
            from gui_utils.window import Window
            from viz.compare import PairRenderer
            from viz.view import View
            from viz.worker import RenderWorker
            self.window = Window('SphereHead visualizer', width, height, fps_limit=fps_limit)
            self.view = View(self)
            self.worker = RenderWorker(lambda: PairRenderer(device), on_result=self.window.wake)

    # ------------------------------------------------------------------ state
    def build_args(self) -> RenderArgs:
        """Widget state -> render arguments (no GL, no network)."""
        args = RenderArgs()
        for w in self.widgets:
            args = w.apply(args)
        return args

    def set_state(self, seed: int | None = None, yaw: float | None = None, pitch: float | None = None,
                  sphere: str | None = None, render: str | None = None, overlay: str | None = None,
                  side_by_side: bool | None = None, inspect: bool | None = None, compare: str | None = None,
                  difference: bool | None = None) -> None:
        """The command line's state flags, applied to the widgets (``compare``: a second network, '' = none)."""
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
        if compare is not None:
            self.network.set_compare(compare)
        if difference is not None:
            self.network.difference = bool(difference)
        self.args = self.build_args()

    def request_window_capture(self, path: str, report: Callable[[str], None] | None = None) -> None:
        """Write the next drawn frame (whole window) to ``path`` ('' = only keep it in ``last_capture``);
        ``report`` gets 'saved PATH' once the file is written, or why it was not."""
        self._window_capture = (path, report)

    @property
    def animating(self) -> bool:
        """Something changes every frame, so the window is redrawn continuously."""
        return bool(self.camera.turntable or self.latent.animate or self.capture.recording)

    # ------------------------------------------------------------------ frame
    def _poll_worker(self) -> None:
        result = self.worker.poll()
        if result is None:
            return
        self.result = result
        self._redraw = max(self._redraw, 2)
        if result.network_info:
            self.network_info = result.network_info
            self.network.loaded(result.network_info['source'])
        cmp = result.comparison
        if cmp is not None and cmp.right.network_info:
            self.compare_info = cmp.right.network_info
            self.network.compare_loaded(cmp.right.network_info['source'])
        if result.load_error:
            self.network.load_failed(result.failed_network, result.load_error)
        if cmp is not None and cmp.right.load_error:
            self.network.compare_load_failed(cmp.right.failed_network, cmp.right.load_error)
        if (result.load_error or (cmp is not None and cmp.right.load_error)) and result.image is not None \
                and self._submitted is not None \
                and self._submitted.replace(network=result.args.network, compare=result.args.compare) == result.args:
            self._submitted = result.args         # already rendered with the previous network(s): not again
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
        if pressed(K.d, False) and self.network.compare:
            self.network.difference = not self.network.difference
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
        imgui.text_disabled(f'{self.performance.gui_fps:.0f} FPS ' +
                            ('(animating)' if self.animating else '(on demand)'))
        imgui.push_item_width(-110)
        for w in self.widgets:
            if w.reveal:
                imgui.set_next_item_open(True)
                w.reveal = False
            else:
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
        if win.take_input_events():
            self._redraw = REDRAW_FRAMES_AFTER_EVENT
        dt = min(win.frame_time or 1 / 60, 0.25)
        for path in win.take_dropped_paths():
            self.network.load(path)
        self.network.poll_run()
        self._poll_worker()
        self._keyboard()
        for w in self.widgets:
            w.tick(dt)
        ww, wh = win.size
        panel_w = float(min(max(0.34 * ww, 300), 440))
        self._draw_panel(panel_w, wh)
        self.view.draw(panel_w, 0, ww - panel_w, wh)
        self.args = self.build_args()
        if self.args != self._submitted and self.args.network:     # '' = a followed run without snapshots yet
            self.worker.submit(self.args)
            self._submitted = self.args
        win.render()
        if self._window_capture is not None:
            (path, report), self._window_capture = self._window_capture, None
            self.last_capture = win.read_pixels()
            if path:
                self._write_capture(path, report)
        win.end_frame()
        self._redraw = max(self._redraw - 1, 0)
        self.performance.add_gui_frame(win.draw_time)

    def _write_capture(self, path: str, report: Callable[[str], None] | None) -> None:
        from PIL import Image
        try:
            Image.fromarray(self.last_capture).save(path)
            self.capture_error, message = None, f'saved {path}'
        except (OSError, ValueError) as e:
            self.capture_error = message = f'cannot write {path}: {e}'
        if report is not None:
            report(message)

    def needs_frame(self) -> bool:
        """Is there anything new to draw: recent input, a finished render, changed state, an animation?"""
        return (self._redraw > 0 or self.animating or self._window_capture is not None
                or self.worker.has_result or (self.build_args() != self._submitted and bool(self.network.network)))

    def step(self, max_wait: float = MAX_IDLE_WAIT) -> bool:
        """One turn of the main loop: draw a frame if anything is new, else sleep (no CPU) until input,
        a finished render, the next look into a followed run, or ``max_wait`` seconds. Returns whether
        a frame was drawn."""
        if not self.needs_frame():
            busy = self.worker.busy            # then the status line ('loading ...') is refreshed now and then
            wait = min(max_wait, BUSY_IDLE_WAIT) if busy else max_wait
            follow = self.network.seconds_to_next_poll()
            if follow is not None:
                wait = min(wait, follow)
            if self.window.wait_events(wait):
                self._redraw = REDRAW_FRAMES_AFTER_EVENT
            self.network.poll_run()
            if not busy and not self.needs_frame():
                return False
        self.frame()
        return True

    def run(self) -> None:
        try:
            while not self.window.should_close:
                self.step()
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

        Returns None when ready, else a one-line error (the network did not load, the render
        failed, or timed out).
        """
        deadline = time.perf_counter() + timeout
        requested, requested_compare = self.network.network, self.network.compare
        ready = 0
        while ready <= settle_frames:
            if time.perf_counter() > deadline:
                return f'timed out after {timeout:.0f} s waiting for the render worker'
            self.frame()
            if self.network.error and self.network.failed == requested:
                return f'cannot load {self.network.failed}: {self.network.error}'
            if self.network.compare_error and requested_compare and self.network.compare_failed == requested_compare:
                return f'cannot load {self.network.compare_failed} (--compare): {self.network.compare_error}'
            r = self.result
            if r is not None and r.args == self.args and r.error:
                return r.error if r.load_error else f'render failed: {r.error}'
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
        return self.capture_error, self.last_capture

    def benchmark(self, seconds: float = 10.0) -> dict[str, float]:
        """The main loop as it runs for a user, measured: first with nothing changing (frames drawn
        per second and CPU use of the whole process), then with the turntable on (GUI frame rate,
        draw time, renders per second, the worker's frame time by stage). Returns the numbers."""
        err = self.wait_for_current(600)
        if err:
            raise RuntimeError(err)
        for _ in range(REDRAW_FRAMES_AFTER_EVENT + 2):      # let the last input / render settle
            self.frame()

        def loop(duration: float, on_frame: Callable[[], None] | None = None) -> tuple[int, float, float]:
            f0, cpu0, t0 = self.window.frame_index, time.process_time(), time.perf_counter()
            while time.perf_counter() - t0 < duration:
                if self.step(max_wait=min(MAX_IDLE_WAIT, duration)) and on_frame is not None:
                    on_frame()
            wall = time.perf_counter() - t0
            return self.window.frame_index - f0, wall, time.process_time() - cpu0

        n_idle, t_idle, cpu_idle = loop(seconds / 3)
        self.camera.turntable, self.camera.speed = True, 45.0
        completed0 = self.worker.completed
        totals: dict[str, list[float]] = {}
        draw_ms: list[float] = []
        seen = set()

        def on_frame() -> None:
            draw_ms.append(1000.0 * self.window.draw_time)
            r = self.shown
            if r is not None and r.serial not in seen and r.args.yaw != 0.0:
                seen.add(r.serial)
                for k, v in r.timings.items():
                    totals.setdefault(k, []).append(v)
        n_busy, t_busy, cpu_busy = loop(seconds, on_frame)
        self.camera.turntable = False
        out = {'gui_frames_per_s_idle': n_idle / t_idle, 'cpu_percent_idle': 100.0 * cpu_idle / t_idle,
               'gui_fps_animating': n_busy / t_busy, 'gui_draw_ms_median': float(np.median(draw_ms or [0.0])),
               'cpu_percent_animating': 100.0 * cpu_busy / t_busy,
               'renders_per_s': (self.worker.completed - completed0) / t_busy}
        for k, v in totals.items():
            out[f'worker_{k}_ms_median'] = 1000 * float(np.median(v))
            out[f'worker_{k}_ms_mean'] = 1000 * float(np.mean(v))
        return out

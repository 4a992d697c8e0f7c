"""Performance: GUI frames drawn per second and their draw time, the worker's frame time split
by stage, and a plot of both.

The window is redrawn on demand, so the FPS figure counts the frames actually drawn in the
last second (near 0 while nothing changes, up to the cap while animating), never the rate
the loop could reach.
"""
from __future__ import annotations

import collections
import time

import numpy as np
from imgui_bundle import imgui, implot

from viz.widget import Widget

STAGES = ('load', 'mapping', 'backbone', 'render', 'superres', 'post', 'upload')


class PerformanceWidget(Widget):
    title = 'Performance'

    def __init__(self, viz=None, history: int = 240) -> None:
        super().__init__(viz)
        self.gui_ms: collections.deque = collections.deque(maxlen=history)     # draw time per frame
        self._frame_times: collections.deque = collections.deque(maxlen=1000)   # time.perf_counter() per frame
        self.worker_ms: collections.deque = collections.deque(maxlen=history)
        self.side_ms = {'left': collections.deque(maxlen=history), 'right': collections.deque(maxlen=history)}
        self.last_split: dict[str, float] = {}
        self.last_cached = False

    def add_gui_frame(self, draw_seconds: float, now: float | None = None) -> None:
        """One frame was drawn, taking ``draw_seconds`` (without the frame-rate cap's sleep)."""
        self.gui_ms.append(1000.0 * draw_seconds)
        self._frame_times.append(time.perf_counter() if now is None else now)

    def add_worker_frame(self, timings: dict[str, float], cached: bool) -> None:
        self.worker_ms.append(1000.0 * timings.get('total', 0.0))
        for side, ms in self.side_ms.items():       # compare mode: each side's own render time
            if side in timings:
                ms.append(1000.0 * timings[side])
        self.last_split = dict(timings)
        self.last_cached = cached

    def frames_in_last(self, seconds: float = 1.0, now: float | None = None) -> int:
        now = time.perf_counter() if now is None else now
        return sum(1 for t in self._frame_times if now - t <= seconds)

    @property
    def gui_fps(self) -> float:
        """Frames drawn in the last second."""
        return float(self.frames_in_last(1.0))

    @property
    def draw_ms(self) -> float:
        """Median draw time of the recent frames (ms)."""
        recent = list(self.gui_ms)[-60:]
        return float(np.median(recent)) if recent else 0.0

    def side_fps(self, side: str) -> float:
        """Compare mode: renders per second one side alone would reach (mean of its recent render times)."""
        recent = list(self.side_ms[side])[-10:]
        return 1000.0 / float(np.mean(recent)) if recent and np.mean(recent) > 0 else 0.0

    @property
    def worker_fps(self) -> float:
        recent = list(self.worker_ms)[-10:]
        return 1000.0 / float(np.mean(recent)) if recent else 0.0

    def draw(self) -> None:
        imgui.text(f'GUI {self.gui_fps:3.0f} FPS, {self.draw_ms:4.1f} ms to draw a frame')
        imgui.text_wrapped('Redrawn on input, a new render or a state change, and continuously only while '
                           'animating (turntable, latent animation, recording).')
        imgui.text(f'renders {self.worker_fps:5.1f} /s')
        if self.viz is not None and self.viz.args.compare and self.side_ms['left']:
            imgui.text_wrapped(f"comparing: left {self.side_fps('left'):.1f} /s, right {self.side_fps('right'):.1f} /s "
                               '(one after the other on the worker: a pair takes both)')
        if self.last_split:
            parts = [f'{k} {1000 * self.last_split[k]:.1f}' for k in STAGES if k in self.last_split]
            imgui.text_wrapped('last render (ms): ' + ', '.join(parts) +
                               f'; total {1000 * self.last_split.get("total", 0):.1f}' +
                               ('  [backbone cached]' if self.last_cached else ''))
        if self.viz is not None and self.viz.worker is not None:
            w = self.viz.worker
            imgui.text_disabled(f'requests {w.submitted}, rendered {w.completed}, dropped as stale {w.dropped}')
        if implot.begin_plot('##frametimes', imgui.ImVec2(-1, 130)):
            implot.setup_axes('frame', 'ms')
            implot.setup_axis_limits(implot.ImAxis_.y1.value, 0, max(50.0, float(np.max(self.worker_ms)) if self.worker_ms else 50.0) * 1.1,
                                     implot.Cond_.always.value)
            if self.gui_ms:
                implot.plot_line('GUI draw', np.asarray(self.gui_ms, dtype=np.float64))
            if self.worker_ms:
                implot.plot_line('render', np.asarray(self.worker_ms, dtype=np.float64))
            implot.end_plot()

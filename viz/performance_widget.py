"""Performance: GUI frame time / FPS plot and the worker's frame time split by stage."""
from __future__ import annotations

import collections

import numpy as np
from imgui_bundle import imgui, implot

from viz.widget import Widget

STAGES = ('load', 'mapping', 'backbone', 'render', 'superres', 'post', 'upload')


class PerformanceWidget(Widget):
    title = 'Performance'

    def __init__(self, viz=None, history: int = 240) -> None:
        super().__init__(viz)
        self.gui_ms: collections.deque = collections.deque(maxlen=history)
        self.worker_ms: collections.deque = collections.deque(maxlen=history)
        self.last_split: dict[str, float] = {}
        self.last_cached = False

    def add_gui_frame(self, seconds: float) -> None:
        self.gui_ms.append(1000.0 * seconds)

    def add_worker_frame(self, timings: dict[str, float], cached: bool) -> None:
        self.worker_ms.append(1000.0 * timings.get('total', 0.0))
        self.last_split = dict(timings)
        self.last_cached = cached

    @property
    def gui_fps(self) -> float:
        recent = list(self.gui_ms)[-60:]
        return 1000.0 / float(np.mean(recent)) if recent else 0.0

    @property
    def worker_fps(self) -> float:
        recent = list(self.worker_ms)[-10:]
        return 1000.0 / float(np.mean(recent)) if recent else 0.0

    def draw(self) -> None:
        imgui.text(f'GUI {self.gui_fps:5.1f} FPS   renders {self.worker_fps:5.1f} /s')
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
                implot.plot_line('GUI', np.asarray(self.gui_ms, dtype=np.float64))
            if self.worker_ms:
                implot.plot_line('render', np.asarray(self.worker_ms, dtype=np.float64))
            implot.end_plot()

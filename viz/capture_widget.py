"""Capture: save the image, save the whole window, record a turntable video.

The turntable is recorded frame by frame in lockstep with the worker: frame k asks for
yaw = start + 360 k / N and is written when the worker returns exactly that frame.
"""
from __future__ import annotations

import os
import time

from imgui_bundle import imgui

from viz.camera_widget import wrap_yaw
from viz.render_args import RenderArgs
from viz.widget import Widget


def _stamp() -> str:
    return time.strftime('%Y%m%d-%H%M%S')


class CaptureWidget(Widget):
    title = 'Capture'

    def __init__(self, viz=None) -> None:
        super().__init__(viz)
        self.outdir = 'out'
        self.frames = 72
        self.fps = 24
        self.recording = False
        self.message = ''
        self._k = 0
        self._start_yaw = 0.0
        self._writer = None
        self._path = ''
        self._last_serial = -1

    # ---- saving ------------------------------------------------------------------------------------
    def image_path(self, args: RenderArgs) -> str:
        return os.path.join(self.outdir, f'seed{args.seed:04d}-{args.sphere}-{args.render_type}-'
                                         f'yaw{args.yaw:+.0f}-pitch{args.pitch:+.0f}-{_stamp()}.png')

    def save_image(self) -> str:
        result = self.viz.shown if self.viz else None
        if result is None or result.image is None:
            return 'nothing rendered yet'
        from PIL import Image
        path = self.image_path(result.args)
        os.makedirs(self.outdir, exist_ok=True)
        Image.fromarray(result.image).save(path)
        return f'saved {path}'

    def save_window(self) -> str:
        path = os.path.join(self.outdir, f'window-{_stamp()}.png')
        os.makedirs(self.outdir, exist_ok=True)
        self.viz.request_window_capture(path)
        return f'saving {path}'

    # ---- turntable ----------------------------------------------------------------------------------
    def start_recording(self) -> str:
        import imageio.v2 as imageio
        os.makedirs(self.outdir, exist_ok=True)
        self._path = os.path.join(self.outdir, f'turntable-{_stamp()}.mp4')
        self._writer = imageio.get_writer(self._path, fps=self.fps, codec='libx264', quality=8,
                                          macro_block_size=1)
        self._k = 0
        self._last_serial = -1
        self._start_yaw = self.viz.camera.yaw
        self.viz.camera.turntable = False
        self.recording = True
        return f'recording {self._path}'

    def stop_recording(self) -> str:
        self.recording = False
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return f'wrote {self._k} frames to {self._path}'

    def frame_yaw(self) -> float:
        return wrap_yaw(self._start_yaw + 360.0 * self._k / max(self.frames, 1))

    def apply(self, args: RenderArgs) -> RenderArgs:
        return args.replace(yaw=round(self.frame_yaw(), 4)) if self.recording else args

    def tick(self, dt: float) -> None:
        """While recording: write the shown frame once it is the one asked for, then ask for the next."""
        if not self.recording or self.viz is None:
            return
        viz = self.viz
        r = viz.result
        if r is not None and r.error and r.args == viz.args:
            self.message = self.stop_recording() + f' (stopped: {r.error})'
            return
        shown = viz.shown
        if shown is None or shown.serial == self._last_serial or shown.args != viz.args \
                or shown.args.yaw != round(self.frame_yaw(), 4):
            return
        self._last_serial = shown.serial
        self._writer.append_data(shown.image)
        self._k += 1
        if self._k >= self.frames:
            self.message = self.stop_recording()
            viz.camera.set_view(yaw=self._start_yaw)

    def draw(self) -> None:
        imgui.set_next_item_width(-70)
        _, self.outdir = imgui.input_text('folder', self.outdir)
        if imgui.button('save image [S]'):
            self.message = self.save_image()
        imgui.same_line()
        if imgui.button('save window [P]'):
            self.message = self.save_window()
        imgui.set_next_item_width(90)
        _, self.frames = imgui.input_int('frames', self.frames, 12)
        self.frames = max(2, min(self.frames, 3600))
        imgui.same_line()
        imgui.set_next_item_width(80)
        _, self.fps = imgui.input_int('fps', self.fps, 1)
        self.fps = max(1, min(self.fps, 60))
        if not self.recording:
            if imgui.button('record turntable video'):
                try:
                    self.message = self.start_recording()
                except Exception as e:  # noqa: BLE001 - e.g. no ffmpeg: say so in the window
                    self.message = f'cannot record: {type(e).__name__}: {e}'
        else:
            imgui.progress_bar(self._k / max(self.frames, 1), imgui.ImVec2(-80, 0), f'{self._k}/{self.frames}')
            imgui.same_line()
            if imgui.button('stop'):
                self.message = self.stop_recording()
        if self.message:
            imgui.text_wrapped(self.message)

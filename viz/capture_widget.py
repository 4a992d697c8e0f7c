"""Capture: save the image, save the whole window, record a turntable video, export the head.

The turntable is recorded frame by frame in lockstep with the worker: frame k asks for
yaw = start + 360 k / N and is written when the worker returns exactly that frame.
Messages name a file only once it is written; a recording that got no frame leaves no file.

Export writes the current head (latent and sphere mode) as a coloured mesh (.glb) or as Gaussian
splats (3DGS .ply). The render worker does the work (it owns the network); the panel only asks
and shows the line that comes back.
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
        self.mesh_resolution = 128                # marching-cubes grid (256 takes minutes on a CPU)
        self.splat_count = 300_000
        self.splat_resolution = 256               # sampling grid of the splats (not in the panel)
        self.exporting: str | None = None       # 'mesh' or 'splats' while the worker exports
        self._export_task = 0

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
        try:
            os.makedirs(self.outdir, exist_ok=True)
            Image.fromarray(result.image).save(path)
        except (OSError, ValueError) as e:
            return f'cannot save the image: {e}'
        return f'saved {path}'

    def save_window(self) -> str:
        """Ask for the next frame to be written; the message becomes 'saved PATH' once it is."""
        path = os.path.join(self.outdir, f'window-{_stamp()}.png')
        try:
            os.makedirs(self.outdir, exist_ok=True)
        except OSError as e:
            return f'cannot save the window: {e}'

        def report(message: str) -> None:
            self.message = message
        self.viz.request_window_capture(path, report)
        return f'writing {path} ...'

    # ---- export ---------------------------------------------------------------------------------------
    def export_path(self, args: RenderArgs, kind: str) -> str:
        ext = '.glb' if kind == 'mesh' else '.ply'
        return os.path.join(self.outdir, f'seed{args.seed:04d}-{args.sphere}-{kind}-{_stamp()}{ext}')

    def export_head(self, kind: str) -> str:
        """Ask the worker to export the current head ('mesh' or 'splats'); the line that says what was
        written replaces the message when it is done."""
        worker = getattr(self.viz, 'worker', None) if self.viz else None
        if worker is None:
            return 'cannot export: no render worker'
        if self.exporting:
            return f'an export ({self.exporting}) is still running'
        args = self.viz.args
        path = self.export_path(args, kind)
        try:
            os.makedirs(self.outdir, exist_ok=True)
        except OSError as e:
            return f'cannot export: {e}'
        options = dict(mesh_resolution=int(self.mesh_resolution), splat_count=int(self.splat_count),
                       splat_resolution=int(self.splat_resolution))
        self._export_task = worker.submit_task(lambda renderer: renderer.export_head(args, path, kind, **options))
        self.exporting = kind
        return f'exporting {kind} to {path} ...'

    def _collect_exports(self) -> None:
        worker = getattr(self.viz, 'worker', None) if self.viz else None
        if worker is None or not self.exporting:
            return
        for task_id, line in worker.poll_tasks():
            if task_id == self._export_task:
                self.message, self.exporting = line, None

    # ---- turntable ----------------------------------------------------------------------------------
    def start_recording(self) -> str:
        import imageio.v2 as imageio
        os.makedirs(self.outdir, exist_ok=True)
        self._path = os.path.join(self.outdir, f'turntable-{_stamp()}.mp4')
        if os.path.exists(self._path):      # never overwrite (and then delete) a file of an earlier recording
            self._path = self._path[:-4] + f'-{time.perf_counter_ns() % 1000000:06d}.mp4'
        self._writer = imageio.get_writer(self._path, fps=self.fps, codec='libx264', quality=8,
                                          macro_block_size=1)
        self._k = 0
        self._last_serial = -1
        self._start_yaw = self.viz.camera.yaw
        self.viz.camera.turntable = False
        self.recording = True
        return f'recording {self._path}'

    def stop_recording(self, reason: str | None = None) -> str:
        """Close the video. Returns what happened: the frames written and the file, or that there is no file."""
        self.recording = False
        error = None
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception as e:  # noqa: BLE001 - e.g. ffmpeg failed: say so, do not claim the file
                error = f'{type(e).__name__}: {e}'
            self._writer = None
        why = f' ({reason})' if reason else ''
        if self._k == 0 or error or not os.path.isfile(self._path):
            if os.path.isfile(self._path):
                os.remove(self._path)          # an empty or broken video is worse than none
            return f'no video written: {error or "no frame was recorded"}{why}'
        return f'wrote {self._k} frames to {self._path}{why}'

    def frame_yaw(self) -> float:
        return wrap_yaw(self._start_yaw + 360.0 * self._k / max(self.frames, 1))

    def apply(self, args: RenderArgs) -> RenderArgs:
        return args.replace(yaw=round(self.frame_yaw(), 4)) if self.recording else args

    def tick(self, dt: float) -> None:
        """Collect a finished export. While recording: write the shown frame once it is the one asked for,
        then ask for the next."""
        self._collect_exports()
        if not self.recording or self.viz is None:
            return
        viz = self.viz
        r = viz.result
        if r is not None and r.error and r.args == viz.args:
            self.message = self.stop_recording(f'stopped: {r.error}')
            return
        shown = viz.shown
        if shown is None or shown.serial == self._last_serial or shown.args != viz.args \
                or shown.args.yaw != round(self.frame_yaw(), 4):
            return
        self._last_serial = shown.serial
        try:
            self._writer.append_data(shown.image)
        except Exception as e:  # noqa: BLE001 - the encoder failed: stop and say so
            self.message = self.stop_recording(f'stopped: {type(e).__name__}: {e}')
            return
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
        imgui.separator()
        imgui.set_next_item_width(90)
        _, self.mesh_resolution = imgui.input_int('mesh res', self.mesh_resolution, 32)
        self.mesh_resolution = max(32, min(self.mesh_resolution, 512))
        imgui.same_line()
        imgui.set_next_item_width(110)
        _, self.splat_count = imgui.input_int('splats', self.splat_count, 50_000)
        self.splat_count = max(1000, min(self.splat_count, 5_000_000))
        if self.exporting:
            imgui.text_disabled(f'exporting {self.exporting} ...')
        else:
            if imgui.button('export mesh (.glb)'):
                self.message = self.export_head('mesh')
            imgui.same_line()
            if imgui.button('export splats (.ply)'):
                self.message = self.export_head('splats')
        if self.message:
            imgui.text_wrapped(self.message)

"""The application window: glfw + an OpenGL 3.3 core context + an ImGui context drawn by
imgui-bundle's pure-Python glfw backend.

Typical frame::

    win.begin_frame()        # poll events, start an ImGui frame
    ...imgui calls...
    win.render()             # clear + draw ImGui into the back buffer
    pixels = win.read_pixels()   # optional: what is about to be shown
    win.end_frame()          # swap buffers (+ frame limiter)

Between frames an application that has nothing new to show calls ``wait_events(timeout)``:
the thread sleeps until input arrives, another thread calls ``wake()`` or the timeout
passes, and the return value says how many input events came (so it knows whether to draw).
"""
from __future__ import annotations

import time

import glfw
import numpy as np

from gui_utils.display import NoDisplayError, display_problem, glfw_failure_message


def _glfw_error_text() -> str | None:
    try:
        code, text = glfw.get_error()
    except Exception:  # noqa: BLE001 - older glfw bindings
        return None
    if not code:
        return None
    return text.decode(errors='replace') if isinstance(text, bytes) else str(text)


class Window:
    """A glfw window with GL 3.3 core and ImGui. Raises NoDisplayError (one-line message) when it cannot open.

    ``fps_limit``: the frame rate is capped by vsync where the driver honours it, and in any
    case by sleeping (Xvfb / software GL have no vsync); 0 = uncapped.
    """

    def __init__(self, title: str = 'SphereHead', width: int = 1280, height: int = 800,
                 fps_limit: float = 60.0, font_size: float = 15.0, visible: bool = True) -> None:
        problem = display_problem()
        if problem:
            raise NoDisplayError(problem)
        glfw.ERROR_REPORTING = 'ignore'   # we check return values and read glfw.get_error ourselves
        if not glfw.init():
            raise NoDisplayError(glfw_failure_message('cannot initialise glfw', _glfw_error_text()))
        glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
        glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
        glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
        glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, True)
        glfw.window_hint(glfw.VISIBLE, bool(visible))
        handle = glfw.create_window(int(width), int(height), title, None, None)
        if not handle:
            detail = _glfw_error_text()
            glfw.terminate()
            raise NoDisplayError(glfw_failure_message('cannot open an OpenGL 3.3 core window', detail))
        self.handle = handle
        glfw.make_context_current(handle)
        glfw.swap_interval(1 if fps_limit else 0)

        # GL and ImGui imports wait until a context exists (PyOpenGL binds lazily, but keep it explicit).
        import OpenGL.GL as gl
        from imgui_bundle import imgui, implot
        from imgui_bundle.python_backends.glfw_backend import GlfwRenderer

        from gui_utils.fonts import load_fonts
        self._gl = gl
        self._imgui = imgui
        imgui.create_context()
        implot.create_context()
        io = imgui.get_io()
        io.set_ini_filename('')          # no imgui.ini written into the user's folder
        io.config_flags |= imgui.ConfigFlags_.nav_enable_keyboard.value
        self.fonts = load_fonts(font_size)
        imgui.style_colors_dark()
        self.renderer = GlfwRenderer(handle)
        self.gl_renderer = gl.glGetString(gl.GL_RENDERER).decode(errors='replace')
        self.gl_version = gl.glGetString(gl.GL_VERSION).decode(errors='replace')

        self.fps_limit = float(fps_limit)
        self.dropped_paths: list[str] = []
        self._input_events = 0
        self._count_input_events()
        glfw.set_drop_callback(handle, self._on_drop)
        self.frame_index = 0
        self.frame_time = 0.0          # seconds between the last two frames
        self.draw_time = 0.0           # seconds the last frame took to draw, without the frame-rate cap's sleep
        self._frame_start = self._last_frame = time.perf_counter()
        self._closed = False

    # ---- events -------------------------------------------------------------------------------
    def _count_input_events(self) -> None:
        """Count every event that can change what the window should show: input (chained in front of
        the ImGui backend's own callbacks), resizing, focus, exposure (refresh)."""
        def counting(setter):
            previous = None

            def callback(*args):
                self._input_events += 1
                if previous is not None:
                    previous(*args)
            previous = setter(self.handle, callback)
        for setter in (glfw.set_key_callback, glfw.set_char_callback, glfw.set_cursor_pos_callback,
                       glfw.set_mouse_button_callback, glfw.set_scroll_callback, glfw.set_window_size_callback,
                       glfw.set_framebuffer_size_callback, glfw.set_window_focus_callback,
                       glfw.set_cursor_enter_callback, glfw.set_window_refresh_callback,
                       glfw.set_window_iconify_callback):
            counting(setter)

    def _on_drop(self, _window, paths) -> None:
        self._input_events += 1
        self.dropped_paths.extend(str(p) for p in paths)

    def take_input_events(self) -> int:
        """How many input / window events arrived since the last call."""
        n, self._input_events = self._input_events, 0
        return n

    def wait_events(self, timeout: float) -> int:
        """Sleep until an event arrives, ``wake()`` is called or ``timeout`` seconds pass
        (no CPU is used meanwhile). Returns the number of input events that arrived."""
        glfw.wait_events_timeout(max(float(timeout), 0.0))
        return self.take_input_events()

    def wake(self) -> None:
        """End a ``wait_events`` of the GUI thread; callable from any thread."""
        if not self._closed:
            glfw.post_empty_event()

    def take_dropped_paths(self) -> list[str]:
        paths, self.dropped_paths = self.dropped_paths, []
        return paths

    @property
    def should_close(self) -> bool:
        return bool(glfw.window_should_close(self.handle))

    def request_close(self) -> None:
        glfw.set_window_should_close(self.handle, True)

    @property
    def size(self) -> tuple[int, int]:
        """Window size in screen coordinates (what ImGui positions are in)."""
        return tuple(glfw.get_window_size(self.handle))

    @property
    def framebuffer_size(self) -> tuple[int, int]:
        return tuple(glfw.get_framebuffer_size(self.handle))

    def set_title(self, title: str) -> None:
        glfw.set_window_title(self.handle, title)

    # ---- frame ---------------------------------------------------------------------------------
    def begin_frame(self) -> None:
        self._frame_start = time.perf_counter()
        glfw.poll_events()
        self.renderer.process_inputs()
        self._imgui.new_frame()

    def render(self, clear_color=(0.08, 0.08, 0.09, 1.0)) -> None:
        """Finish the ImGui frame and draw it into the back buffer."""
        gl, imgui = self._gl, self._imgui
        imgui.render()
        fw, fh = self.framebuffer_size
        gl.glViewport(0, 0, fw, fh)
        gl.glClearColor(*clear_color)
        gl.glClear(gl.GL_COLOR_BUFFER_BIT)
        self.renderer.render(imgui.get_draw_data())

    def read_pixels(self) -> np.ndarray:
        """[H, W, 3] uint8 of the back buffer (call after render(), before end_frame()); row 0 = top."""
        gl = self._gl
        fw, fh = self.framebuffer_size
        gl.glReadBuffer(gl.GL_BACK)
        gl.glPixelStorei(gl.GL_PACK_ALIGNMENT, 1)
        data = gl.glReadPixels(0, 0, fw, fh, gl.GL_RGB, gl.GL_UNSIGNED_BYTE)
        return np.frombuffer(data, dtype=np.uint8).reshape(fh, fw, 3)[::-1].copy()

    def end_frame(self) -> None:
        """Swap buffers and hold the frame rate at ``fps_limit``."""
        glfw.swap_buffers(self.handle)
        self.draw_time = time.perf_counter() - self._frame_start
        if self.fps_limit > 0:
            target = 1.0 / self.fps_limit
            spare = target - (time.perf_counter() - self._last_frame)
            if spare > 0:
                time.sleep(spare)
        now = time.perf_counter()
        self.frame_time = now - self._last_frame
        self._last_frame = now
        self.frame_index += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        from imgui_bundle import implot
        try:
            self.renderer.shutdown()
        finally:
            implot.destroy_context()
            self._imgui.destroy_context()
            glfw.destroy_window(self.handle)
            glfw.terminate()

"""Camera: orbit (drag on the image), radius (scroll), sliders, presets and an auto-turntable.

yaw in degrees, (-180, 180], 0 = front, 90 = camera at the head's left (+x), 180 = back;
pitch in degrees, [-90, 90], +90 = from above; radius and FOV as in spherehead.camera.
"""
from __future__ import annotations

from imgui_bundle import imgui

from spherehead.camera import DEFAULT_RADIUS, RELEASED_FOV_DEG
from viz.render_args import RenderArgs
from viz.widget import Widget

PRESETS = {  # name -> (yaw, pitch)
    'front': (0.0, 0.0), 'left': (90.0, 0.0), 'right': (-90.0, 0.0),
    'back': (180.0, 0.0), 'top': (0.0, 90.0), 'bottom': (0.0, -90.0),
}
DRAG_DEG_PER_PIXEL = 0.4
RADIUS_RANGE = (1.5, 6.0)


def wrap_yaw(yaw: float) -> float:
    """Any angle in degrees -> (-180, 180]."""
    y = (float(yaw) + 180.0) % 360.0 - 180.0
    return 180.0 if y == -180.0 else y


class CameraWidget(Widget):
    title = 'Camera'
    default_open = True

    def __init__(self, viz=None) -> None:
        super().__init__(viz)
        self.yaw = 0.0
        self.pitch = 0.0
        self.radius = DEFAULT_RADIUS
        self.fov = RELEASED_FOV_DEG
        self.turntable = False
        self.speed = 30.0          # degrees per second

    # ---- state changes (also used by the mouse and the keyboard) ------------------------------
    def set_view(self, yaw: float | None = None, pitch: float | None = None) -> None:
        if yaw is not None:
            self.yaw = wrap_yaw(yaw)
        if pitch is not None:
            self.pitch = max(-90.0, min(90.0, float(pitch)))

    def preset(self, name: str) -> None:
        self.set_view(*PRESETS[name])

    def drag(self, dx: float, dy: float) -> None:
        """Mouse drag of (dx, dy) pixels on the image: right = orbit to the right, up = from above."""
        self.set_view(self.yaw - dx * DRAG_DEG_PER_PIXEL, self.pitch + dy * DRAG_DEG_PER_PIXEL)

    def zoom(self, wheel: float) -> None:
        """Scroll: one notch in = 5 % closer."""
        self.radius = max(RADIUS_RANGE[0], min(RADIUS_RANGE[1], self.radius * (0.95 ** wheel)))

    def reset(self) -> None:
        self.yaw, self.pitch, self.radius, self.fov = 0.0, 0.0, DEFAULT_RADIUS, RELEASED_FOV_DEG

    def tick(self, dt: float) -> None:
        if self.turntable:
            self.set_view(yaw=self.yaw + self.speed * dt)

    def apply(self, args: RenderArgs) -> RenderArgs:
        return args.replace(yaw=round(self.yaw, 4), pitch=round(self.pitch, 4),
                            radius=round(self.radius, 4), fov=round(self.fov, 4))

    def draw(self) -> None:
        _, yaw = imgui.slider_float('yaw', self.yaw, -180.0, 180.0, '%.1f deg')
        _, pitch = imgui.slider_float('pitch', self.pitch, -90.0, 90.0, '%.1f deg')
        self.set_view(yaw, pitch)
        _, self.radius = imgui.slider_float('radius', self.radius, *RADIUS_RANGE, '%.2f')
        _, self.fov = imgui.slider_float('FOV', self.fov, 5.0, 60.0, '%.2f deg')
        for i, name in enumerate(PRESETS):
            if i % 4:
                imgui.same_line()
            if imgui.small_button(name):
                self.preset(name)
        imgui.same_line()
        if imgui.small_button('reset'):
            self.reset()
        _, self.turntable = imgui.checkbox('turntable', self.turntable)
        imgui.same_line()
        imgui.set_next_item_width(-60)
        _, self.speed = imgui.slider_float('deg/s', self.speed, -180.0, 180.0, '%.0f')

"""Quality: neural rendering resolution and samples per ray (0 = the model's own), backbone caching."""
from __future__ import annotations

from imgui_bundle import imgui

from gui_utils.widgets import help_marker
from viz.render_args import RenderArgs
from viz.widget import Widget


class QualityWidget(Widget):
    title = 'Quality'

    def __init__(self, viz=None) -> None:
        super().__init__(viz)
        self.resolution = 0            # 0 = model default
        self.depth_samples = 0
        self.importance_samples = -1   # -1 = model default (0 is meaningful: no fine pass)
        self.cache_backbone = True

    def apply(self, args: RenderArgs) -> RenderArgs:
        return args.replace(
            neural_rendering_resolution=int(self.resolution) if self.resolution > 0 else None,
            depth_resolution=int(self.depth_samples) if self.depth_samples > 0 else None,
            depth_resolution_importance=int(self.importance_samples) if self.importance_samples >= 0 else None,
            cache_backbone=bool(self.cache_backbone))

    def draw(self) -> None:
        cfg = (self.viz.network_info.get('config') if self.viz else None) or {}
        r = cfg.get('rendering', {})
        _, self.resolution = imgui.slider_int(
            'render res', self.resolution, 0, 512,
            f'model ({r.get("neural_rendering_resolution", "?")})' if self.resolution == 0 else '%d px')
        _, self.depth_samples = imgui.slider_int(
            'coarse samples', self.depth_samples, 0, 128,
            f'model ({r.get("depth_resolution", "?")})' if self.depth_samples == 0 else '%d')
        _, self.importance_samples = imgui.slider_int(
            'fine samples', self.importance_samples, -1, 128,
            f'model ({r.get("depth_resolution_importance", "?")})' if self.importance_samples < 0 else '%d')
        _, self.cache_backbone = imgui.checkbox('cache backbone planes', self.cache_backbone)
        help_marker('Reuse the feature planes while only the camera, sphere mode, render type or quality '
                    'changes: the StyleGAN2 backbone runs only when the latent changes.')

"""The generator: StyleGAN2 backbone -> feature planes (spheres, tri-plane or tri-grid) ->
volume rendering -> raw image, parsing, super-resolution.

Public calls (see DESIGN.md): ``G.mapping(z, c, ...)`` -> ws, ``G.synthesis(ws, c, sphere=...)``
-> dict of images, ``G(z, c)`` = mapping + camera offset + synthesis.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import torch
import torch.nn.functional as F

from spherehead.config import NUM_PARSING_CLASSES, GeneratorConfig
from spherehead.networks.decoder import FeatureDecoder
from spherehead.networks.layers import Conv2dLayer
from spherehead.networks.mapping import MappingNetwork
from spherehead.networks.superresolution import SuperResolution
from spherehead.networks.synthesis import StyleGAN2Backbone, SynthesisNetwork, ToRGBLayer
from spherehead.render.cartesian import sample_trigrid, sample_triplane
from spherehead.render.importance import ImportanceRenderer
from spherehead.render.rays import camera_rays
from spherehead.render.spherical import sample_dual_sphere

Planes = dict[str, torch.Tensor]


def sphere_head(in_channels: int, hidden: int, out_channels: int) -> torch.nn.Sequential:
    """1x1-conv head (in -> hidden -> out, no bias, linear) turning the backbone map into one sphere's planes."""
    return torch.nn.Sequential(Conv2dLayer(in_channels, hidden, kernel_size=1, bias=False),
                               Conv2dLayer(hidden, out_channels, kernel_size=1, bias=False))


class Generator(torch.nn.Module):
    """SphereHead generator, and the tri-plane / tri-grid / single-sphere baselines (``config.representation``)."""

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = cfg = config
        r = cfg.rendering
        self.z_dim, self.c_dim, self.w_dim = cfg.z_dim, cfg.c_dim, cfg.w_dim
        self.img_resolution = cfg.img_resolution
        C = cfg.feature_channels
        # Grouped (fused) modulated convolutions only at inference; training uses the plain form,
        # as the StyleGAN2 family does (same values, faster and lighter gradients).
        synthesis_kwargs = dict(channel_base=cfg.channel_base, channel_max=cfg.channel_max, num_fp16_res=0,
                                conv_clamp=cfg.conv_clamp, fused_modconv_default='inference_only')
        mapping_kwargs = dict(num_layers=cfg.mapping_layers)
        self.backbone = StyleGAN2Backbone(cfg.z_dim, cfg.c_dim, cfg.w_dim, img_resolution=cfg.triplane_size,
                                          img_channels=cfg.backbone_out_channels, mapping_kwargs=mapping_kwargs,
                                          **synthesis_kwargs)
        self.heads = torch.nn.ModuleDict()
        if cfg.is_sphere:
            names = ('A', 'B')[:cfg.num_spheres]
            for name in names:
                self.heads[name] = sphere_head(cfg.backbone_channels, cfg.head_hidden_channels,
                                               C * cfg.planes_per_sphere)
        self.decoder = FeatureDecoder(C, C, lr_multiplier=r.decoder_lr_mul, activation=r.decoder_activation)
        self.torgb = ToRGBLayer(C, 3, cfg.w_dim) if cfg.use_torgb_raw else None
        self.toparsing = ToRGBLayer(C, NUM_PARSING_CLASSES, cfg.w_dim) if cfg.use_parsing else None
        self.superresolution = None
        if cfg.superresolution != 'none':
            self.superresolution = SuperResolution(cfg.superresolution, channels=C, img_resolution=cfg.img_resolution,
                                                   w_dim=cfg.w_dim, sr_channels=cfg.sr_channels,
                                                   sr_antialias=r.sr_antialias, conv_clamp=cfg.conv_clamp,
                                                   num_fp16_res=cfg.sr_num_fp16_res,
                                                   fused_modconv_default='inference_only')
        self.bcg_synthesis = None
        if cfg.use_background:
            bcg_kwargs = dict(synthesis_kwargs, channel_base=cfg.channel_base // 2)
            self.bcg_synthesis = SynthesisNetwork(cfg.w_dim, img_resolution=cfg.sr_input_resolution,
                                                  img_channels=C, **bcg_kwargs)
        self.t_mapping = None
        if cfg.use_camera_offset:
            self.t_mapping = MappingNetwork(cfg.z_dim, cfg.c_dim, 3, num_ws=1, last_activation='linear',
                                            lr_multiplier=1.0, **mapping_kwargs)
        self.renderer = ImportanceRenderer(r.ray_start, r.ray_end, r.box_warp, r.box_crop, r.white_back,
                                           r.density_noise, r.disparity_space_sampling)
        self.provenance = 'random weights (untrained)'

    # ------------------------------------------------------------------ mapping
    @property
    def num_ws(self) -> int:
        return self.backbone.num_ws

    def _conditioning(self, c: torch.Tensor) -> torch.Tensor:
        r = self.config.rendering
        return torch.zeros_like(c) if r.c_gen_conditioning_zero else c * r.c_scale

    def mapping(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        """z [N, z_dim], c [N, 25] -> ws [N, num_ws, w_dim] (truncated towards the tracked w_avg)."""
        c = c.to(z.device, z.dtype).expand(z.shape[0], -1) if c.shape[0] == 1 else c.to(z.device, z.dtype)
        return self.backbone.mapping(z, self._conditioning(c), truncation_psi=truncation_psi,
                                     truncation_cutoff=truncation_cutoff, update_emas=update_emas)

    def camera_offset(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                      truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        """PanoHead's self-adaptive camera: [N, 25] label with the translation (entries 3, 7, 11)
        moved by the offset net's output. Identity without the offset net."""
        if self.t_mapping is None:
            return c
        c = c.to(z.device, z.dtype).expand(z.shape[0], -1) if c.shape[0] == 1 else c.to(z.device, z.dtype)
        delta = self.t_mapping(z, self._conditioning(c), truncation_psi=truncation_psi,
                               truncation_cutoff=truncation_cutoff, update_emas=update_emas)[:, 0]
        offset = torch.zeros_like(c)
        offset[:, [3, 7, 11]] = delta.to(offset.dtype)   # the net may run under bf16 autocast
        return c + offset

    # ------------------------------------------------------------------ planes
    def backbone_planes(self, ws: torch.Tensor, noise_mode: str = 'const', update_emas: bool = False) -> Planes:
        """ws -> feature planes. Sphere models: {'A': [N, 3, C, T, T], 'B': ...};
        tri-plane {'xyz': [N, 3, C, T, T]}; tri-grid {'xyz': [N, 3, C, D, T, T]}."""
        cfg = self.config
        x = self.backbone.synthesis(ws, noise_mode=noise_mode, update_emas=update_emas)
        N, _, H, W = x.shape
        C = cfg.feature_channels
        if cfg.is_sphere:
            return {name: head(x).reshape(N, cfg.planes_per_sphere, C, H, W) for name, head in self.heads.items()}
        if cfg.representation == 'trigrid':
            return {'xyz': x.reshape(N, 3, C, cfg.trigrid_depth, H, W)}
        return {'xyz': x.reshape(N, 3, C, H, W)}

    def feature_field(self, planes: Planes, sphere: str = 'fused'):
        """A function points [N, M, 3] (world units) -> (features [N, M, C], ownership [N, M] or None)."""
        cfg = self.config
        box_warp = cfg.rendering.box_warp
        if cfg.is_sphere:
            from spherehead.ops.dual_sphere import dual_sphere_features
            return lambda p: dual_sphere_features(planes['A'], planes.get('B'), p, box_warp, sphere)
        if sphere not in ('fused', None):
            raise ValueError(f"sphere={sphere!r} needs a sphere model; this one is a {cfg.representation}")
        if cfg.representation == 'trigrid':
            return lambda p: (sample_trigrid(planes['xyz'], p, box_warp), None)
        return lambda p: (sample_triplane(planes['xyz'], p, box_warp), None)

    def query(self, planes: Planes, points: torch.Tensor, sphere: str = 'fused') -> dict[str, torch.Tensor]:
        """Decoder output at arbitrary points [N, M, 3]: {'rgb': [N, M, C], 'sigma': [N, M, 1]} (meshes, probes)."""
        features, _ = self.feature_field(planes, sphere)(points)
        return self.decoder(features)

    # ------------------------------------------------------------------ synthesis
    def synthesis(self, ws: torch.Tensor, c: torch.Tensor, sphere: str = 'fused', noise_mode: str = 'const',
                  deterministic: bool = False, neural_rendering_resolution: int | None = None,
                  depth_resolution: int | None = None, depth_resolution_importance: int | None = None,
                  planes: Planes | None = None, timings: dict | None = None,
                  update_emas: bool = False, ws_bcg: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Render ws [N, num_ws, w_dim] from cameras c [N, 25] (or [1, 25] for all).

        Returns image [N,3,H,W] in [-1,1], image_raw [N,3,h,w], image_depth [N,1,h,w] (world
        units), image_mask [N,1,h,w] in [0,1], image_xyz [N,3,h,w] (expected surface point),
        image_parsing [N,20,h,w] (with a parsing branch), sphere_weight [N,1,h,w] (sphere models).
        ``planes`` reuses a backbone_planes() result; ``timings`` receives seconds per stage;
        ``ws_bcg`` [N, num_ws, w_dim] drives the background net instead of ``ws`` (training swaps it).
        """
        cfg, r = self.config, self.config.rendering
        N = ws.shape[0]
        c = c.to(ws.device, torch.float32)
        if c.shape[0] == 1 and N > 1:
            c = c.expand(N, -1)
        res = neural_rendering_resolution or r.neural_rendering_resolution
        stage = _StageTimer(timings, ws.device)
        with stage('backbone'):
            if planes is None:
                planes = self.backbone_planes(ws, noise_mode=noise_mode, update_emas=update_emas)
        with stage('render'):
            origins, directions = camera_rays(c, res)
            out = self.renderer(self.feature_field(planes, sphere), self.decoder, origins, directions,
                                depth_resolution or r.depth_resolution,
                                r.depth_resolution_importance if depth_resolution_importance is None
                                else depth_resolution_importance, deterministic=deterministic)
            to_image = lambda t: t.permute(0, 2, 1).reshape(N, t.shape[-1], res, res)
            features, depth, mask = to_image(out.features), to_image(out.depth), to_image(out.opacity)
            if r.decoder_activation == 'sigmoid':
                features = features * 2 - 1
            if self.bcg_synthesis is not None:
                features = features + (1 - mask) * self._background(ws if ws_bcg is None else ws_bcg,
                                                                     noise_mode, res, update_emas)
            raw = self.torgb(features, ws[:, -1], fused_modconv=False) if self.torgb is not None else features[:, :3]
            result = {'image_raw': raw, 'image_depth': depth, 'image_mask': mask.clamp(0, 1),
                      'image_xyz': to_image(origins + out.depth * directions)}
            if self.toparsing is not None:
                result['image_parsing'] = F.softmax(self.toparsing(features, ws[:, -1], fused_modconv=False), dim=1)
            if out.ownership is not None:
                result['sphere_weight'] = to_image(out.ownership).clamp(0, 1)
        with stage('superres'):
            if self.superresolution is None:
                result['image'] = raw
            else:
                result['image'] = self.superresolution(raw, features, ws, noise_mode=r.sr_noise_mode)
        return result

    def _background(self, ws, noise_mode, res, update_emas):
        n = self.bcg_synthesis.num_ws
        ws_bcg = ws[:, :n]
        if ws_bcg.shape[1] < n:
            ws_bcg = torch.cat([ws_bcg, ws_bcg[:, -1:].repeat(1, n - ws_bcg.shape[1], 1)], 1)
        bcg = self.bcg_synthesis(ws_bcg, noise_mode=noise_mode, update_emas=update_emas)
        if bcg.shape[-1] != res:
            bcg = F.interpolate(bcg, size=(res, res), mode='bilinear', align_corners=False,
                                antialias=self.config.rendering.sr_antialias)
        return bcg

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False, **synthesis_kwargs):
        """z [N, z_dim], c [N, 25] -> synthesis dict, with the camera offset applied to c."""
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, update_emas)
        c = self.camera_offset(z, c, truncation_psi, truncation_cutoff, update_emas)
        return self.synthesis(ws, c, update_emas=update_emas, **synthesis_kwargs)


class _StageTimer:
    """Adds wall-clock seconds per stage into a dict (synchronising CUDA); a no-op without a dict."""

    def __init__(self, timings: dict | None, device: torch.device):
        self.timings, self.cuda = timings, device.type == 'cuda'

    @contextmanager
    def __call__(self, name: str):
        if self.timings is None:
            yield
            return
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize()
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0

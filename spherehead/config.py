"""Typed generator configuration: one dataclass tree that serialises to JSON.

A config fully determines the module shapes of a generator, so a network file
(.safetensors) stores it as JSON in its metadata and rebuilds the exact modules.
Presets: ``tiny`` (CPU tests), ``demo`` (interactive on a 2-core CPU), ``paper``
(the released SphereHead shapes).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

REPRESENTATIONS = ('dual_sphere', 'single_sphere', 'triplane', 'trigrid')
SPHERE_REPRESENTATIONS = ('dual_sphere', 'single_sphere')
SPHERE_MODES = ('A', 'B', 'fused')
# Super-resolution module -> its upsampling factor from the (resized) feature image to the output.
# Names follow EG3D: 'hybrid2x'/'hybrid4x' = no-up block then one 2x block; 'hybrid8x'/'hybrid8xdc' = two 2x blocks.
SUPERRESOLUTION_MODULES = {'none': 1, 'hybrid2x': 2, 'hybrid4x': 2, 'hybrid8x': 4, 'hybrid8xdc': 4}
NUM_PARSING_CLASSES = 20


def check_keys(cls, d: dict[str, Any], what: str) -> None:
    """ValueError naming the keys of ``d`` that are not fields of dataclass ``cls``."""
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f'unknown {what} config keys: {sorted(unknown)}')


@dataclass
class RenderingConfig:
    """Volume rendering options (world units for distances)."""
    box_warp: float = 1.0                   # side of the feature box; points are normalised by box_warp / 2
    ray_start: float = 2.25                 # near bound along each ray
    ray_end: float = 3.3                    # far bound along each ray
    depth_resolution: int = 48              # stratified (coarse) samples per ray
    depth_resolution_importance: int = 48   # importance (fine) samples per ray; 0 disables the fine pass
    neural_rendering_resolution: int = 64   # side of the raw (low-res) image
    box_crop: float = 0.1                   # margin for the box crop (density killed outside the box); 0 = off
    disparity_space_sampling: bool = False
    clamp_mode: str = 'softplus'
    decoder_activation: str = 'sigmoid'     # 'sigmoid' (EG3D) or 'lrelu' (with a toRGB raw layer)
    decoder_lr_mul: float = 1.0
    white_back: bool = False
    density_noise: float = 0.0
    sr_antialias: bool = True
    sr_noise_mode: str = 'none'             # noise mode of the super-resolution blocks
    c_gen_conditioning_zero: bool = False   # True: mapping ignores the camera
    c_scale: float = 1.0                    # scale of the camera label fed to the mapping nets


@dataclass
class GeneratorConfig:
    """Shapes and options of a generator. Resolutions in pixels."""
    representation: str = 'dual_sphere'     # one of REPRESENTATIONS
    z_dim: int = 512
    w_dim: int = 512
    c_dim: int = 25
    img_resolution: int = 512               # super-resolved output side
    triplane_size: int = 256                # side of each feature plane (backbone output)
    planes_per_sphere: int = 3              # feature planes per sphere (dual/single sphere)
    trigrid_depth: int = 3                  # D of the tri-grid (trigrid only)
    feature_channels: int = 32              # channels of each plane and of the decoder features
    backbone_channels: int = 512            # backbone output channels for sphere models (1x1 heads follow)
    head_hidden_channels: int = 256         # hidden width of the sphere 1x1-conv heads
    channel_base: int = 32768
    channel_max: int = 512
    mapping_layers: int = 2
    conv_clamp: float | None = None         # released models use 256 with fp16; None in fp32
    num_fp16_res: int = 0                   # kept for checkpoint fidelity; the backbone runs fp32
    sr_num_fp16_res: int = 0                # EG3D's option: > 0 clamps the super-resolution convs at 256 (as released)
                                            # and lets them run in float16 when training with --precision mixed
    superresolution: str = 'hybrid8xdc'     # one of SUPERRESOLUTION_MODULES (EG3D's module names)
    sr_channels: tuple[int, int] = (256, 128)  # output channels of the two super-resolution blocks
    use_parsing: bool = True                # parsing branch (20 classes)
    use_background: bool = True             # background synthesis net
    use_torgb_raw: bool = True              # raw RGB from a toRGB layer (else first 3 feature channels)
    use_camera_offset: bool = True          # self-adaptive camera offset mapping net
    rendering: RenderingConfig = field(default_factory=RenderingConfig)

    def __post_init__(self) -> None:
        if isinstance(self.rendering, dict):
            self.rendering = RenderingConfig(**self.rendering)
        self.validate()

    def validate(self) -> None:
        if self.representation not in REPRESENTATIONS:
            raise ValueError(f'representation must be one of {REPRESENTATIONS}, got {self.representation!r}')
        if self.superresolution not in SUPERRESOLUTION_MODULES:
            raise ValueError(f'superresolution must be one of {sorted(SUPERRESOLUTION_MODULES)}, '
                             f'got {self.superresolution!r}')
        self.sr_channels = tuple(int(c) for c in self.sr_channels)
        if self.img_resolution % SUPERRESOLUTION_MODULES[self.superresolution]:
            raise ValueError(f'img_resolution {self.img_resolution} is not divisible by the '
                             f'{self.superresolution} upsampling factor')

    @property
    def sr_input_resolution(self) -> int:
        """Side the feature image is resized to before super-resolution."""
        return self.img_resolution // SUPERRESOLUTION_MODULES[self.superresolution]

    @property
    def num_spheres(self) -> int:
        return {'dual_sphere': 2, 'single_sphere': 1}.get(self.representation, 0)

    @property
    def is_sphere(self) -> bool:
        return self.representation in SPHERE_REPRESENTATIONS

    @property
    def backbone_out_channels(self) -> int:
        """Channels of the StyleGAN2 backbone output map."""
        if self.is_sphere:
            return self.backbone_channels
        if self.representation == 'trigrid':
            return 3 * self.feature_channels * self.trigrid_depth
        return 3 * self.feature_channels

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> 'GeneratorConfig':
        check_keys(cls, d, 'generator')
        d = dict(d)
        if 'rendering' in d and isinstance(d['rendering'], dict):
            check_keys(RenderingConfig, d['rendering'], 'rendering')
            d['rendering'] = RenderingConfig(**d['rendering'])
        return cls(**d)

    @classmethod
    def from_json(cls, s: str) -> 'GeneratorConfig':
        return cls.from_dict(json.loads(s))

    def replace(self, **changes: Any) -> 'GeneratorConfig':
        """A copy with top-level fields changed (``rendering=dict(...)`` merges into the rendering config)."""
        d = self.to_dict()
        r = changes.pop('rendering', None)
        if r is not None:
            d['rendering'].update(r if isinstance(r, dict) else dataclasses.asdict(r))
        d.update(changes)
        return GeneratorConfig.from_dict(d)


@dataclass
class DiscriminatorConfig:
    """Shapes of the dual discriminator (spherehead.networks.discriminator.DualDiscriminator).

    The blocks see 2 * img_channels + mask_channels + parsing_channels channels at
    img_resolution (image, upsampled raw image, 2m-1 mask, 2p-1 parsing).
    """
    c_dim: int = 25
    img_resolution: int = 512
    img_channels: int = 3
    mask_channels: int = 1                  # PanoHead / SphereHead: 1; EG3D: 0
    parsing_channels: int = NUM_PARSING_CLASSES  # SphereHead: 20; EG3D / PanoHead: 0
    architecture: str = 'resnet'
    channel_base: int = 32768
    channel_max: int = 512
    num_fp16_res: int = 4                   # these top resolutions compute in float16 when training with --precision mixed
    conv_clamp: float | None = 256
    cmap_dim: int | None = None             # None: channels at 4x4
    disc_c_noise: float = 0.0
    mapping_layers: int = 8                 # layers of the camera-label mapping net
    mbstd_group_size: int = 4
    mbstd_num_channels: int = 1

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> 'DiscriminatorConfig':
        check_keys(cls, d, 'discriminator')
        return cls(**d)


def discriminator_config_for(g: GeneratorConfig, **overrides: Any) -> DiscriminatorConfig:
    """The discriminator that trains generator config ``g``: same resolution, a mask channel
    (PanoHead / SphereHead), parsing channels when G has a parsing branch, and G's channel
    budget (EG3D pairs its G and D at cbase 32768 / cmax 512)."""
    d = DiscriminatorConfig(img_resolution=g.img_resolution, mask_channels=1,
                            parsing_channels=NUM_PARSING_CLASSES if g.use_parsing else 0,
                            channel_base=g.channel_base, channel_max=g.channel_max)
    return dataclasses.replace(d, **overrides)


def preset(name: str, **overrides: Any) -> GeneratorConfig:
    """A named configuration: 'tiny', 'demo' or 'paper' (overrides apply on top)."""
    if name not in PRESETS:
        raise ValueError(f'unknown preset {name!r}; choose one of {sorted(PRESETS)}')
    return PRESETS[name]().replace(**overrides)


def _paper() -> GeneratorConfig:
    # Released SphereHead: 512 output, 256 planes, 3 planes/sphere, 32 channels, 48+48 samples,
    # EG3D's 8x (dual-channel) super-resolution from a 128 px render, parsing and background on;
    # the family's sr_num_fp16_res 4 (SR clamped at 256, float16 in mixed-precision training).
    return GeneratorConfig(
        representation='dual_sphere', img_resolution=512, triplane_size=256, planes_per_sphere=3,
        feature_channels=32, channel_base=32768, channel_max=512, mapping_layers=2, superresolution='hybrid8xdc', sr_channels=(256, 128),
        sr_num_fp16_res=4, use_parsing=True, use_background=True, use_torgb_raw=True, use_camera_offset=True,
        rendering=RenderingConfig(depth_resolution=48, depth_resolution_importance=48,
                                  neural_rendering_resolution=128, box_crop=0.1),
    )


def _demo() -> GeneratorConfig:
    # Sized to run interactively on a 2-core CPU: 64 px raw render, 2x SR to 128, 12+12 samples.
    # Background net on: without it the raw image's background is one colour, which a D that
    # sees varied real backgrounds (minibatch std) tells apart at once. No camera-offset net:
    # it exists for noisy real poses; the synthetic heads it trains on have exact cameras, and
    # unregularised per-sample offsets ran away (cameras moved by > 1 unit) in a first run.
    return GeneratorConfig(
        representation='dual_sphere', z_dim=128, w_dim=128, img_resolution=128, triplane_size=64,
        feature_channels=32, backbone_channels=128, head_hidden_channels=64, channel_base=4096,
        channel_max=128, mapping_layers=2, superresolution='hybrid2x', sr_channels=(64, 32),
        use_parsing=True, use_background=True, use_torgb_raw=True, use_camera_offset=False,
        rendering=RenderingConfig(depth_resolution=12, depth_resolution_importance=12,
                                  neural_rendering_resolution=64, box_crop=0.1),
    )


def _tiny() -> GeneratorConfig:
    # CPU tests: seconds per image.
    return GeneratorConfig(
        representation='dual_sphere', z_dim=32, w_dim=32, img_resolution=64, triplane_size=32,
        feature_channels=16, backbone_channels=32, head_hidden_channels=32, channel_base=512,
        channel_max=32, mapping_layers=2, superresolution='hybrid2x', sr_channels=(16, 16),
        use_parsing=True, use_background=True, use_torgb_raw=True, use_camera_offset=True,
        rendering=RenderingConfig(depth_resolution=12, depth_resolution_importance=12,
                                  neural_rendering_resolution=32, box_crop=0.1),
    )


PRESETS = {'tiny': _tiny, 'demo': _demo, 'paper': _paper}

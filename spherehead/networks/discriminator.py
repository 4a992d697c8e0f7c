"""Camera-conditioned StyleGAN2 ResNet discriminator (EG3D's DualDiscriminator and its extensions).

The input image stacks, at the super-resolved size:
- EG3D: the image and the raw (neural-rendered) image, resized up (3 + 3 channels);
- PanoHead: + the foreground mask mapped to [-1, 1] (+1 channel);
- SphereHead: + the parsing map mapped to [-1, 1] (+20 channels).
The 25-number camera label is mapped to a projection vector (cmap) that is dotted with
the epilogue's output.

State-dict names equal EG3D's: b{res}.{fromrgb,conv0,conv1,skip}, mapping.*, b4.{conv,fc,out}
(the epilogue lives at `b4`; `epilogue` is an alias), resample_filter.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spherehead.networks.layers import DEFAULT_RESAMPLE_FILTER, Conv2dLayer, FullyConnectedLayer
from spherehead.networks.mapping import MappingNetwork
from spherehead.ops.upfirdn2d import downsample2d, setup_filter, upsample2d

if TYPE_CHECKING:
    from spherehead.config import DiscriminatorConfig

FilterMode = Union[str, float]   # 'antialiased', 'classic', 'none', or a blend weight in (0, 1)


def filtered_resizing(img: torch.Tensor, size: int, f: torch.Tensor, filter_mode: FilterMode = 'antialiased') -> torch.Tensor:
    """Resize [N, C, H, W] -> [N, C, size, size] as EG3D does for the raw image.

    'antialiased': bilinear with antialiasing; 'none': plain bilinear; 'classic': FIR
    upsample x2, bilinear to 2 * size + 2, FIR downsample x2 (filter `f`); a float a in
    (0, 1): (1 - a) * plain + a * antialiased.
    """
    if filter_mode == 'antialiased':
        # Upsampling: antialiasing changes nothing (same values to ~1e-7), so take plain bilinear,
        # whose double backward (R1 on the raw image, mask and parsing) is much cheaper.
        return F.interpolate(img, size=(size, size), mode='bilinear', align_corners=False,
                             antialias=size < img.shape[-1])
    if filter_mode == 'none':
        return F.interpolate(img, size=(size, size), mode='bilinear', align_corners=False)
    if filter_mode == 'classic':
        x = upsample2d(img, f, up=2)
        x = F.interpolate(x, size=(size * 2 + 2, size * 2 + 2), mode='bilinear', align_corners=False)
        return downsample2d(x, f, down=2, flip_filter=True, padding=-1)
    if isinstance(filter_mode, float) and 0 < filter_mode < 1:
        filtered = F.interpolate(img, size=(size, size), mode='bilinear', align_corners=False, antialias=True)
        aliased = F.interpolate(img, size=(size, size), mode='bilinear', align_corners=False, antialias=False)
        return (1 - filter_mode) * aliased + filter_mode * filtered
    raise ValueError(f"filter_mode must be 'antialiased', 'classic', 'none' or a float in (0, 1), got {filter_mode!r}")


class DiscriminatorBlock(nn.Module):
    """One resolution of the discriminator: (x [N, tmp, R, R] or None, img [N, C, R, R]) -> (x [N, out, R/2, R/2], img).

    fromrgb (first block, or architecture 'skip'), conv0 (3x3), conv1 (3x3, down 2),
    skip (1x1, down 2, architecture 'resnet'). The first `freeze_layers` layers of the whole
    discriminator (counted from `first_layer_idx`) keep their weights as buffers (Freeze-D).
    A `use_fp16` block computes in float16 when its forward is called with fp16=True on CUDA
    (weights stay float32 and are cast per call; its convolutions are clamped by conv_clamp).
    """

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int, img_channels: int,
                 first_layer_idx: int, architecture: str = 'resnet', activation: str = 'lrelu',
                 resample_filter: Sequence[float] = DEFAULT_RESAMPLE_FILTER, conv_clamp: float | None = None,
                 freeze_layers: int = 0, use_fp16: bool = False) -> None:
        if in_channels not in (0, tmp_channels):
            raise ValueError('in_channels must be 0 (first block) or tmp_channels')
        if architecture not in ('orig', 'skip', 'resnet'):
            raise ValueError(f"architecture must be 'orig', 'skip' or 'resnet', got {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.register_buffer('resample_filter', setup_filter(list(resample_filter)))
        self.num_layers = 0

        def trainable() -> bool:
            idx = first_layer_idx + self.num_layers
            self.num_layers += 1
            return idx >= freeze_layers

        if in_channels == 0 or architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       trainable=trainable(), conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 trainable=trainable(), conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                                 trainable=trainable(), resample_filter=resample_filter, conv_clamp=conv_clamp)
        if architecture == 'resnet':
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    trainable=trainable(), resample_filter=resample_filter)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None,
                fp16: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = (x if x is not None else img).device
        dtype = torch.float16 if fp16 and self.use_fp16 and device.type == 'cuda' else torch.float32
        if x is not None:
            x = x.to(dtype)
        if self.in_channels == 0 or self.architecture == 'skip':
            if img is None or img.shape[1:] != (self.img_channels, self.resolution, self.resolution):
                raise ValueError(f'img must be [N, {self.img_channels}, {self.resolution}, {self.resolution}], '
                                 f'got {None if img is None else tuple(img.shape)}')
            img = img.to(dtype)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == 'skip' else None

        if self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            x = y + x
        else:
            x = self.conv1(self.conv0(x))
        return x, img

    def extra_repr(self) -> str:
        return f'resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}'


class MinibatchStdLayer(nn.Module):
    """Append the mean over-group standard deviation: [N, C, H, W] -> [N, C + num_channels, H, W].

    The batch is split into groups of `group_size` samples (sample i belongs to group i % (N / G)),
    channels into `num_channels` groups; each appended map is the std over the group averaged
    over its channels and pixels. N must be divisible by min(group_size, N).
    """

    def __init__(self, group_size: int | None, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)          # [G, n/G, F, c/F, H, W]
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()       # [n/G, F, c/F, H, W]
        y = y.mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1)   # [n/G, F, 1, 1]
        y = y.repeat(g, 1, h, w)                         # [N, F, H, W]
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f'group_size={self.group_size}, num_channels={self.num_channels}'


class DiscriminatorEpilogue(nn.Module):
    """Final 4x4 block: x [N, C, 4, 4] (+ cmap [N, cmap_dim]) -> score [N, 1].

    fromrgb (architecture 'skip'), mbstd, conv (3x3), fc, out; with a label the score is
    <out(x), cmap> / sqrt(cmap_dim).
    """

    def __init__(self, in_channels: int, cmap_dim: int, resolution: int, img_channels: int,
                 architecture: str = 'resnet', mbstd_group_size: int | None = 4, mbstd_num_channels: int = 1,
                 activation: str = 'lrelu', conv_clamp: float | None = None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        if architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor, img: torch.Tensor | None, cmap: torch.Tensor | None) -> torch.Tensor:
        return self.project(self.embed(x, img), cmap)

    def embed(self, x: torch.Tensor, img: torch.Tensor | None) -> torch.Tensor:
        """Everything before the label: x [N, C, 4, 4] -> [N, cmap_dim] (or [N, 1] without a label)."""
        if x.shape[1:] != (self.in_channels, self.resolution, self.resolution):
            raise ValueError(f'x must be [N, {self.in_channels}, {self.resolution}, {self.resolution}], '
                             f'got {tuple(x.shape)}')
        x = x.to(torch.float32)
        if self.architecture == 'skip':
            x = x + self.fromrgb(img.to(torch.float32))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        return self.out(x)

    def project(self, h: torch.Tensor, cmap: torch.Tensor | None) -> torch.Tensor:
        """Score [N, 1] of an embedding h from `embed`: <h, cmap> / sqrt(cmap_dim), or h without a label."""
        if self.cmap_dim > 0:
            return (h * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return h

    def extra_repr(self) -> str:
        return f'resolution={self.resolution}, architecture={self.architecture}'


class DualDiscriminator(nn.Module):
    """Scores images given their camera: (dict of images, c [N, c_dim]) -> logits [N, 1].

    The input dict holds 'image' [N, img_channels, R, R] and 'image_raw' [N, img_channels, r, r];
    with mask_channels > 0 also 'image_mask' [N, mask_channels, r', r'] in [0, 1]; with
    parsing_channels > 0 also 'image_parsing' [N, parsing_channels, r'', r''] in [0, 1].
    Everything but 'image' is resized to R with `filtered_resizing`; mask and parsing are
    mapped to [-1, 1] (2 m - 1). The blocks see 2 * img_channels + mask_channels +
    parsing_channels channels.

    Args:
        c_dim: label size (25 for cameras; 0 = unconditional).
        img_resolution: R.
        img_channels: colour channels of one image (3).
        mask_channels: 1 for PanoHead-style models, else 0.
        parsing_channels: 20 for SphereHead-style models, else 0.
        architecture, channel_base, channel_max, conv_clamp: as in StyleGAN2.
        num_fp16_res: the blocks of the top num_fp16_res resolutions (down to 8 px) may run in
            float16, as in EG3D; they do only while `mixed_precision` is True and on CUDA.
        cmap_dim: size of the mapped label (None = channels at 4x4).
        disc_c_noise: add Gaussian noise of this many batch stds to c before mapping.
        filter_mode: how the raw image, mask and parsing are resized (see `filtered_resizing`).
        block_kwargs, mapping_kwargs, epilogue_kwargs: options of the parts.
    """

    def __init__(self, c_dim: int, img_resolution: int, img_channels: int = 3, mask_channels: int = 0,
                 parsing_channels: int = 0, architecture: str = 'resnet', channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 4, conv_clamp: float | None = 256,
                 cmap_dim: int | None = None, disc_c_noise: float = 0.0, filter_mode: FilterMode = 'antialiased',
                 block_kwargs: Mapping[str, Any] | None = None, mapping_kwargs: Mapping[str, Any] | None = None,
                 epilogue_kwargs: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.image_channels = img_channels
        self.mask_channels = mask_channels
        self.parsing_channels = parsing_channels
        self.img_channels = 2 * img_channels + mask_channels + parsing_channels   # channels the blocks see
        self.num_fp16_res = num_fp16_res
        self.fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8) if num_fp16_res > 0 else None
        self.mixed_precision = False   # set by the trainer (TrainingConfig.precision == 'mixed')
        self.disc_c_noise = disc_c_noise
        self.filter_mode = filter_mode
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0

        common = dict(img_channels=self.img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            use_fp16 = self.fp16_resolution is not None and res >= self.fp16_resolution
            block = DiscriminatorBlock(channels[res] if res < img_resolution else 0, channels[res], channels[res // 2],
                                       resolution=res, first_layer_idx=layer_idx, use_fp16=use_fp16,
                                       **dict(block_kwargs or {}), **common)
            setattr(self, f'b{res}', block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **dict(mapping_kwargs or {}))
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **dict(epilogue_kwargs or {}),
                                        **common)
        self.register_buffer('resample_filter', setup_filter([1, 3, 3, 1]))

    @classmethod
    def from_config(cls, cfg: 'DiscriminatorConfig') -> 'DualDiscriminator':
        """Build from a :class:`spherehead.config.DiscriminatorConfig` (kept as ``self.config``)."""
        D = cls(c_dim=cfg.c_dim, img_resolution=cfg.img_resolution, img_channels=cfg.img_channels,
                mask_channels=cfg.mask_channels, parsing_channels=cfg.parsing_channels,
                architecture=cfg.architecture, channel_base=cfg.channel_base, channel_max=cfg.channel_max,
                num_fp16_res=cfg.num_fp16_res, conv_clamp=cfg.conv_clamp, cmap_dim=cfg.cmap_dim,
                disc_c_noise=cfg.disc_c_noise, mapping_kwargs=dict(num_layers=cfg.mapping_layers),
                epilogue_kwargs=dict(mbstd_group_size=cfg.mbstd_group_size,
                                     mbstd_num_channels=cfg.mbstd_num_channels))
        D.config = cfg
        return D

    @property
    def epilogue(self) -> DiscriminatorEpilogue:
        """The final 4x4 block (stored as `b4`, EG3D's name)."""
        return self.b4

    def assemble_input(self, img: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Stack image, resized raw image, and (2 x - 1) resized mask / parsing: -> [N, self.img_channels, R, R]."""
        image = img['image']
        size = image.shape[-1]
        parts = [image, filtered_resizing(img['image_raw'], size, self.resample_filter, self.filter_mode)]
        for key, channels in (('image_mask', self.mask_channels), ('image_parsing', self.parsing_channels)):
            if channels > 0:
                if key not in img:
                    raise KeyError(f'this discriminator needs {key!r} ({channels} channels)')
                parts.append(2 * filtered_resizing(img[key], size, self.resample_filter, self.filter_mode) - 1)
        return torch.cat(parts, dim=1)

    def forward(self, img: Mapping[str, torch.Tensor], c: torch.Tensor, update_emas: bool = False) -> torch.Tensor:
        del update_emas  # no running statistics
        return self.score(self.embed(img), c)

    def embed(self, img: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The label-free part of D: input dict -> embedding [N, cmap_dim] (see `score`).

        Only the final projection sees the camera, so one embedding can be scored under
        several labels (ViCo scores the reals under their own and under shuffled cameras)."""
        x = None
        image = self.assemble_input(img)
        for res in self.block_resolutions:
            x, image = getattr(self, f'b{res}')(x, image, fp16=self.mixed_precision)
        return self.b4.embed(x, image)

    def score(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Logits [N, 1] of an embedding h [N, cmap_dim] from `embed` under cameras c [N, c_dim]."""
        cmap = None
        if self.c_dim > 0:
            if self.disc_c_noise > 0:
                c = c + torch.randn_like(c) * c.std(0) * self.disc_c_noise
            cmap = self.mapping(None, c)
        return self.b4.project(h, cmap)

    def extra_repr(self) -> str:
        return f'c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}'

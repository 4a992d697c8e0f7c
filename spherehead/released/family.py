"""What one released code base (EG3D, PanoHead, SphereHead) does its own way, for G and D.

Each family module (eg3d, panohead, spherehead) fills one ``ReleasedFamily``; the generator and
discriminator readers (generator.py, discriminator.py) are the same for all three and ask it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from spherehead.released.reader import ModuleRecord

# Released box crop margin of the PanoHead / SphereHead renderers (EG3D has none).
RELEASED_BOX_CROP = 0.1
# Constructor arguments every released D takes first (EG3D training/dual_discriminator.py order).
D_FIRST_ARGS = ('c_dim', 'img_resolution', 'img_channels')


@dataclass(frozen=True)
class ReleasedFamily:
    """One family's generator (a ``TriPlaneGenerator``) and discriminator, as our configs see them."""
    name: str                     # 'eg3d' | 'panohead' | 'spherehead' (ReleasedGenerator.family)
    title: str                    # 'EG3D', ... (in messages)
    representation: str           # our GeneratorConfig.representation
    box_crop: float               # the renderer's box crop margin, box units
    # (generator record, its rendering_kwargs) -> True when the record is of this family
    recognises: Callable[[ModuleRecord, dict], bool]
    # rendering_kwargs -> our decoder_activation ('sigmoid', 'lrelu' or 'linear')
    decoder_activation: Callable[[dict], str]
    # (tensors by our names, shape(name) -> tuple, triplane_depth, path) -> GeneratorConfig fields of this
    # family's representation; raises UserError
    generator_options: Callable[[dict, Callable[[str], tuple], int, Path], dict]
    discriminator: str            # the released D class that our DualDiscriminator reproduces
    # what that D stacks after the image and the upsampled raw image: 'seg' (mask), 'parsing'
    discriminator_inputs: tuple[str, ...]
    # its constructor arguments before the common ones, in order
    discriminator_args: tuple[str, ...]
    rename: Callable[[str], str] = lambda name: name   # released tensor name -> ours
    # other D classes of the family that we cannot map -> why (said in the error)
    refused_discriminators: dict[str, str] = field(default_factory=dict)


def configured_activation(rendering_kwargs: dict) -> str:
    """The decoder activation that PanoHead / SphereHead read from rendering_kwargs: 'sigmoid',
    'lrelu', anything else (e.g. 'none') = linear."""
    activation = rendering_kwargs.get('decoder_activation', 'sigmoid')
    return activation if activation in ('sigmoid', 'lrelu') else 'linear'

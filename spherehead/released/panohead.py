"""PanoHead: tri-grid generator (``triplane_depth`` planes per axis), ``MaskDualDiscriminatorV2``."""
from __future__ import annotations

from spherehead.released.family import D_FIRST_ARGS, RELEASED_BOX_CROP, ReleasedFamily, configured_activation

FAMILY = ReleasedFamily(
    name='panohead', title='PanoHead', representation='trigrid',
    box_crop=RELEASED_BOX_CROP,
    recognises=lambda rec, rk: 'triplane_depth' in rk,
    decoder_activation=configured_activation,
    generator_options=lambda tensors, shape, depth, path: {'trigrid_depth': depth},
    # Its README recipe's --disc_module: stacks the mask (seg_channels). seg_resolution is a
    # constructor argument its forward pass never reads.
    discriminator='MaskDualDiscriminatorV2', discriminator_inputs=('seg',),
    discriminator_args=D_FIRST_ARGS + ('seg_resolution', 'seg_channels'),
    refused_discriminators={'MaskDualDiscriminator': "PanoHead's first variant: the mask runs through separate "
                                                     'sb* blocks, which our discriminator does not have'},
)

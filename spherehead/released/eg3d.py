"""EG3D (NVlabs): tri-plane generator, ``DualDiscriminator`` (training/dual_discriminator.py)."""
from __future__ import annotations

from spherehead.released.family import D_FIRST_ARGS, ReleasedFamily

FAMILY = ReleasedFamily(
    name='eg3d', title='EG3D', representation='triplane',
    box_crop=0.0,                                   # the EG3D renderer crops nothing
    recognises=lambda rec, rk: True,                # the plain tri-plane generator: asked last
    decoder_activation=lambda rk: 'sigmoid',        # OSGDecoder: always sigmoid (no option)
    generator_options=lambda tensors, shape, depth, path: {},
    # Stacks nothing after the image and the upsampled raw image.
    discriminator='DualDiscriminator', discriminator_inputs=(), discriminator_args=D_FIRST_ARGS,
)

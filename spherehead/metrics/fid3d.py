"""FID3D: image quality when the camera the generator is conditioned on is not the one it is
rendered from.

EG3D-style generators take the camera label twice: as conditioning of the mapping network
and as the rendering camera. ``fid50k_full`` uses the same label for both. ``fid3d``
conditions every head on one fixed frontal camera (yaw 0, pitch 0, radius 2.7, the released
intrinsics) and renders it from the dataset's poses, the way a user orbits one head; a model
whose geometry or texture depends on the conditioning (view-inconsistent) gets a worse FID.
It uses the same latents and rendering cameras as ``fid50k_full`` (stream 0), so the
difference between the two isolates the conditioning.
"""
from __future__ import annotations

import torch

from spherehead import camera


def frontal_condition(device: str | torch.device = 'cpu') -> torch.Tensor:
    """[1, 25] label of the fixed conditioning camera of fid3d."""
    return camera.lookat(0.0, 0.0, device=device)

"""View bins of the view-resolved FIDs (``fid_front``, ``fid_side``, ``fid_back``).

A dataset image belongs to a bin by the yaw of its camera label (|yaw| in degrees, 0 =
front, 180 = back; spherehead.camera.label_to_yaw_pitch). Real statistics of a bin come
from the dataset images of that bin; generated images of a bin are rendered at camera
labels picked from the same images, so both sides see the same pose distribution.
"""
from __future__ import annotations

import numpy as np

# name, |yaw| from (inclusive), |yaw| to (exclusive; the back bin includes 180)
VIEW_BINS: tuple[tuple[str, float, float], ...] = (('front', 0.0, 45.0), ('side', 45.0, 135.0), ('back', 135.0, 180.0))
VIEW_NAMES = tuple(name for name, _lo, _hi in VIEW_BINS)


def view_groups(yaw_deg: np.ndarray) -> np.ndarray:
    """[N] bin index (0 front, 1 side, 2 back) of each yaw [N] in degrees, any wrapping."""
    a = np.abs((np.asarray(yaw_deg, np.float64) + 180.0) % 360.0 - 180.0)
    return np.where(a < VIEW_BINS[0][2], 0, np.where(a < VIEW_BINS[1][2], 1, 2)).astype(np.int64)


def bin_description(index: int) -> str:
    name, lo, hi = VIEW_BINS[index]
    return f'{name} (|yaw| {lo:g} to {hi:g} deg)'

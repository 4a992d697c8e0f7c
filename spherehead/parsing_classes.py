"""The 20 parsing classes of SphereHead's parsing branch and of our datasets' parsing maps.

A parsing map stores one class id (0..19) per pixel. The order follows the CelebAMask-HQ
style face-parsing tables used by released full-head data; ids past 'cloth' are
kept free so that the branch has 20 outputs as released.
"""
from __future__ import annotations

import numpy as np

PARSING_CLASSES: tuple[str, ...] = (
    'background',  # 0
    'skin',        # 1  face skin
    'nose',        # 2
    'eyeglasses',  # 3
    'left_eye',    # 4  the head's left (+x)
    'right_eye',   # 5
    'left_brow',   # 6
    'right_brow',  # 7
    'left_ear',    # 8
    'right_ear',   # 9
    'mouth',       # 10 inner mouth
    'upper_lip',   # 11
    'lower_lip',   # 12
    'hair',        # 13
    'hat',         # 14
    'earring',     # 15
    'necklace',    # 16
    'neck',        # 17
    'cloth',       # 18
    'unused',      # 19 reserved
)
NUM_PARSING_CLASSES = len(PARSING_CLASSES)
CLASS_ID = {name: i for i, name in enumerate(PARSING_CLASSES)}
# Ids that only a face (front) view can show.
FACE_ONLY_IDS = tuple(CLASS_ID[n] for n in ('left_eye', 'right_eye', 'left_brow', 'right_brow', 'nose',
                                             'mouth', 'upper_lip', 'lower_lip'))

# [20, 3] uint8 display colours, one per class.
PARSING_COLORS = np.array([
    [0, 0, 0], [204, 153, 128], [255, 110, 0], [180, 180, 255], [0, 120, 255], [0, 200, 255],
    [120, 60, 20], [170, 100, 40], [255, 0, 160], [200, 0, 255], [255, 40, 40], [230, 90, 120],
    [150, 20, 60], [110, 70, 20], [0, 160, 120], [255, 255, 0], [120, 255, 120], [255, 200, 160],
    [60, 90, 200], [128, 128, 128],
], dtype=np.uint8)
assert PARSING_COLORS.shape == (NUM_PARSING_CLASSES, 3)


def colorize(ids: np.ndarray) -> np.ndarray:
    """[H, W] integer class ids -> [H, W, 3] uint8 colours."""
    return PARSING_COLORS[np.clip(ids, 0, NUM_PARSING_CLASSES - 1)]

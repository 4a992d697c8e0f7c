"""Colour maps for non-RGB outputs (depth, sphere weight, seam overlay). Pure numpy."""
from __future__ import annotations

import numpy as np

# Anchors of the depth map, near (index 0) to far: warm and bright near, cool and dark far.
_DEPTH_ANCHORS = np.array([
    [255, 250, 200], [250, 190, 60], [225, 95, 40], [160, 40, 90], [75, 30, 120], [20, 20, 60],
], dtype=np.float32)
# Sphere ownership: A = orange, B = blue (weight 1 = A owns the pixel).
SPHERE_A_RGB = np.array([255, 140, 30], dtype=np.float32)
SPHERE_B_RGB = np.array([40, 120, 255], dtype=np.float32)
# Seam / pole overlay colours.
SEAM_A_RGB = np.array([255, 40, 40], dtype=np.float32)     # near A's seam or poles
SEAM_B_RGB = np.array([40, 255, 255], dtype=np.float32)    # near B's seam or poles
SEAM_BOTH_RGB = np.array([255, 255, 255], dtype=np.float32)
# Difference view (compare mode): black = equal, through purple and orange to white = the scale's top;
# green = surface on one side only.
_DIFF_ANCHORS = np.array([[0, 0, 0], [80, 20, 120], [210, 50, 60], [255, 170, 40], [255, 255, 255]],
                         dtype=np.float32)
ONE_SIDED_RGB = np.array([60, 220, 110], dtype=np.float32)


def _interp_anchors(t: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0) * (len(anchors) - 1)
    i = np.minimum(np.floor(t).astype(np.int64), len(anchors) - 2)
    f = (t - i)[..., None]
    return anchors[i] * (1 - f) + anchors[i + 1] * f


def depth_colors(t: np.ndarray) -> np.ndarray:
    """t in [0, 1] (0 = near, 1 = far), any shape -> [..., 3] uint8."""
    return np.round(_interp_anchors(np.asarray(t, np.float32), _DEPTH_ANCHORS)).astype(np.uint8)


def depth_to_rgb(depth: np.ndarray, mask: np.ndarray | None, background=(24, 24, 28)
                 ) -> tuple[np.ndarray, tuple[float, float]]:
    """[H, W] depth (world units) and optional [H, W] mask in [0, 1] -> ([H, W, 3] uint8, (near, far)).

    The range is taken over the foreground (mask > 0.5) so that the head uses the whole map;
    pixels with mask < 0.5 are drawn in ``background``.
    """
    fg = mask > 0.5 if mask is not None else np.ones(depth.shape, bool)
    values = depth[fg] if fg.any() else depth.reshape(-1)
    lo, hi = float(np.percentile(values, 1)), float(np.percentile(values, 99))
    if hi - lo < 1e-6:
        hi = lo + 1e-6
    rgb = depth_colors((depth - lo) / (hi - lo))
    rgb[~fg] = background
    return rgb, (lo, hi)


def weight_to_rgb(weight: np.ndarray, mask: np.ndarray | None = None, background=(24, 24, 28)) -> np.ndarray:
    """[H, W] sphere weight (1 = A owns, 0 = B owns) -> [H, W, 3] uint8 blend of the A and B colours.

    With a mask, the colour fades to ``background`` where there is no surface.
    """
    w = np.clip(weight, 0.0, 1.0)[..., None]
    rgb = w * SPHERE_A_RGB + (1 - w) * SPHERE_B_RGB
    if mask is not None:
        m = np.clip(mask, 0.0, 1.0)[..., None]
        rgb = m * rgb + (1 - m) * np.asarray(background, np.float32)
    return np.round(rgb).astype(np.uint8)


def gray_to_rgb(x: np.ndarray, lo: float = 0.0, hi: float = 1.0) -> np.ndarray:
    """[H, W] values -> [H, W, 3] uint8 grey, lo -> black, hi -> white."""
    t = np.clip((x - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    return np.repeat(np.round(t * 255).astype(np.uint8)[..., None], 3, axis=-1)


def seam_overlay(rgb: np.ndarray, near_a: np.ndarray, near_b: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Tint ``rgb`` [H, W, 3] uint8 where boolean [H, W] masks say the surface is near A's / B's seam or poles."""
    out = rgb.astype(np.float32)
    for sel, color in ((near_a & ~near_b, SEAM_A_RGB), (near_b & ~near_a, SEAM_B_RGB), (near_a & near_b, SEAM_BOTH_RGB)):
        out[sel] = (1 - alpha) * out[sel] + alpha * color
    return np.round(out).astype(np.uint8)


def difference_to_rgb(d: np.ndarray, one_sided: np.ndarray | None = None) -> np.ndarray:
    """[H, W] difference scaled to [0, 1] (0 = equal, 1 = the scale's top or more) -> [H, W, 3] uint8;
    pixels of the boolean [H, W] ``one_sided`` (surface on one side only) in green."""
    rgb = np.round(_interp_anchors(np.nan_to_num(np.asarray(d, np.float32)), _DIFF_ANCHORS)).astype(np.uint8)
    if one_sided is not None:
        rgb[one_sided] = ONE_SIDED_RGB.astype(np.uint8)
    return rgb

"""A preview per photo: the photo with its landmarks, detection box and crop square, the angles written on
it, and the crop beside it (with the mask's outline where a mask was made)."""
from __future__ import annotations

import numpy as np

PREVIEW_HEIGHT = 512


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)
    except TypeError:                                   # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def draw_preview(photo: np.ndarray, result, name: str) -> np.ndarray:
    """uint8 [PREVIEW_HEIGHT, W, 3]: left the annotated photo, right the crop. ``result``: a PhotoResult."""
    from PIL import Image, ImageDraw
    h, w = photo.shape[:2]
    k = PREVIEW_HEIGHT / h
    left = Image.fromarray(photo).resize((max(1, round(w * k)), PREVIEW_HEIGHT), Image.Resampling.LANCZOS)
    draw = ImageDraw.Draw(left)
    if result.landmarks is not None:
        for x, y in result.landmarks[:, :2] * k:
            draw.point((float(x), float(y)), fill=(80, 255, 80))
        from spherehead.photo.pose import five_points
        for x, y in five_points(result.landmarks)[:, :2] * k:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), outline=(255, 40, 40), width=2)
    if result.detection is not None:
        draw.rectangle(tuple(float(v) for v in result.detection.box * k), outline=(60, 140, 255), width=1)
    corners = [tuple(float(v) for v in c * k) for c in result.box.corners()]
    draw.line(corners + [corners[0]], fill=(255, 220, 0), width=2)
    draw.line([corners[0], corners[1]], fill=(255, 80, 0), width=4)      # the crop's top edge
    crop = Image.fromarray(result.image).resize((PREVIEW_HEIGHT, PREVIEW_HEIGHT), Image.Resampling.LANCZOS)
    if result.mask is not None:
        m = np.asarray(Image.fromarray(result.mask).resize((PREVIEW_HEIGHT, PREVIEW_HEIGHT))) >= 128
        edge = m ^ np.roll(m, 1, 0) | m ^ np.roll(m, 1, 1)
        arr = np.array(crop)
        arr[edge] = (0, 255, 255)
        crop = Image.fromarray(arr)
    canvas = Image.new('RGB', (left.width + PREVIEW_HEIGHT, PREVIEW_HEIGHT))
    canvas.paste(left, (0, 0))
    canvas.paste(crop, (left.width, 0))
    draw = ImageDraw.Draw(canvas)
    font = _font(16)
    how = 'estimated' if result.pose_from == 'face' else 'given (--yaw), no face found'
    lines = [name, f'yaw {result.yaw:+.1f}  pitch {result.pitch:+.1f}  roll {result.roll:+.1f} deg ({how})']
    if result.faces:
        lines.append(f'faces found: {result.faces} (largest used), detector score {result.score:.2f}')
    y = 4
    for line in lines:
        draw.text((6, y), line, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
        y += 20
    return np.asarray(canvas)

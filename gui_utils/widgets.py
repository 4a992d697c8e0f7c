"""Small ImGui drawing helpers shared by the visualizer widgets."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from imgui_bundle import imgui


def rgb_u32(rgb: Sequence[float], alpha: float = 1.0) -> int:
    """Packed ImGui colour from RGB in [0, 255] (ints) or [0, 1] (floats)."""
    r, g, b = (float(x) for x in rgb[:3])
    if max(r, g, b) > 1.0:
        r, g, b = r / 255.0, g / 255.0, b / 255.0
    return imgui.get_color_u32(imgui.ImVec4(r, g, b, alpha))


def help_marker(text: str) -> None:
    """A greyed (?) that shows ``text`` when hovered."""
    imgui.same_line()
    imgui.text_disabled('(?)')
    if imgui.is_item_hovered():
        imgui.set_tooltip(text)


def text_with_background(draw_list, pos: tuple[float, float], text: str,
                         color=(1.0, 1.0, 1.0), background=(0.0, 0.0, 0.0), alpha: float = 0.6) -> None:
    """Readable text over an image: a translucent box behind it."""
    size = imgui.calc_text_size(text)
    x, y = pos
    draw_list.add_rect_filled(imgui.ImVec2(x - 3, y - 1), imgui.ImVec2(x + size.x + 3, y + size.y + 1),
                              rgb_u32(background, alpha), 3.0)
    draw_list.add_text(imgui.ImVec2(x, y), rgb_u32(color), text)


def _split_word(word: str, width: float) -> list[str]:
    """A word wider than ``width`` pixels (e.g. a long path) cut into pieces that fit."""
    pieces, piece = [], ''
    for ch in word:
        if piece and imgui.calc_text_size(piece + ch).x > width:
            pieces.append(piece)
            piece = ''
        piece += ch
    return pieces + [piece]


def wrap_lines(text: str, width: float) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` pixels (words wider than that are cut)."""
    lines: list[str] = []
    for paragraph in text.split('\n'):
        line = ''
        for word in paragraph.split(' '):
            candidate = f'{line} {word}' if line else word
            if imgui.calc_text_size(candidate).x <= width:
                line = candidate
                continue
            if line:
                lines.append(line)
            *full, line = _split_word(word, width)
            lines.extend(full)
        lines.append(line)
    return lines


def wrapped_text_with_background(draw_list, pos: tuple[float, float], text: str, width: float,
                                 color=(1.0, 1.0, 1.0), background=(0.0, 0.0, 0.0), alpha: float = 0.6) -> float:
    """``text_with_background`` wrapped to ``width`` pixels; returns the height used (pixels)."""
    line = imgui.get_text_line_height_with_spacing()
    lines = wrap_lines(text, max(width, 20.0))
    for i, part in enumerate(lines):
        text_with_background(draw_list, (pos[0], pos[1] + i * line), part, color, background, alpha)
    return len(lines) * line


def color_bar(draw_list, x: float, y: float, width: float, height: float, colors: np.ndarray,
              top_label: str, bottom_label: str, title: str = '') -> None:
    """Vertical colour bar: ``colors`` [K, 3] uint8 from bottom (index 0) to top, labelled at both ends."""
    k = len(colors)
    seg = height / k
    for i in range(k):
        y1 = y + height - i * seg
        draw_list.add_rect_filled(imgui.ImVec2(x, y1 - seg - 0.5), imgui.ImVec2(x + width, y1), rgb_u32(colors[i]))
    draw_list.add_rect(imgui.ImVec2(x, y), imgui.ImVec2(x + width, y + height), rgb_u32((200, 200, 200)))
    line = imgui.get_text_line_height()
    if title:
        text_with_background(draw_list, (x - 4, y - 2 * line - 4), title)
    text_with_background(draw_list, (x - 4, y - line - 2), top_label)
    text_with_background(draw_list, (x - 4, y + height + 2), bottom_label)


def legend(draw_list, x: float, y: float, entries: Sequence[tuple[str, Sequence[int]]]) -> None:
    """Colour squares with names, one per line, starting at (x, y)."""
    line = imgui.get_text_line_height() + 2
    for i, (name, rgb) in enumerate(entries):
        yy = y + i * line
        size = imgui.calc_text_size(name)
        draw_list.add_rect_filled(imgui.ImVec2(x - 2, yy - 1), imgui.ImVec2(x + line + size.x + 4, yy + line - 1),
                                  rgb_u32((0, 0, 0), 0.6), 3.0)
        draw_list.add_rect_filled(imgui.ImVec2(x, yy + 1), imgui.ImVec2(x + line - 4, yy + line - 3), rgb_u32(rgb))
        draw_list.add_text(imgui.ImVec2(x + line, yy), rgb_u32((1.0, 1.0, 1.0)), name)


def button_row(labels: Sequence[str], active: str | None = None) -> str | None:
    """Buttons on one line; the ``active`` one is highlighted. Returns the clicked label or None."""
    clicked = None
    for i, label in enumerate(labels):
        if i:
            imgui.same_line()
        highlight = label == active
        if highlight:
            imgui.push_style_color(imgui.Col_.button.value, imgui.get_style_color_vec4(imgui.Col_.button_active.value))
        if imgui.button(label):
            clicked = label
        if highlight:
            imgui.pop_style_color()
    return clicked

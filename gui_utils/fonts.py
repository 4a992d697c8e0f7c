"""Fonts shipped inside the imgui-bundle wheel (nothing is downloaded)."""
from __future__ import annotations

import os

import imgui_bundle
from imgui_bundle import imgui

ASSETS = os.path.join(os.path.dirname(imgui_bundle.__file__), 'assets', 'fonts')
SANS = os.path.join(ASSETS, 'Roboto', 'Roboto-Regular.ttf')
MONO = os.path.join(ASSETS, 'Inconsolata-Medium.ttf')


def load_fonts(size_px: float = 15.0) -> dict[str, imgui.ImFont | None]:
    """Add the sans (default) and monospace fonts to the current ImGui context's atlas.

    Falls back to ImGui's built-in font when a file is missing from the wheel.
    Returns {'sans': font, 'mono': font}; a None entry means the default font.
    """
    io = imgui.get_io()
    fonts: dict[str, imgui.ImFont | None] = {'sans': None, 'mono': None}
    for key, path in (('sans', SANS), ('mono', MONO)):
        if os.path.isfile(path):
            fonts[key] = io.fonts.add_font_from_file_ttf(path, size_px)
    if fonts['sans'] is None:
        io.fonts.add_font_default()
    return fonts

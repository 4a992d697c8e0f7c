"""Can a window be opened here? Answered before glfw or OpenGL is touched.

The visualizer must never core-dump or print a traceback on a machine without a
display: it prints one line that says what to do and exits non-zero.
"""
from __future__ import annotations

import os
import sys

NO_DISPLAY_MESSAGE = (
    'spherehead visualizer: no display to open a window on: set DISPLAY (or WAYLAND_DISPLAY), '
    'or run it under `xvfb-run -a python visualizer.py ...`, '
    'or use the headless `spherehead generate` tools instead')


class NoDisplayError(RuntimeError):
    """No window can be opened; the message is one line meant for the user."""


def display_problem() -> str | None:
    """One line for the user when no display is reachable by the environment alone, else None.

    Only looks at the environment (no library is loaded), so it is safe to call first thing.
    Linux / BSD need DISPLAY (X11) or WAYLAND_DISPLAY; macOS and Windows always have one.
    """
    if sys.platform.startswith(('linux', 'freebsd', 'openbsd', 'netbsd')):
        if not os.environ.get('DISPLAY') and not os.environ.get('WAYLAND_DISPLAY'):
            return NO_DISPLAY_MESSAGE
    return None


def glfw_failure_message(what: str, detail: str | None) -> str:
    """One-line message for a glfw failure (init or window creation), with glfw's own reason."""
    reason = f' ({detail})' if detail else ''
    display = os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY') or 'none'
    return (f'spherehead visualizer: {what} on display {display!r}{reason}: check DISPLAY, '
            f'or run it under `xvfb-run -a python visualizer.py ...`, '
            f'or use the headless `spherehead generate` tools instead')

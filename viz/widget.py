"""Base class of the visualizer's control widgets.

A widget keeps its own plain state (numbers, strings, flags), draws ImGui controls that edit
that state (``draw``), and maps the state onto the render arguments (``apply``). ``apply``
never touches ImGui, OpenGL or the network, so it is unit-tested without a window.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from viz.render_args import RenderArgs

if TYPE_CHECKING:
    from viz.app import Visualizer


class Widget:
    title = ''
    default_open = False

    def __init__(self, viz: 'Visualizer | None' = None) -> None:
        self.viz = viz
        self.open = type(self).default_open     # panel header state at start-up
        self.reveal = False                     # open the panel header at the next frame (e.g. to show an error)

    def apply(self, args: RenderArgs) -> RenderArgs:
        """Widget state -> render arguments."""
        return args

    def tick(self, dt: float) -> None:
        """Advance animations by ``dt`` seconds (called once per GUI frame)."""

    def draw(self) -> None:
        """ImGui controls that edit the widget's state."""

"""What every dock of the plugin is: a magicgui Container that scrolls, so four docks fit a 1366 x 768 screen.

napari docks a magicgui widget by its ``native`` Qt widget; magicgui's ``scrollable=True`` puts the layout
inside a ``QScrollArea`` but answers ``native`` with the inner widget, so the scroll area would be lost.
:class:`ScrollDock` answers ``native`` with the scroll area itself: napari docks it, the dock's minimum
height is the scroll area's (a few rows), and the controls scroll when the dock is shorter than they are.
:meth:`ScrollDock.content` is the widget holding the layout (for inserting plain Qt widgets).
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container
from qtpy.QtWidgets import QFrame, QLayout, QScrollArea, QWidget

#: Height (px) a dock asks for at least, whatever its content: a few rows, then it scrolls.
MIN_DOCK_HEIGHT = 160


class ScrollDock(Container):
    """A vertical magicgui Container inside a scroll area that napari docks as a whole."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(scrollable=True, **kwargs)
        scroll = self.root_native_widget
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setMinimumHeight(MIN_DOCK_HEIGHT)

    @property
    def native(self) -> QScrollArea:  # type: ignore[override]
        """The scroll area (what napari puts in the dock)."""
        return self.root_native_widget

    def content(self) -> QWidget:
        """The widget inside the scroll area that holds the controls' layout."""
        return self.root_native_widget.widget()

    def content_layout(self) -> QLayout:
        """The layout of the controls (to insert a plain Qt widget such as a plot)."""
        return self.content().layout()

"""What every dock of the plugin is: a magicgui Container that scrolls, so four docks fit a 1366 x 768 screen.

napari docks a magicgui widget by its ``native`` Qt widget; magicgui's ``scrollable=True`` puts the layout
inside a ``QScrollArea`` but answers ``native`` with the inner widget, so the scroll area would be lost.
:class:`ScrollDock` answers ``native`` with the scroll area itself: napari docks it, the dock's minimum
height is the scroll area's (a few rows), and the controls scroll when the dock is shorter than they are.
:meth:`ScrollDock.content` is the widget holding the layout (for inserting plain Qt widgets).

Two more things keep four docks usable on a small screen: a dock opened while another of the plugin's
docks is shown in the same dock area joins it as a tab (so each gets the column's full height instead of a
quarter of it), and drop-down lists shrink to the dock's width instead of widening it to their longest
entry.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QBoxLayout,
    QComboBox,
    QDockWidget,
    QFrame,
    QLabel,
    QMainWindow,
    QScrollArea,
    QSizePolicy,
    QWidget,
)

#: Height (px) a dock asks for at least, whatever its content: a few rows, then it scrolls.
MIN_DOCK_HEIGHT = 120
#: Object name of every dock's scroll area (how a dock finds the plugin's other docks).
DOCK_OBJECT_NAME = "napari-octseg-dock"
#: Characters a drop-down list shows at least (longer entries are elided, the list pops up wider).
COMBO_MIN_CHARS = 12


class ScrollDock(Container):
    """A vertical magicgui Container inside a scroll area that napari docks as a whole."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(scrollable=True, **kwargs)
        scroll = self.root_native_widget
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        # a dock narrower than its widest row scrolls sideways too: every control stays reachable
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        scroll.setMinimumHeight(MIN_DOCK_HEIGHT)
        scroll.setObjectName(DOCK_OBJECT_NAME)
        # once napari has docked us (after the dock's constructor returns), join the plugin's other docks
        QTimer.singleShot(0, self.tabify_with_siblings)

    @property
    def native(self) -> QScrollArea:  # type: ignore[override]
        """The scroll area (what napari puts in the dock)."""
        return self.root_native_widget

    def content(self) -> QWidget:
        """The widget inside the scroll area that holds the controls' layout."""
        return self.root_native_widget.widget()

    def content_layout(self) -> QBoxLayout:
        """The layout of the controls (to insert a plain Qt widget such as a plot)."""
        layout = self.content().layout()
        if not isinstance(layout, QBoxLayout):  # magicgui lays a Container out in a box layout
            raise TypeError(f"unexpected dock layout {type(layout).__name__}")
        return layout

    def compact(self) -> None:
        """Let drop-down lists shrink to the dock's width and long lines wrap within it; keep the rows at the top.

        Call once, after the dock's widgets are added (widgets appended later land above the stretch).
        """
        if not getattr(self, "_compacted", False):
            self.content_layout().addStretch(1)
            self._compacted = True
        for combo in self.content().findChildren(QComboBox):
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(COMBO_MIN_CHARS)
        for label in self.content().findChildren(QLabel):
            label.setWordWrap(True)
            policy = label.sizePolicy()
            if policy.horizontalPolicy() == QSizePolicy.Policy.Fixed:
                # magicgui's Label is fixed-width: wrapped, it would insist on its preferred text block
                # (~300 px for a long note) and widen the dock; allowed to shrink, it needs its longest word
                policy.setHorizontalPolicy(QSizePolicy.Policy.Preferred)
                policy.setHeightForWidth(True)
                label.setSizePolicy(policy)

    def tabify_with_siblings(self) -> bool:
        """Join another visible dock of the plugin in the same dock area as a tab; ``True`` if it did."""
        try:
            dock = self.native.parent()
        except RuntimeError:  # closed before the event loop came round
            return False
        while dock is not None and not isinstance(dock, QDockWidget):
            dock = dock.parent()
        window = dock.parent() if dock is not None else None
        if dock is None or not isinstance(window, QMainWindow) or dock.isFloating():
            return False
        area = window.dockWidgetArea(dock)
        for other in window.findChildren(QDockWidget):
            inner = other.widget()
            if other is dock or other.isFloating() or not other.isVisible() or inner is None:
                continue
            if inner.objectName() == DOCK_OBJECT_NAME and window.dockWidgetArea(other) == area:
                window.tabifyDockWidget(other, dock)
                dock.show()
                dock.raise_()
                return True
        return False

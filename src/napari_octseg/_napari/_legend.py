"""A class legend for a dock: one row per class, a colour swatch and the class name."""

from __future__ import annotations

from collections.abc import Sequence

from magicgui.widgets import Label
from qtpy.QtCore import Qt

from ..core.classes import CLASS_COLORS, CLASS_NAMES, FLUID_CLASS, LAYER_CLASSES


def rgb_hex(rgba: Sequence[float]) -> str:
    """``#rrggbb`` of an RGBA colour in 0..1."""
    return "#" + "".join(f"{round(255 * float(c)):02x}" for c in rgba[:3])


def legend_entries(class_names: Sequence[str] = CLASS_NAMES) -> list[tuple[int, str, str]]:
    """(value, name, ``#rrggbb``) of every class drawn in colour (the retinal layers and fluid)."""
    shown = [*LAYER_CLASSES, FLUID_CLASS]
    return [(v, class_names[v], rgb_hex(CLASS_COLORS[v])) for v in shown if v < len(class_names)]


class ClassLegend(Label):
    """Two columns of ``■ name`` in each class's label colour (vitreous and choroid are left uncoloured)."""

    def __init__(self, class_names: Sequence[str] = CLASS_NAMES) -> None:
        super().__init__(label="classes", value="")
        self.native.setTextFormat(Qt.TextFormat.RichText)
        self.native.setToolTip("colours of the Labels layers that Segment layers adds (value: class)")
        self.set_classes(class_names)

    def set_classes(self, class_names: Sequence[str]) -> None:
        """Show the legend of ``class_names`` (a model may name its classes differently)."""
        self.entries = legend_entries(class_names)
        cells = [
            f'<td><span style="color:{colour}; font-size:14pt">&#9632;</span>&nbsp;{value} {name}</td>'
            for value, name, colour in self.entries
        ]
        rows = ["<tr>" + "".join(cells[i : i + 2]) + "</tr>" for i in range(0, len(cells), 2)]
        self.native.setText('<table cellspacing="2">' + "".join(rows) + "</table>")

"""Matplotlib canvases inside docks, drawn in the colours of napari's current theme (dark by default)."""

from __future__ import annotations

from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure


def theme_colors(theme: str | None = None) -> dict[str, str]:
    """``background``, ``panel`` and ``text`` colours (hex) of napari's theme ``theme`` (default: the current one)."""
    try:
        from napari.settings import get_settings
        from napari.utils.theme import get_theme

        name = theme or get_settings().appearance.theme
        if name == "system":
            name = "dark"
        t = get_theme(name)
        return {"background": t.background.as_hex(), "panel": t.foreground.as_hex(), "text": t.text.as_hex()}
    except Exception:  # an unknown theme: napari's dark colours
        return {"background": "#23242b", "panel": "#2e333e", "text": "#f0f1f2"}


def style_axes(figure: Figure, ax: Axes, colors: dict[str, str], fontsize: float = 8) -> None:
    """Theme colours for the figure, the axes' face, spines, ticks, labels and title."""
    figure.set_facecolor(colors["background"])
    ax.set_facecolor(colors["panel"])
    for spine in ax.spines.values():
        spine.set_color(colors["text"])
        spine.set_alpha(0.6)
    ax.tick_params(colors=colors["text"], labelsize=fontsize - 1)
    ax.xaxis.label.set_color(colors["text"])
    ax.yaxis.label.set_color(colors["text"])
    ax.title.set_color(colors["text"])
    ax.xaxis.label.set_fontsize(fontsize)
    ax.yaxis.label.set_fontsize(fontsize)


def style_legend(legend: Any, colors: dict[str, str]) -> None:
    """Legend text in the theme's text colour on the panel colour."""
    if legend is None:
        return
    legend.get_frame().set_facecolor(colors["panel"])
    legend.get_frame().set_edgecolor(colors["text"])
    for text in legend.get_texts():
        text.set_color(colors["text"])


class ThemedCanvas(FigureCanvasQTAgg):
    """A constrained-layout figure on a Qt canvas, ``height_px`` tall at least, in the theme's colours."""

    def __init__(self, height_px: int, figsize: tuple[float, float] = (3.2, 1.8)) -> None:
        self.figure = Figure(figsize=figsize, dpi=90, layout="constrained")
        super().__init__(self.figure)
        self.setMinimumHeight(height_px)
        self.setMinimumWidth(160)  # matplotlib would ask for the figure's full width; the dock may be narrower
        self.colors = theme_colors()
        self.figure.set_facecolor(self.colors["background"])

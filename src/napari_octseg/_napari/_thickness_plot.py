"""The Thickness dock's plot: the en-face map in fundus view with the ETDRS grid, or a profile along the scan.

* **Volumes** (several B-scans): the map of the chosen layer, superior up and the nasal side where the
  fundus (SLO) image has it (right for OD, left for OS), axes in µm from the first A-scan / B-scan, with
  S / I / N / T written at the edges, the ETDRS circles and spokes of
  :func:`napari_octseg.core.etdrs.etdrs_outline`, each sector's mean and a colour bar.
* **Circle scans**: thickness against the angle from the temporal meridian (T-S-N-I-T), with the
  Garway-Heath sector edges and each sector's mean; several circles are averaged by angle.
* **Single line scans**: thickness along the scan (µm from its first A-scan).
"""

from __future__ import annotations

import numpy as np

from ..core.etdrs import TSNIT_EDGES_DEG, SectorTable
from ..core.etdrs_outline import etdrs_outline, tsnit_label_degrees
from ._plot import ThemedCanvas, style_axes

#: Colour of the grid, the sector values and the S/I/N/T letters over the map.
GRID_COLOR = "white"


def _fmt(value: float) -> str:
    return f"{value:.0f}" if np.isfinite(value) else "–"


class ThicknessPlot(ThemedCanvas):
    """Map or profile of one thickness layer; :attr:`kind` says which is drawn (``"map"``, ``"profile"``)."""

    def __init__(self, height_px: int = 300) -> None:
        super().__init__(height_px, figsize=(3.4, 3.3))
        self.kind = "none"
        #: The (x, y) data of the profile drawn last, or the image array of the map (for tests and scripts).
        self.drawn: object = None
        #: Text drawn at the map's edges / over the sectors (for tests).
        self.edge_labels: dict[str, str] = {}
        self.setToolTip("thickness of the chosen layer: en-face map (superior up) or profile along the scan")

    def _new_axes(self):  # noqa: ANN202 - a matplotlib Axes
        self.figure.clear()
        ax = self.figure.add_subplot(111)
        style_axes(self.figure, ax, self.colors)
        return ax

    def show_map(
        self,
        values: np.ndarray,
        scale_zx: tuple[float, float] | None,
        unit: str,
        layer: str,
        table: SectorTable,
    ) -> None:
        """Draw ``values`` (n_bscans, width) as an en-face map with superior up and the grid of ``table``."""
        ax = self._new_axes()
        sz, sx = scale_zx if scale_zx is not None else (1.0, 1.0)
        n, width = values.shape
        superior_up = table.bscan_order == "inferior_to_superior"  # B-scan index grows towards superior
        extent = (-0.5 * sx, (width - 0.5) * sx, -0.5 * sz, (n - 0.5) * sz)
        finite = values[np.isfinite(values)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        image = ax.imshow(
            values,
            cmap="turbo",
            vmin=lo,
            vmax=hi if hi > lo else lo + 1.0,
            origin="lower" if superior_up else "upper",
            extent=extent,
            aspect="equal" if scale_zx is not None else "auto",
            interpolation="nearest",
        )
        axis_unit = "µm" if scale_zx is not None else "px"
        ax.set_xlabel(f"A-scan axis ({axis_unit})")
        ax.set_ylabel(f"B-scan axis ({axis_unit})")
        bar = self.figure.colorbar(image, ax=ax, shrink=0.85)
        bar.set_label(f"{layer} thickness ({unit})", color=self.colors["text"], fontsize=8)
        bar.ax.tick_params(colors=self.colors["text"], labelsize=7)
        self.edge_labels = {"top": "S", "bottom": "I"}
        if table.laterality in ("OD", "OS"):
            nasal_right = table.laterality == "OD"
            self.edge_labels.update({"right": "N" if nasal_right else "T", "left": "T" if nasal_right else "N"})
        # inside the map's edges, on a dark box: clear of the tick labels, the title and the colour bar
        box = {"boxstyle": "round,pad=0.15", "facecolor": "black", "alpha": 0.55, "edgecolor": "none"}
        style = {"color": GRID_COLOR, "fontsize": 10, "fontweight": "bold", "transform": ax.transAxes, "bbox": box}
        places = {"top": (0.5, 0.975, "center", "top"), "bottom": (0.5, 0.025, "center", "bottom")}
        places |= {"left": (0.025, 0.5, "left", "center"), "right": (0.975, 0.5, "right", "center")}
        for side, letter in list(self.edge_labels.items()):
            x, y, ha, va = places[side]
            ax.text(x, y, letter, ha=ha, va=va, **style)
        if table.grid == "etdrs" and table.fovea is not None and table.laterality in ("OD", "OS"):
            self._draw_etdrs(ax, table, (sz, sx), layer)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3]) if superior_up else ax.set_ylim(extent[3], extent[2])
        lat = f"{table.laterality}, " if table.laterality else ""
        ax.set_title(f"{lat}fundus view: superior up", fontsize=8)
        self.kind, self.drawn = "map", values
        self.draw_idle()

    def _draw_etdrs(self, ax, table: SectorTable, scale_zx: tuple[float, float], layer: str) -> None:  # noqa: ANN001
        if table.fovea is None:  # no centre, no grid
            return
        sz, sx = scale_zx
        fovea_um = (table.fovea[0] * sz, table.fovea[1] * sx)
        outline = etdrs_outline().to_map(fovea_um, str(table.laterality), table.bscan_order)
        for line in (*outline.circles, *outline.spokes):
            ax.plot(line[:, 1], line[:, 0], color=GRID_COLOR, lw=0.8, alpha=0.9)
        means = {r.sector: r.mean for r in table.rows if r.layer == layer}
        for sector, (z, x) in outline.labels.items():
            text = _fmt(means.get(sector, np.nan))
            self.edge_labels[sector] = text
            ax.text(x, z, text, color=GRID_COLOR, fontsize=7, ha="center", va="center", fontweight="bold")

    def show_profile(
        self,
        values: np.ndarray,
        scale_x: float | None,
        unit: str,
        layer: str,
        table: SectorTable,
        circle: bool,
    ) -> None:
        """Draw the thickness along the scan (mean over the B-scans, by A-scan); TSNIT sectors for a circle."""
        ax = self._new_axes()
        with np.errstate(invalid="ignore"):
            profile = np.nanmean(values, axis=0) if values.shape[0] > 1 else values[0]
        width = profile.size
        if circle:
            x = (np.arange(width) + 0.5) / width * 360.0
            ax.set_xlabel("position on the circle (° from temporal)")
            ax.set_xlim(0, 360)
            # the quadrant each tick points to, under its angle (scan order T-S-N-I-T, both eyes)
            ax.set_xticks([0, 90, 180, 270, 360], ["0°\nT", "90°\nS", "180°\nN", "270°\nI", "360°\nT"])
        else:
            step = scale_x if scale_x else 1.0
            x = np.arange(width) * step
            ax.set_xlabel(f"position along the scan ({'µm' if scale_x else 'px'})")
        ax.plot(x, profile, color="#4c9be8", lw=1.2)
        ax.set_ylabel(f"{layer} thickness ({unit})")
        ax.grid(alpha=0.25, color=self.colors["text"])
        self.edge_labels = {}
        if circle and table.grid == "tsnit":
            means = {r.sector: r.mean for r in table.rows if r.layer == layer}
            for edge in TSNIT_EDGES_DEG:
                ax.axvline(edge, color=self.colors["text"], lw=0.8, alpha=0.6)
            for sector, angle in tsnit_label_degrees().items():
                text = f"{sector}\n{_fmt(means.get(sector, np.nan))}"
                self.edge_labels[sector] = text
                for a in (angle, 360.0) if sector == "T" else (angle,):
                    ax.text(
                        a,
                        1.0,
                        text,
                        transform=ax.get_xaxis_transform(),
                        ha="center",
                        va="bottom",
                        fontsize=7,
                        color=self.colors["text"],
                    )
            ax.set_title(" ", fontsize=14)  # room for the sector labels
        else:
            ax.set_title("thickness along the scan", fontsize=8)
        self.kind, self.drawn = "profile", (x, profile)
        self.draw_idle()

"""Dock widget **Layer thickness**: en-face thickness maps, ETDRS/TSNIT sectors and CSV export.

A thin adapter over :func:`napari_octseg.core.thickness.analyse`. It copies the chosen Labels layer
(never writes into it), measures it through the docks' job runner, then shows, in the dock (the viewer
keeps showing the B-scans; no layer is added):

* for a volume, the en-face map of the chosen layer the way a clinician reads it: fundus view,
  superior up, nasal towards the optic disc (right for OD, left for OS; the eye comes from the image
  or the **eye** choice), S / I / N / T at the edges, the ETDRS grid (geometry from
  :func:`napari_octseg.core.etdrs.etdrs_outline`) with each sector's mean, and a colour bar;
* for a circle scan, the thickness along the circle (TSNIT profile with the sector edges and means);
  for a single line scan, the thickness along the line;
* a table of the sector values of the chosen layer, and **Export CSV** (default name from the image).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Label, PushButton, Table
from napari.layers import Points
from napari.utils.notifications import show_info
from qtpy.QtWidgets import QSizePolicy

from ..core.errors import InputError, LabelError, OctsegError
from ..core.etdrs import MIN_COVERAGE, SectorTable
from ..core.thickness import THICKNESS_LAYERS, TOTAL_RETINA, ThicknessReport, analyse, export_csv
from ..io._sidecar import scan_date
from ..io.provenance import SEGMENTATION_KEY, scan_identity
from . import _common
from ._common import Image, Labels, short_name, volume_from_layer
from ._dock import ScrollDock
from ._runner import JobRunner
from ._thickness_plot import ThicknessPlot

AUTO_FOVEA = "auto (thinnest inner retina)"
FROM_IMAGE = "from image"
_NO_IMAGE = "(none)"
#: Full names of the TSNIT (Garway-Heath) sectors, shown as the table rows' tooltips.
SECTOR_NAMES = {
    "G": "global: the whole circle",
    "T": "temporal",
    "TS": "temporal-superior",
    "NS": "nasal-superior",
    "N": "nasal",
    "NI": "nasal-inferior",
    "TI": "temporal-inferior",
}


class ThicknessWidget(ScrollDock):
    """Measure layer thickness from a Labels layer; show the map or profile, sector table; export CSV."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self.source_labels = ComboBox(
            label="labels", choices=self._labels_choices, tooltip="the Labels layer to measure (only read)"
        )
        self.image = ComboBox(
            label="image",
            choices=self._image_choices,
            tooltip="the image the labels belong to: gives the µm scale, the eye and the scan pattern",
        )
        self.laterality = ComboBox(
            label="eye",
            choices=[FROM_IMAGE, "OD", "OS"],
            value=FROM_IMAGE,
            tooltip="right (OD) or left (OS) eye: places nasal and temporal (from the file when it says)",
        )
        self.fovea = ComboBox(
            label="fovea",
            choices=self._fovea_choices,
            tooltip="centre of the ETDRS grid: found automatically, or the last point of a Points layer",
        )
        self.layer = ComboBox(
            label="show",
            choices=list(THICKNESS_LAYERS),
            value=TOTAL_RETINA,
            tooltip="the layer whose map, profile and sector values are shown (the CSV holds all of them)",
        )
        self.run_button = PushButton(text="Measure thickness", tooltip="measure every layer's thickness")
        self.runner = JobRunner(run_buttons=[self.run_button], cancel_text="cancelled: the previous result is kept")
        self.progress, self.cancel_button, self.status = (
            self.runner.progress,
            self.runner.cancel_button,
            self.runner.status,
        )
        self.plot = ThicknessPlot()
        self.table = Table(
            tooltip="each sector of the shown layer: mean thickness, volume (volumes only), A-scans measured "
            "and the share of the sector measured"
        )
        self.note = Label(value="")
        self.export_button = PushButton(
            text="Export CSV...", enabled=False, tooltip="write the per-A-scan CSV and the sector CSV beside it"
        )
        super().__init__(
            widgets=[
                self.source_labels,
                self.image,
                self.laterality,
                self.fovea,
                self.layer,
                self.run_button,
                *self.runner.widgets(),
                self.table,
                self.note,
                self.export_button,
            ]
        )
        self.content_layout().insertWidget(self.index(self.table), self.plot)
        self.table.native.setMinimumHeight(200)
        self.note.native.setWordWrap(True)
        # long lines wrap to the dock's width instead of widening the dock (and hiding Cancel and the plot's edge)
        # (the status line does so itself)
        self.note.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.report: ThicknessReport | None = None
        self._source: dict[str, Any] = {}
        self.run_button.changed.connect(self.start)
        self.layer.changed.connect(self.show_layer)
        self.export_button.changed.connect(self._export_dialog)
        self.source_labels.changed.connect(self._pick_image)
        viewer.layers.events.inserted.connect(self._refresh)
        viewer.layers.events.removed.connect(self._refresh)
        self._pick_image()
        self.compact()

    @property
    def _worker(self) -> Any:
        return self.runner.worker

    # -- choices ---------------------------------------------------------------------------------

    def _labels_choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Labels)]

    def _image_choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        return [(_NO_IMAGE, None)] + [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _fovea_choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        return [(AUTO_FOVEA, None)] + [
            (f"point of '{layer.name}'", layer) for layer in self._viewer.layers if isinstance(layer, Points)
        ]

    def _refresh(self, _event: Any = None) -> None:
        self.reset_choices()

    def _pick_image(self, _value: Any = None) -> None:
        """Select the image the labels were made from (recorded by Segment layers) or of equal shape."""
        labels = self.source_labels.value
        if labels is None:
            return
        recorded = labels.metadata.get("octseg_segmentation", {}).get("image_layer")
        for name, layer in self._image_choices():
            if layer is not None and (name == recorded or tuple(layer.data.shape) == tuple(labels.data.shape)):
                self.image.value = layer
                return

    # -- inputs ----------------------------------------------------------------------------------

    def _inputs(self) -> dict[str, Any]:
        """Labels copy, scale, laterality, scan pattern and fovea from the chosen layers."""
        labels_layer = self.source_labels.value
        if labels_layer is None:
            raise LabelError("no Labels layer: segment an image or open labels first")
        labels = np.array(labels_layer.data, copy=True)  # the user may paint while we measure
        if labels.ndim == 2:
            labels = labels[None]
        image = self.image.value
        scale, lat, pattern = None, None, "volume" if labels.shape[0] > 1 else "line"
        if image is not None:
            volume = volume_from_layer(image)
            if volume.shape != labels.shape:
                raise LabelError(
                    f"labels {labels_layer.name!r} have shape {labels.shape}, image {image.name!r} has {volume.shape}"
                )
            scale, lat = volume.scale_um, volume.laterality
            pattern = volume.scan_pattern if volume.scan_pattern != "unknown" else pattern
        elif not np.allclose(labels_layer.scale, 1.0):
            z, y, x = (float(s) for s in ([1.0] + list(labels_layer.scale))[-3:])
            scale = (z, y, x)
        seg = labels_layer.metadata.get(SEGMENTATION_KEY) or {}
        lat = lat or seg.get("laterality")
        if self.laterality.value != FROM_IMAGE:
            lat = self.laterality.value
        fovea = self._fovea_from_points(self.fovea.value, scale) if self.fovea.value is not None else None
        model = seg.get("model_source")
        if seg.get("model_sha256"):
            model = {"name": seg.get("model_name"), "short_hash": str(seg["model_sha256"])[:12]}
        identity = scan_identity(
            (volume.meta.get("source") if image is not None else None) or seg.get("image_source"),
            fallback_name=labels_layer.name,
            laterality=lat,
            scan_pattern=pattern,
            scan_date=scan_date(volume) if image is not None else seg.get("scan_date"),
            model=model,
        )
        return {
            "identity": identity,
            "labels": labels,
            "scale": scale,
            "laterality": lat,
            "pattern": pattern,
            "fovea": fovea,
            "name": labels_layer.name,
            "stem": self._stem(image, labels_layer),
            "folder": self._folder(image),
        }

    @staticmethod
    def _fovea_from_points(points: Points, scale: tuple[float, float, float] | None) -> tuple[float, float]:
        """(B-scan, A-scan) of the last point: on the volume (3-D) or on an en-face map (2-D), in µm."""
        if len(points.data) == 0:
            raise InputError(f"Points layer {points.name!r} is empty: add a point on the fovea")
        world = np.asarray(points.data_to_world(points.data[-1]), dtype=float)
        z, x = (world[-3], world[-1]) if world.size >= 3 else (world[-2], world[-1])
        sz, sx = (scale[0], scale[2]) if scale is not None else (1.0, 1.0)
        return (z / sz if sz > 0 else 0.0, x / sx)

    @staticmethod
    def _stem(image: Image | None, labels: Labels) -> str:
        """Name for exports: the image's source file stem, else its layer name without extension."""
        source = (image.metadata.get(_common.META_KEY, {}).get("meta", {}) or {}).get("source") if image else None
        if source:
            return Path(str(source)).stem
        return short_name(image.name if image is not None else labels.name)

    @staticmethod
    def _folder(image: Image | None) -> str:
        source = (image.metadata.get(_common.META_KEY, {}).get("meta", {}) or {}).get("source") if image else None
        return str(Path(str(source)).parent) if source else ""

    # -- running ---------------------------------------------------------------------------------

    def start(self, _value: Any = None) -> None:
        """Measure the chosen labels in the background (no-op while running)."""
        if self.runner.running:
            return
        try:
            src = self._inputs()
        except OctsegError as exc:
            _common.report_error(exc)
            return
        job = partial(
            analyse,
            src["labels"],
            src["scale"],
            src["laterality"],
            src["pattern"],
            fovea=src["fovea"],
            cancel=self.runner.cancel_requested,
        )
        self.runner.start(
            job,
            busy=f"measuring {src['name']}...",
            on_return=lambda report: self.set_report(report, src),
            progress_text=lambda p: f"B-scan {p.done}/{p.total}" if p.stage != "sectors" else "sectors...",
        )

    def cancel(self, _value: Any = None) -> None:
        """Stop the measurement at its next chunk of B-scans; the previous result stays."""
        self.runner.cancel()

    def set_report(self, report: ThicknessReport, source: dict[str, Any] | None = None) -> str:
        """Show a finished measurement (map or profile, table) and enable export; return the status line."""
        self.report = report
        if source is not None:
            self._source = source
        self.export_button.enabled = True
        self.show_layer()
        n, width = report.thickness.shape
        return f"measured {self._source.get('name', 'labels')}: {n} B-scan(s) x {width} A-scans"

    # -- display ---------------------------------------------------------------------------------

    def _map_scale(self) -> tuple[float, float] | None:
        """(B-scan, A-scan) spacing of the map in µm (B-scan spacing 0 -> the A-scan spacing), or None."""
        scale = self.report.thickness.scale_um if self.report else None
        if scale is None:
            return None
        return (scale[0] if scale[0] > 0 else scale[2], scale[2])

    def show_layer(self, _value: Any = None) -> None:
        """Show the chosen layer's map or profile and its sector table (after a measurement)."""
        if self.report is None:
            return
        th, table = self.report.thickness, self.report.sectors
        name, unit = self.layer.value, "µm" if th.unit == "um" else "px"
        data = th.maps[name]
        pattern = self._source.get("pattern", "volume")
        if pattern == "circle" or data.shape[0] == 1 or table.grid == "tsnit":
            scale = self._map_scale()
            circle = pattern == "circle" or table.grid == "tsnit"
            self.plot.show_profile(data, scale[1] if scale else None, unit, name, table, circle=circle)
        else:
            self.plot.show_map(data, self._map_scale(), unit, name, table)
        self._fill_table(table, name, unit)
        fluid = th.fluid_volume_mm3()
        fluid_text = f"; fluid in the scan {fluid:.4f} mm³" if np.isfinite(fluid) else ""
        self.note.value = (table.note or table.grid) + fluid_text + self._table_key(name)

    def _table_key(self, name: str) -> str:
        """What a reader of the table needs to know: sector names of a circle scan, why a mean is missing."""
        table = self.report.sectors if self.report else None
        if table is None:
            return ""
        text = ". G = the whole circle" if table.grid == "tsnit" else ""
        if any(not np.isfinite(r.mean) for r in table.rows if r.layer == name):
            text += f". A dash: under {MIN_COVERAGE:.0%} of the sector was measured, so no mean"
        return text

    def _fill_table(self, table: SectorTable, name: str, unit: str) -> None:
        from qtpy.QtWidgets import QHeaderView, QStyledItemDelegate, QTableWidgetItem

        def fmt(v: float, spec: str) -> str:
            return format(v, spec) if np.isfinite(v) else "–"

        rows = [r for r in table.rows if r.layer == name]
        # a circle or a line has no sector volume: no column of dashes
        with_volume = any(np.isfinite(r.volume_mm3) for r in rows)
        header = ["sector", unit, *(["mm³"] if with_volume else []), "A-scans", "measured"]  # unit: mean thickness
        qt = self.table.native
        qt.clear()
        qt.setColumnCount(len(header))
        qt.setRowCount(len(rows))
        qt.setHorizontalHeaderLabels(header)
        for i, r in enumerate(rows):
            volume = [fmt(r.volume_mm3, ".4f")] if with_volume else []
            cells = (r.sector, fmt(r.mean, ".1f"), *volume, str(r.n_ascans), f"{r.coverage:.0%}")
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                item.setToolTip(SECTOR_NAMES.get(r.sector, r.sector))
                qt.setItem(i, j, item)
        qt.setItemDelegate(QStyledItemDelegate(qt))  # show our text as is (magicgui reformats numbers)
        qt.verticalHeader().setVisible(False)
        qt.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)  # fit the dock, no scrolling

    def table_rows(self) -> list[list[str]]:
        """The table as shown (header row first), for scripts and tests."""
        qt = self.table.native
        header = [qt.horizontalHeaderItem(j).text() for j in range(qt.columnCount())]
        return [header] + [[qt.item(i, j).text() for j in range(qt.columnCount())] for i in range(qt.rowCount())]

    # -- export ----------------------------------------------------------------------------------

    def sector_path(self, path: str | Path) -> Path:
        """Companion sector CSV of ``path``: ``<stem>_etdrs.csv``, ``_tsnit.csv`` or ``_sectors.csv``."""
        p = Path(path)
        grid = self.report.sectors.grid if self.report else "none"
        return p.with_name(f"{p.stem}_{grid if grid != 'none' else 'sectors'}.csv")

    def export_csv(self, path: str | Path, force: bool = False) -> list[Path] | None:
        """Write the per-A-scan CSV at ``path`` and the sector CSV beside it; refuse to overwrite
        unless ``force``. Returns the files written (``None`` after an error notification)."""
        try:
            if self.report is None:
                raise InputError("nothing to export: measure thickness first")
            written = export_csv(
                self.report,
                path,
                self.sector_path(path),
                volume_name=self._source.get("name", "labels"),
                force=force,
                identity=self._source.get("identity"),
            )
        except (OctsegError, OSError) as exc:
            _common.report_error(exc)
            return None
        show_info("wrote " + ", ".join(p.name for p in written))
        return written

    def default_csv_path(self) -> Path:
        """``<image stem>_thickness.csv`` beside the source file when it is known (else in the current folder)."""
        stem = self._source.get("stem") or short_name(self._source.get("name", "labels"))
        return Path(self._source.get("folder") or ".") / f"{stem}_thickness.csv"

    def _export_dialog(self, _value: Any = None) -> None:
        from qtpy.QtWidgets import QFileDialog, QMessageBox

        # the save dialog itself asks before replacing the chosen file
        path, _ = QFileDialog.getSaveFileName(
            self.native, "Export thickness CSV", str(self.default_csv_path()), "CSV (*.csv)"
        )
        if not path:
            return
        companion = self.sector_path(path)
        if companion.exists():
            answer = QMessageBox.question(self.native, "Overwrite?", f"{companion.name} exists. Replace it?")
            if answer != QMessageBox.StandardButton.Yes:
                self.status.value = "export cancelled: nothing was written"
                return
        if self.export_csv(path, force=True) is not None:
            self.status.value = f"exported {Path(path).name} and {companion.name}"

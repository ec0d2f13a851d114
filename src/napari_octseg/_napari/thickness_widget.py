"""Dock widget **Layer thickness**: en-face thickness maps, ETDRS/TSNIT sectors and CSV export.

A thin adapter over :func:`napari_octseg.core.thickness.analyse`. It copies the chosen Labels layer
(never writes into it), measures in a worker thread, then shows:

* the en-face map of the chosen layer as an Image layer, shape (n_bscans, width), scale (z, x) in µm
  (``turbo`` colormap; the dock shows a colour bar with the contrast limits in µm). The source image
  and labels layers are hidden so the map is seen on its own (tick them to show them again);
* the ETDRS grid (circles of 1, 3, 6 mm and the quadrant lines) as a Shapes layer in µm, with each
  sector's name and mean thickness as text in a Points layer (TSNIT: sector edges along the circle);
* a table of the sector values of the chosen layer, and **Export CSV**.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, Label, ProgressBar, PushButton, Table
from napari.layers import Points, Shapes
from napari.utils.notifications import show_info

from ..core.errors import InputError, LabelError, OctsegError
from ..core.etdrs import ETDRS_RADII_UM, ETDRS_SECTORS, TSNIT_EDGES_DEG, TSNIT_SECTORS
from ..core.progress import Progress
from ..core.thickness import THICKNESS_LAYERS, TOTAL_RETINA, ThicknessReport, analyse, export_csv
from ..io._sidecar import scan_date
from ..io.provenance import SEGMENTATION_KEY, scan_identity
from ._common import META_KEY, Image, Labels, report_error, start_worker, unique_layer_name, volume_from_layer

AUTO_FOVEA = "auto (thinnest inner retina)"
FROM_IMAGE = "from image"
_NO_IMAGE = "(none)"
#: Unit vectors (superior, nasal) of the ETDRS quadrant label positions, S N I T order.
_QUADRANT_DIRS = ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))


def etdrs_shapes(centre_um: tuple[float, float], up_sign: float) -> tuple[list[np.ndarray], list[str]]:
    """ETDRS outline in world µm (row = B-scan axis, col = A-scan axis): 3 circles + 4 quadrant lines."""
    cz, cx = centre_um
    shapes, types = [], []
    for r in ETDRS_RADII_UM:
        shapes.append(np.array([[cz - r, cx - r], [cz - r, cx + r], [cz + r, cx + r], [cz + r, cx - r]]))
        types.append("ellipse")
    r0, _, r2 = ETDRS_RADII_UM
    for sz, sx in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
        d = np.array([sz * up_sign, sx]) / np.sqrt(2.0)
        shapes.append(np.array([[cz, cx] + d * r0, [cz, cx] + d * r2]))
        types.append("line")
    return shapes, types


def etdrs_label_positions(centre_um: tuple[float, float], up_sign: float, nasal_sign: float) -> np.ndarray:
    """World µm position of each sector label, in ``ETDRS_SECTORS`` order."""
    cz, cx = centre_um
    pos = [(cz, cx)]
    for radius in (1000.0, 2250.0):
        for up, nasal in _QUADRANT_DIRS:
            pos.append((cz + up * up_sign * radius, cx + nasal * nasal_sign * radius))
    return np.array(pos)


class ThicknessWidget(Container):
    """Measure layer thickness from a Labels layer; show maps, sector grid and table; export CSV."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self.source_labels = ComboBox(label="labels", choices=self._labels_choices)
        self.image = ComboBox(label="image (scale, eye)", choices=self._image_choices)
        self.laterality = ComboBox(label="eye", choices=[FROM_IMAGE, "OD", "OS"], value=FROM_IMAGE)
        self.fovea = ComboBox(label="fovea", choices=self._fovea_choices)
        self.layer = ComboBox(label="show", choices=list(THICKNESS_LAYERS), value=TOTAL_RETINA)
        self.run_button = PushButton(text="Measure thickness")
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.legend = Label(value="")
        self.legend_text = Label(value="")
        self.table = Table()
        self.note = Label(value="")
        self.export_button = PushButton(text="Export CSV...", enabled=False)
        super().__init__(
            widgets=[
                self.source_labels,
                self.image,
                self.laterality,
                self.fovea,
                self.layer,
                self.run_button,
                self.progress,
                self.cancel_button,
                self.legend,
                self.legend_text,
                self.table,
                self.note,
                self.export_button,
            ]
        )
        self.table.native.setMinimumHeight(260)
        self.note.native.setWordWrap(True)
        self.report: ThicknessReport | None = None
        self.map_layer: Image | None = None
        self.grid_layer: Shapes | None = None
        self.text_layer: Points | None = None
        self._source: dict[str, Any] = {}
        self._worker: Any = None
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.layer.changed.connect(self.show_layer)
        self.export_button.changed.connect(self._export_dialog)
        self.source_labels.changed.connect(self._pick_image)
        viewer.layers.events.inserted.connect(self._refresh)
        viewer.layers.events.removed.connect(self._refresh)
        self._pick_image()

    # -- choices ---------------------------------------------------------------------------------

    def _labels_choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Labels)]

    def _image_choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        ours = (self.map_layer,) if hasattr(self, "map_layer") else ()
        return [(_NO_IMAGE, None)] + [
            (layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image) and layer not in ours
        ]

    def _fovea_choices(self, _w: Any = None) -> list[tuple[str, Any]]:
        ours = (self.text_layer,) if hasattr(self, "text_layer") else ()
        return [(AUTO_FOVEA, None)] + [
            (f"point of '{layer.name}'", layer)
            for layer in self._viewer.layers
            if isinstance(layer, Points) and layer not in ours
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
            scale = tuple(float(s) for s in ([1.0] + list(labels_layer.scale))[-3:])
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
            "hide": [labels_layer] + ([image] if image is not None else []),
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

    # -- running ---------------------------------------------------------------------------------

    def start(self, _value: Any = None) -> None:
        """Measure the chosen labels in a worker thread (no-op while running)."""
        if self._worker is not None:
            return
        try:
            src = self._inputs()
        except OctsegError as exc:
            report_error(exc)
            return
        self._source = src
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        self.note.value = f"measuring {src['name']}..."
        job = partial(analyse, src["labels"], src["scale"], src["laterality"], src["pattern"], fovea=src["fovea"])
        self._worker = start_worker(job, self._on_progress, self._on_result, self._on_finish)

    def cancel(self, _value: Any = None) -> None:
        """Stop the measurement at its next chunk of B-scans; nothing is shown."""
        if self._worker is not None:
            self._worker.quit()
            self.note.value = "cancelled: nothing was changed"

    def _on_progress(self, event: Any) -> None:
        if isinstance(event, Progress):
            self.progress.max = max(event.total, 1)
            self.progress.value = event.done

    def _on_finish(self) -> None:
        self._worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False

    def _on_result(self, report: ThicknessReport | None) -> None:
        if report is None:
            return
        self.set_report(report)

    def set_report(self, report: ThicknessReport) -> None:
        """Show a finished measurement (map, grid, table) and enable export."""
        self.report = report
        for layer in self._source.get("hide", []):
            if layer in self._viewer.layers:
                layer.visible = False
        self.export_button.enabled = True
        self.show_layer()
        self._viewer.layers.selection.active = self.map_layer
        self._viewer.reset_view()

    # -- display ---------------------------------------------------------------------------------

    def _units(self) -> tuple[str, str]:
        return ("µm", "µm") if self.report and self.report.thickness.scale_um is not None else ("pixel", "pixel")

    def _map_scale(self) -> tuple[float, float]:
        scale = self.report.thickness.scale_um if self.report else None
        if scale is None:
            return (1.0, 1.0)
        return (scale[0] if scale[0] > 0 else scale[2], scale[2])

    def show_layer(self, _value: Any = None) -> None:
        """Show the chosen layer's map, grid labels and table (after a measurement)."""
        if self.report is None:
            return
        th, table = self.report.thickness, self.report.sectors
        name, unit = self.layer.value, "µm" if self.report.thickness.unit == "um" else "px"
        data = th.maps[name]
        finite = data[np.isfinite(data)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        hi = hi if hi > lo else lo + 1.0
        title = f"{self._source.get('name', 'labels')} thickness"
        meta = {META_KEY: {"thickness_layer": name, "unit": unit, "scale_um": th.scale_um}}
        if self.map_layer is None or self.map_layer not in self._viewer.layers:
            self.map_layer = self._viewer.add_image(
                data,
                name=unique_layer_name(self._viewer, title),
                scale=self._map_scale(),
                colormap="turbo",
                contrast_limits=(lo, hi),
                metadata=meta,
                units=self._units(),
            )
        else:
            self.map_layer.data = data
            self.map_layer.scale = self._map_scale()
            self.map_layer.contrast_limits = (lo, hi)
            self.map_layer.metadata = meta
        self._draw_legend(lo, hi, unit, name)
        self._draw_grid()
        self._fill_table(name, unit)
        fluid = th.fluid_volume_mm3()
        fluid_text = f"; fluid in the scan {fluid:.4f} mm³" if np.isfinite(fluid) else ""
        self.note.value = (table.note or table.grid) + fluid_text

    def _draw_legend(self, lo: float, hi: float, unit: str, name: str) -> None:
        from qtpy.QtGui import QImage, QPixmap

        rgba = (self.map_layer.colormap.map(np.linspace(0.0, 1.0, 256)) * 255).astype(np.uint8)
        strip = np.ascontiguousarray(np.repeat(rgba[None], 14, axis=0))
        qimg = QImage(strip.data, 256, 14, 256 * 4, QImage.Format.Format_RGBA8888).copy()
        self.legend.native.setPixmap(QPixmap.fromImage(qimg))
        mid = (lo + hi) / 2
        self.legend_text.value = f"{name}:  {lo:.1f}  ·  {mid:.1f}  ·  {hi:.1f} {unit}"

    def _replace_layer(self, attr: str, layer: Any) -> None:
        old = getattr(self, attr)
        if old is not None and old in self._viewer.layers:
            self._viewer.layers.remove(old)
        setattr(self, attr, layer)

    def _draw_grid(self) -> None:
        table = self.report.sectors
        sz, sx = self._map_scale()
        rows = {r.sector: r for r in table.rows if r.layer == self.layer.value}
        shapes, types, label_pos, label_names = [], [], np.zeros((0, 2)), []
        if table.grid == "etdrs" and table.fovea is not None:
            up = 1.0 if table.bscan_order == "inferior_to_superior" else -1.0
            nasal = 1.0 if table.laterality == "OD" else -1.0
            centre = (table.fovea[0] * sz, table.fovea[1] * sx)
            shapes, types = etdrs_shapes(centre, up)
            label_pos, label_names = etdrs_label_positions(centre, up, nasal), list(ETDRS_SECTORS)
        elif table.grid == "tsnit":
            n, width = self.report.thickness.shape
            x_edges = np.array(TSNIT_EDGES_DEG) / 360.0 * width * sx - 0.5 * sx
            shapes = [np.array([[-0.5 * sz, x], [(n - 0.5) * sz, x]]) for x in x_edges]
            types = ["line"] * len(shapes)
            mids = np.array([0.0, 65.0, 105.0, 180.0, 255.0, 295.0]) / 360.0 * width * sx
            label_pos = np.stack([np.full(mids.size, (n - 1) / 2 * sz), mids], axis=1)
            label_names = list(TSNIT_SECTORS)
        if not shapes:
            self._replace_layer("grid_layer", None)
            self._replace_layer("text_layer", None)
            return
        grid = Shapes(
            shapes,
            shape_type=types,
            edge_color="white",
            face_color="transparent",
            edge_width=max(sx, sz / 4),
            name=unique_layer_name(self._viewer, "thickness grid"),
            units=self._units(),
        )
        unit = "µm" if table.unit == "um" else "px"
        texts = [f"{s}\n{rows[s].mean:.0f}" if np.isfinite(rows[s].mean) else f"{s}\n–" for s in label_names]
        text_layer = Points(
            label_pos,
            size=0.0,
            features={"label": texts},
            name=unique_layer_name(self._viewer, f"thickness values ({unit})"),
            text={"string": "{label}", "color": "white", "size": 11},
            units=self._units(),
        )
        self._replace_layer("grid_layer", self._viewer.add_layer(grid))
        self._replace_layer("text_layer", self._viewer.add_layer(text_layer))

    def _fill_table(self, name: str, unit: str) -> None:
        from qtpy.QtWidgets import QHeaderView, QStyledItemDelegate, QTableWidgetItem

        def fmt(v: float, spec: str) -> str:
            return format(v, spec) if np.isfinite(v) else "–"

        rows = [r for r in self.report.sectors.rows if r.layer == name]
        qt = self.table.native
        qt.clear()
        qt.setColumnCount(5)
        qt.setRowCount(len(rows))
        qt.setHorizontalHeaderLabels(["sector", unit, "mm³", "A-scans", "cover"])  # unit = mean thickness
        for i, r in enumerate(rows):
            cells = (r.sector, fmt(r.mean, ".1f"), fmt(r.volume_mm3, ".4f"), str(r.n_ascans), f"{r.coverage:.0%}")
            for j, text in enumerate(cells):
                qt.setItem(i, j, QTableWidgetItem(text))
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
            report_error(exc)
            return None
        show_info("wrote " + ", ".join(p.name for p in written))
        return written

    def _export_dialog(self, _value: Any = None) -> None:
        from qtpy.QtWidgets import QFileDialog, QMessageBox

        # the save dialog itself asks before replacing the chosen file
        path, _ = QFileDialog.getSaveFileName(self.native, "Export thickness CSV", "thickness.csv", "CSV (*.csv)")
        if not path:
            return
        companion = self.sector_path(path)
        force = True
        if companion.exists():
            answer = QMessageBox.question(self.native, "Overwrite?", f"{companion.name} exists. Replace it?")
            force = answer == QMessageBox.StandardButton.Yes
        self.export_csv(path, force=force)

"""Layer thickness widget: map layer, ETDRS overlay, table, fovea from Points, CSV export (run under Xvfb)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_octseg._napari._common import image_layer_kwargs, labels_layer_kwargs  # noqa: E402
from napari_octseg._napari.thickness_widget import ThicknessWidget  # noqa: E402
from napari_octseg.core.volume import OctVolume  # noqa: E402

pytestmark = pytest.mark.gui

SCALE = (200.0, 3.87, 50.0)
THICK_PX = (3, 5, 7, 2, 9, 4, 3)


def _volume(n: int = 41, width: int = 161, depth: int = 40) -> OctVolume:
    col = np.zeros(depth, np.uint8)
    edge = 5
    for k, t in enumerate(THICK_PX):
        col[edge:] = k + 1
        edge += t
    col[edge:] = 8
    labels = np.broadcast_to(col[None, :, None], (n, depth, width)).copy()
    labels[n // 2, 24:28, 70:90] = 9  # fluid pocket inside the ONL+IS (rows 22-30) of the middle B-scan
    data = labels.astype(np.float32) / 9
    meta = {"source": "/data/cohort/S07.vol", "visit_date": "2021-03-04"}
    return OctVolume(data, scale_um=SCALE, laterality="OD", scan_pattern="volume", labels=labels, meta=meta)


def _measure(qtbot, widget: ThicknessWidget) -> None:
    widget.start()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=30000)
    assert widget.report is not None


@pytest.fixture
def viewer_with_volume(make_napari_viewer):
    viewer = make_napari_viewer()
    vol = _volume()
    image = viewer.add_image(vol.data, **image_layer_kwargs(vol, "scan"))
    labels = viewer.add_labels(vol.labels, **labels_layer_kwargs("scan labels", scale=SCALE))
    return viewer, image, labels, vol


def test_map_grid_table_and_untouched_labels(qtbot, viewer_with_volume):
    viewer, image, labels, vol = viewer_with_volume
    before = np.array(labels.data, copy=True)
    names = [layer.name for layer in viewer.layers]
    widget = ThicknessWidget(viewer)
    assert widget.source_labels.value is labels and widget.image.value is image
    _measure(qtbot, widget)
    # the map is drawn in the dock: the viewer keeps its layers, all visible (the B-scan stays in view)
    assert [layer.name for layer in viewer.layers] == names and image.visible and labels.visible
    plot = widget.plot
    assert plot.kind == "map"
    np.testing.assert_allclose(plot.drawn, sum(THICK_PX) * 3.87, rtol=1e-5)  # total retina, fluid counted
    ax = plot.figure.axes[0]
    # fundus view: B-scan 0 is inferior, so rows are drawn bottom-up; OD: nasal on the right
    assert ax.images[0].origin == "lower" and ax.get_ylim()[0] < ax.get_ylim()[1]
    assert {k: plot.edge_labels[k] for k in ("top", "bottom", "left", "right")} == {
        "top": "S",
        "bottom": "I",
        "left": "T",
        "right": "N",
    }
    # the ETDRS grid: 3 circles + 4 spokes; the 6 mm circle spans 6000 µm around the fovea
    lines = [line for line in ax.lines if line.get_color() == "white"]
    assert len(lines) == 7
    ring = lines[2].get_xydata()
    assert np.ptp(ring[:, 0]) == pytest.approx(6000) and np.ptp(ring[:, 1]) == pytest.approx(6000)
    assert plot.edge_labels["C0"] == f"{sum(THICK_PX) * 3.87:.0f}"
    rows = widget.table_rows()
    assert rows[0][:2] == ["sector", "µm"]
    assert [r[0] for r in rows[1:]] == ["C0", "S1", "N1", "I1", "T1", "S2", "N2", "I2", "T2", "total", "scan"]
    assert rows[1][1] == f"{sum(THICK_PX) * 3.87:.1f}"
    np.testing.assert_array_equal(labels.data, before)
    assert widget.status.value.startswith("measured scan labels") and widget.progress.value == widget.progress.max

    widget.layer.value = "INL"
    np.testing.assert_allclose(plot.drawn, 7 * 3.87, rtol=1e-5)
    assert len(plot.figure.axes) == 2  # one map and its colour bar, redrawn, not stacked
    widget.layer.value = "fluid"
    assert plot.drawn[20, 75] == pytest.approx(4 * 3.87, rel=1e-5)
    assert "fluid in the scan" in widget.note.value


def test_left_eye_puts_nasal_on_the_left(qtbot, viewer_with_volume):
    viewer, *_ = viewer_with_volume
    widget = ThicknessWidget(viewer)
    widget.laterality.value = "OS"
    _measure(qtbot, widget)
    assert widget.plot.edge_labels["left"] == "N" and widget.plot.edge_labels["right"] == "T"


def test_default_csv_name_from_the_image(qtbot, viewer_with_volume):
    viewer, image, *_ = viewer_with_volume
    image.metadata["octseg"]["meta"]["source"] = "/data/Subject_07.npz"
    widget = ThicknessWidget(viewer)
    _measure(qtbot, widget)
    assert widget.default_csv_path() == Path("/data/Subject_07_thickness.csv")


def test_fovea_from_points_layer(qtbot, viewer_with_volume):
    viewer, _image, _labels, _vol = viewer_with_volume
    points = viewer.add_points(np.array([[10 * SCALE[0], 0.0, 60 * SCALE[2]]]), name="fovea")
    widget = ThicknessWidget(viewer)
    widget.fovea.value = points
    _measure(qtbot, widget)
    assert widget.report.sectors.fovea == pytest.approx((10.0, 60.0))
    empty = viewer.add_points(np.zeros((0, 3)), name="empty")
    widget.reset_choices()
    widget.fovea.value = empty
    widget.start()
    assert widget._worker is None  # refused with a notification, nothing started


def test_export_csv_refuses_to_overwrite(qtbot, viewer_with_volume, tmp_path):
    viewer, *_ = viewer_with_volume
    widget = ThicknessWidget(viewer)
    assert widget.export_csv(tmp_path / "early.csv") is None  # nothing measured yet
    _measure(qtbot, widget)
    out = tmp_path / "t.csv"
    written = widget.export_csv(out)
    assert written == [out, tmp_path / "t_etdrs.csv"]
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 41 * 161 * 9
    # identity columns: the scan's file (not a layer name), eye, date, pattern, fovea in µm
    fovea = widget.report.sectors.fovea
    assert rows[0]["subject"] == "S07" and rows[0]["source_file"] == "/data/cohort/S07.vol"
    assert (rows[0]["eye"], rows[0]["scan_date"], rows[0]["scan_pattern"]) == ("OD", "2021-03-04", "volume")
    assert float(rows[0]["fovea_bscan_um"]) == pytest.approx(fovea[0] * SCALE[0], abs=0.05)
    assert float(rows[0]["fovea_ascan_um"]) == pytest.approx(fovea[1] * SCALE[2], abs=0.05)
    sectors = list(csv.DictReader((tmp_path / "t_etdrs.csv").open()))
    assert {r["subject"] for r in sectors} == {"S07"} and {r["eye"] for r in sectors} == {"OD"}
    out.write_text("mine")
    assert widget.export_csv(out) is None
    assert out.read_text() == "mine"
    assert widget.export_csv(out, force=True) is not None and out.read_text() != "mine"


def test_shape_mismatch_is_one_error(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    vol = _volume()
    image = viewer.add_image(vol.data[:, :, :100], **image_layer_kwargs(vol, "other"))
    viewer.add_labels(vol.labels, **labels_layer_kwargs("labels", scale=SCALE))
    widget = ThicknessWidget(viewer)
    widget.image.value = image
    widget.start()
    assert widget._worker is None and widget.report is None


def test_circle_scan_shows_tsnit(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    vol = _volume(n=1, width=360)
    vol.scan_pattern = "circle"
    viewer.add_image(vol.data, **image_layer_kwargs(vol, "circle"))
    viewer.add_labels(vol.labels, **labels_layer_kwargs("circle labels", scale=SCALE))
    widget = ThicknessWidget(viewer)
    _measure(qtbot, widget)
    assert widget.report.sectors.grid == "tsnit"
    assert widget.plot.kind == "profile"  # a thickness-along-the-circle plot, not a 1-pixel-high map
    x, profile = widget.plot.drawn
    assert x.shape == profile.shape == (360,) and 0 < x.min() and x.max() < 360
    np.testing.assert_allclose(profile, sum(THICK_PX) * 3.87, rtol=1e-5)
    assert set(widget.plot.edge_labels) == {"T", "TS", "NS", "N", "NI", "TI"}
    assert [r[0] for r in widget.table_rows()[1:]] == ["G", "T", "TS", "NS", "N", "NI", "TI"]
    assert widget.sector_path("x.csv").name == "x_tsnit.csv"


def test_line_scan_shows_a_profile_in_um(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    vol = _volume(n=1, width=100)
    vol.scan_pattern = "line"
    viewer.add_image(vol.data, **image_layer_kwargs(vol, "line"))
    viewer.add_labels(vol.labels, **labels_layer_kwargs("line labels", scale=SCALE))
    widget = ThicknessWidget(viewer)
    _measure(qtbot, widget)
    x, profile = widget.plot.drawn
    assert widget.plot.kind == "profile" and x[-1] == pytest.approx(99 * SCALE[2])


def test_circle_table_and_plot_say_what_they_show(qtbot, make_napari_viewer):
    """A circle scan's table has no column of dashes (no sector volume), explains G and missing means; the
    profile's axes name the quantity with its unit and each tick's quadrant."""
    viewer = make_napari_viewer()
    vol = _volume(n=1, width=360)
    vol.scan_pattern = "circle"
    vol.labels[0, :, :60] = 0  # no retina in the first 60°: T and TS sectors under-covered
    viewer.add_image(vol.data, **image_layer_kwargs(vol, "circle"))
    viewer.add_labels(vol.labels, **labels_layer_kwargs("circle labels", scale=SCALE))
    widget = ThicknessWidget(viewer)
    _measure(qtbot, widget)
    rows = widget.table_rows()
    assert rows[0] == ["sector", "µm", "A-scans", "measured"]
    by_sector = {r[0]: r for r in rows[1:]}
    assert by_sector["T"][1] == "–" and by_sector["N"][1] != "–"
    assert "G = the whole circle" in widget.note.value and "95%" in widget.note.value
    assert widget.table.native.item(1, 0).toolTip() == "temporal"  # row 0 is G
    ax = widget.plot.figure.axes[0]
    assert ax.get_ylabel() == "total retina thickness (µm)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0°\nT", "90°\nS", "180°\nN", "270°\nI", "360°\nT"]

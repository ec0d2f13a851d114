"""Quality in the docks: the Segment dock's uncertainty layer and quality panel, the Fine-tune suggestions."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")
pytestmark = pytest.mark.gui

from napari_octseg._napari import quality_panel as qp  # noqa: E402
from napari_octseg._napari import segment_widget as sw  # noqa: E402

SCALE = (120.0, 3.9, 11.3)


def _record(scores, reasons=None, flag_below=0.5, ood=False):
    return {
        "score": list(scores),
        "reasons": reasons or [[] for _ in scores],
        "flag_below": flag_below,
        "volume_out_of_distribution": ood,
    }


def test_segment_dock_adds_uncertainty_layer_and_quality(make_napari_viewer, qtbot, tiny_checkpoint, rng, errors):
    viewer = make_napari_viewer()
    data = rng.random((4, 48, 40)).astype(np.float32)
    viewer.add_image(data, name="scan", scale=SCALE, units=("µm",) * 3)
    widget = sw.SegmentWidget(viewer)
    widget.model_choice.value = sw.FILE_CHOICE
    widget.checkpoint.value = str(tiny_checkpoint)
    widget.device.value = "cpu"
    widget.uncertainty_check.value = True
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=300_000)
    assert errors == []
    assert [layer.name for layer in viewer.layers] == ["scan", "scan labels", "scan uncertainty"]
    unc = viewer.layers["scan uncertainty"]
    assert unc.data.shape == data.shape and unc.colormap.name == "magma"
    np.testing.assert_allclose(unc.scale, SCALE)
    assert tuple(str(u) for u in unc.units) == ("micrometer",) * 3
    assert 0.0 <= float(np.min(unc.data)) and float(np.max(unc.data)) <= 1.0
    record = viewer.layers["scan labels"].metadata[qp.QUALITY_KEY]
    assert len(record["score"]) == 4
    assert len(widget.quality_panel.choice.choices) == 4
    assert widget.quality_panel.plot._n == 4


def test_segment_dock_without_uncertainty_layer(make_napari_viewer, qtbot, tiny_checkpoint, rng, errors):
    viewer = make_napari_viewer()
    viewer.add_image(rng.random((2, 32, 32)).astype(np.float32), name="scan")
    widget = sw.SegmentWidget(viewer)
    widget.model_choice.value = sw.FILE_CHOICE
    widget.checkpoint.value = str(tiny_checkpoint)
    widget.device.value = "cpu"
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=300_000)
    assert [layer.name for layer in viewer.layers] == ["scan", "scan labels"]


def test_quality_panel_lists_flagged_first_goes_to_and_warns(make_napari_viewer, monkeypatch):
    warnings: list[str] = []
    monkeypatch.setattr(qp, "show_warning", warnings.append)
    viewer = make_napari_viewer()
    layer = viewer.add_labels(np.zeros((5, 8, 8), np.uint8), name="lab", scale=(10.0, 1.0, 1.0), translate=(5, 0, 0))
    panel = qp.QualityPanel(viewer)
    reasons = [[], ["high noise"], [], [], ["fluid outside the retina"]]
    panel.show_quality(_record([0.9, 0.2, 0.8, 0.6, 0.1], reasons), layer)
    assert list(panel.choice.choices) == [1, 4, 3, 2, 0]  # flagged (in B-scan order), then the lowest
    assert panel.choice.native.itemText(0) == "1: 0.20 high noise"
    assert panel.summary.value == "flagged: 2 of 5 (quality < 0.5)"
    assert warnings == []
    panel.choice.value = 4
    panel.go_button.changed.emit(True)
    assert viewer.dims.point[0] == pytest.approx(5 + 4 * 10.0)
    panel.show_quality(_record([0.1, 0.2], [["high noise"], ["high noise", "saturated"]], ood=True), layer)
    assert len(warnings) == 1
    assert "2 of 2 B-scans look unlike the training data: high noise, saturated; check" in warnings[0]
    panel.show_quality(_record([0.1, 0.2], [["labels change when the B-scan is mirrored"], []], ood=True), layer)
    assert "2 of 2 B-scans look unreliable: labels change when the B-scan is mirrored; check" in warnings[-1]


def test_finetune_dock_proposes_and_jumps(make_napari_viewer):
    from napari_octseg._napari import finetune_widget as fw

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((10, 8, 8), np.float32), name="scan")
    scores = [0.9, 0.1, 0.15, 0.2, 0.9, 0.9, 0.9, 0.9, 0.3, 0.9]
    layer = viewer.add_labels(np.zeros((10, 8, 8), np.uint8), name="lab", metadata={qp.QUALITY_KEY: _record(scores)})
    widget = fw.FinetuneWidget(viewer)
    widget.labels_combo.value = layer
    widget.suggestions.how_many.value = 2
    assert widget.suggestions.suggest() == [1, 3]
    assert widget.bscans_edit.value == "1, 3"
    assert viewer.dims.point[0] == pytest.approx(1)
    widget.suggestions.go_to_next()
    assert viewer.dims.point[0] == pytest.approx(3)
    plain = viewer.add_labels(np.zeros((10, 8, 8), np.uint8), name="no quality")
    widget.labels_combo.value = plain
    assert widget.suggestions.suggest() == []
    assert "no quality recorded" in widget.suggestions.info.value


def test_quality_panel_layout_keeps_plot_above_go_to_row_in_a_narrow_dock(make_napari_viewer, qtbot):
    """At 1366 x 768 a wrapped summary and long reasons neither push the plot over the "Go to" row nor widen the
    dock (the combo box elides)."""
    viewer = make_napari_viewer(show=True)
    widget = sw.SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right")
    viewer.window.resize(1366, 768)
    viewer.add_labels(np.zeros((25, 8, 8), np.uint8), name="lab")
    long = ["high noise", "fluid outside the retina", "uncertain segmentation", "a layer out of its usual thickness"]
    panel = widget.quality_panel
    panel.show_quality(_record(np.linspace(0.05, 0.95, 25), [long] * 25, flag_below=0.599), viewer.layers["lab"])
    qtbot.wait(300)
    plot = panel.plot.geometry()
    row = panel.go_button.native.parentWidget().geometry()
    summary = panel.summary.native.geometry()
    assert not panel.summary.native.wordWrap()  # one line: its height does not depend on the dock's width
    assert summary.bottom() < plot.top()
    assert plot.bottom() < row.top(), (plot.getRect(), row.getRect())
    assert panel.plot.height() == panel.plot.minimumHeight()
    assert panel.choice.native.sizeHint().width() < 250
    assert panel.native.minimumSizeHint().width() < 320


def test_segment_dock_mirror_check(make_napari_viewer, qtbot, tiny_checkpoint, rng, errors, monkeypatch):
    """The dock's "check by mirroring" box runs segment(mirror_check=True); off by default."""
    calls = []
    real = sw.segment

    def recording(*args, **kwargs):
        calls.append(kwargs.get("mirror_check"))
        return real(*args, **kwargs)

    monkeypatch.setattr(sw, "segment", recording)
    viewer = make_napari_viewer()
    viewer.add_image(rng.random((2, 32, 32)).astype(np.float32), name="scan", scale=SCALE)
    widget = sw.SegmentWidget(viewer)
    widget.model_choice.value = sw.FILE_CHOICE
    widget.checkpoint.value = str(tiny_checkpoint)
    widget.device.value = "cpu"
    assert widget.mirror_check.value is False
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=300_000)
    widget.mirror_check.value = True
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=300_000)
    assert errors == [] and calls == [False, True]
    labels = [layer for layer in viewer.layers if layer.name.startswith("scan labels")]
    assert len(labels) == 2 and len(labels[-1].metadata[qp.QUALITY_KEY]["score"]) == 2

"""The Explain (Grad-CAM) widget: one heatmap layer per class, visibility, blending, table, errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from napari_octseg._napari import explain_widget as ew  # noqa: E402
from napari_octseg.core.progress import run_generator  # noqa: E402
from napari_octseg.explain import DEFAULT_LAYER, gradcam  # noqa: E402
from napari_octseg.models import LoadedModel, SegNet, SegNetConfig, load_checkpoint  # noqa: E402

SCALE = (120.0, 3.9, 11.3)


@pytest.fixture
def volume_data(rng):
    return rng.random((3, 40, 36)).astype(np.float32)


def _widget(viewer, checkpoint, classes=(1, 3, 9)):
    widget = ew.ExplainWidget(viewer)
    widget.model_choice.value = ew.FILE_CHOICE
    widget.checkpoint.value = str(checkpoint)
    widget.device.value = "cpu"
    widget.target.value = "image"  # a random network predicts few classes; whole-image scores keep maps alive
    widget.classes.value = list(classes)
    return widget


def _run_and_wait(qtbot, widget, timeout=30_000):
    widget.start()
    assert widget.running
    with qtbot.waitSignal(widget._worker.finished, timeout=timeout):
        pass
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)


def test_adds_one_heatmap_layer_per_class(make_napari_viewer, qtbot, tiny_checkpoint, volume_data, errors):
    viewer = make_napari_viewer()
    image = viewer.add_image(volume_data, name="scan", scale=SCALE, translate=(0, 5, 7))
    widget = _widget(viewer, tiny_checkpoint)
    assert widget.image.value is image
    _run_and_wait(qtbot, widget)
    assert errors == []
    names = ["Grad-CAM NFL · scan", "Grad-CAM INL · scan", "Grad-CAM fluid · scan"]
    assert [layer.name for layer in viewer.layers] == ["scan", *names]
    expected = run_generator(gradcam(volume_data, load_checkpoint(tiny_checkpoint), [1, 3, 9], target="image"))
    for k, name in enumerate(names):
        layer = viewer.layers[name]
        np.testing.assert_array_equal(np.asarray(layer.data), expected.heatmaps[k])
        assert layer.colormap.name == ew.COLORMAP
        assert layer.blending == "additive"
        assert tuple(layer.contrast_limits) == (0.0, 1.0)
        np.testing.assert_allclose(layer.scale, SCALE)
        np.testing.assert_allclose(layer.translate, (0, 5, 7))
        assert layer.visible == (k == 0)
        meta = layer.metadata[ew.GRADCAM_KEY]
        assert meta["class"] == [1, 3, 9][k] and meta["layer"] == DEFAULT_LAYER and meta["image_layer"] == "scan"
    # heatmap layers are not offered as images to explain
    assert [c for c in widget.image.choices] == [image]
    # the table: one row per class, mean of the [0, 1] map first
    assert not widget.table.native.isHidden() and widget.table.shape == (3, 2)
    assert list(widget.table.row_headers) == ["NFL", "INL", "fluid"]
    assert list(widget.table.column_headers) == ["mean", "max (rel.)"]
    assert float(widget.table.data[1][0]) == pytest.approx(expected.stats[3]["mean_normalized"], abs=5e-4)
    peaks = [expected.stats[c]["max"] for c in (1, 3, 9)]
    assert [float(row[1]) for row in widget.table.data] == pytest.approx([p / max(peaks) for p in peaks], abs=5e-4)
    # the dropdown switches which class is visible
    assert widget.show_class.choices == ("NFL", "INL", "fluid")
    widget.show_class.value = "fluid"
    assert [viewer.layers[n].visible for n in names] == [False, False, True]
    assert widget.progress.value == widget.progress.max and widget.status.value.startswith("added 3 heatmap layer(s)")
    assert "question: whole B-scan" in widget.status.value


def test_second_run_keeps_the_shown_class_and_new_names(
    make_napari_viewer, qtbot, tiny_checkpoint, volume_data, errors
):
    viewer = make_napari_viewer()
    viewer.add_image(volume_data, name="scan")
    widget = _widget(viewer, tiny_checkpoint, classes=(2, 5))
    _run_and_wait(qtbot, widget)
    widget.show_class.value = "ONL+IS"
    widget.conv_layer.value = "final"
    _run_and_wait(qtbot, widget)
    assert errors == []
    assert [layer.name for layer in viewer.layers] == [
        "scan",
        "Grad-CAM GCL+IPL · scan",
        "Grad-CAM ONL+IS · scan",
        "Grad-CAM GCL+IPL · scan [2]",
        "Grad-CAM ONL+IS · scan [2]",
    ]
    assert [layer.visible for layer in viewer.layers][3:] == [False, True]
    assert viewer.layers[4].metadata[ew.GRADCAM_KEY]["layer"] == "final"
    widget.show_class.value = "GCL+IPL"  # switches only the latest run's layers
    assert [layer.visible for layer in viewer.layers][1:] == [False, True, True, False]


def test_two_d_image(make_napari_viewer, qtbot, tiny_checkpoint, volume_data, errors):
    viewer = make_napari_viewer()
    viewer.add_image(volume_data[0], name="bscan", scale=SCALE[1:])
    widget = _widget(viewer, tiny_checkpoint, classes=(4,))
    _run_and_wait(qtbot, widget)
    layer = viewer.layers["Grad-CAM OPL · bscan"]
    assert layer.data.shape == volume_data.shape[1:] and layer.visible
    np.testing.assert_allclose(layer.scale, SCALE[1:])


def test_nan_image_gives_one_message_and_no_layer(make_napari_viewer, qtbot, tiny_checkpoint, volume_data, errors):
    viewer = make_napari_viewer()
    volume_data[1, 3, 3] = np.nan
    viewer.add_image(volume_data, name="scan")
    widget = _widget(viewer, tiny_checkpoint)
    _run_and_wait(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["scan"]
    assert len(errors) == 1 and "NaN" in str(errors[0])


class _SlowNet(SegNet):
    """A SegNet that takes a while per forward pass."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.05)
        return super().forward(x)


def test_cancel_adds_no_layer(make_napari_viewer, qtbot, tiny_checkpoint, volume_data, errors, monkeypatch):
    torch.manual_seed(0)
    slow = LoadedModel(model=_SlowNet(SegNetConfig(widths=(4, 8, 8))).eval(), source="<slow>")
    monkeypatch.setattr(ew, "load_model", lambda spec, device="cpu": slow)
    viewer = make_napari_viewer()
    viewer.add_image(np.repeat(volume_data, 5, axis=0), name="scan")
    widget = _widget(viewer, tiny_checkpoint)
    widget.start()
    qtbot.waitUntil(lambda: widget.progress.value >= 2, timeout=10_000)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=10_000)
    assert [layer.name for layer in viewer.layers] == ["scan"]
    assert len(errors) == 1 and type(errors[0]).__name__ == "Cancelled"
    assert "cancelled" in widget.status.value
    assert widget.run_button.enabled and not widget.cancel_button.enabled
    assert not any(isinstance(m, nn.Module) and m._forward_hooks for m in slow.model.modules())


def test_problems_are_reported_without_a_worker(make_napari_viewer, tmp_path, volume_data, errors, tiny_checkpoint):
    viewer = make_napari_viewer()
    widget = _widget(viewer, tiny_checkpoint)
    widget.start()
    assert not widget.running and "no image layer" in str(errors[-1])
    viewer.add_image(volume_data, name="scan")
    widget.classes.value = []
    widget.start()
    assert not widget.running and "at least one class" in str(errors[-1])
    widget.classes.value = [1]
    widget.checkpoint.value = str(tmp_path / "absent.pt")
    widget.start()
    assert not widget.running and "no such model file" in str(errors[-1])
    assert [layer.name for layer in viewer.layers] == ["scan"]


def test_missing_bundled_model_is_explained(make_napari_viewer, volume_data, errors, monkeypatch, tmp_path):
    from napari_octseg._napari import _model_panel

    monkeypatch.setattr(_model_panel, "bundled_path", lambda name="default": tmp_path / "octseg_default.pt")
    viewer = make_napari_viewer()
    viewer.add_image(volume_data, name="scan")
    widget = ew.ExplainWidget(viewer)
    assert "not installed" in widget.model_info.value
    widget.start()
    assert not widget.running and "bundled default model" in str(errors[-1])


def test_labels_are_hidden_under_heatmaps_and_shown_again(
    make_napari_viewer, qtbot, tiny_checkpoint, volume_data, errors
):
    viewer = make_napari_viewer()
    viewer.add_image(volume_data, name="scan", scale=SCALE)
    labels_data = (volume_data > volume_data.mean()).astype(np.uint8)
    labels = viewer.add_labels(labels_data.copy(), name="layers", scale=SCALE)
    other = viewer.add_labels(np.zeros((2, 5, 5), np.uint8), name="elsewhere")
    widget = _widget(viewer, tiny_checkpoint)
    widget.image.value = viewer.layers["scan"]
    _run_and_wait(qtbot, widget)
    assert errors == []
    assert not labels.visible and other.visible  # only labels over the explained image are hidden
    widget.show_labels.value = True
    assert labels.visible
    widget.show_labels.value = False
    assert not labels.visible
    np.testing.assert_array_equal(labels.data, labels_data)  # only the visibility ever changes


def test_region_from_a_shape_and_the_table_csv(
    make_napari_viewer, qtbot, tiny_checkpoint, volume_data, errors, tmp_path
):
    """Seg-Grad-CAM from a rectangle drawn on B-scan 1: maps only there, and they differ from the whole B-scan's."""
    import csv

    viewer = make_napari_viewer()
    viewer.add_image(volume_data, name="scan", scale=SCALE)
    shapes = viewer.add_shapes(
        [np.array([[1, 5, 4], [1, 5, 20], [1, 20, 20], [1, 20, 4]])], shape_type="rectangle", name="q", scale=SCALE
    )
    widget = _widget(viewer, tiny_checkpoint)
    widget.target.value = "shape"
    assert not widget.region_layer.native.isHidden() and widget.label_value.native.isHidden()
    widget.region_layer.value = shapes
    _run_and_wait(qtbot, widget)
    assert errors == []
    heat = viewer.layers["Grad-CAM NFL · scan"]
    assert heat.metadata[ew.GRADCAM_KEY]["target"] == "region"
    # the status line says which question the maps answer
    assert "question: region in B-scan 1" in widget.status.value, widget.status.value
    # maps only in the region's B-scan (a class's map may be all zero there: ReLU of a random network)
    maps = [np.asarray(viewer.layers[f"Grad-CAM {n} · scan"].data) for n in ("NFL", "INL", "fluid")]
    assert any(m[1].max() > 0 for m in maps) and all(m[0].max() == 0 and m[2].max() == 0 for m in maps)
    # the table goes to CSV with the feature-importance weights
    widget.save_table(str(tmp_path / "t.csv"))
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [r["name"] for r in rows] == ["NFL", "INL", "fluid"] and rows[0]["target"] == "region"
    assert rows[0]["input"] == "scan" and max(float(r["max"]) for r in rows) > 0 and rows[0]["weight_sum"]


def test_bad_region_is_one_message_and_no_worker(make_napari_viewer, tiny_checkpoint, volume_data, errors):
    viewer = make_napari_viewer()
    viewer.add_image(volume_data, name="scan")
    labels = viewer.add_labels(np.zeros((3, 40, 36), np.uint8), name="seg")
    widget = _widget(viewer, tiny_checkpoint)
    widget.target.value = "label"
    widget.region_layer.value = labels
    widget.label_value.value = 4
    widget.start()
    assert not widget.running and len(errors) == 1 and "label 4 has no pixel" in str(errors[0])
    assert len(viewer.layers) == 2


def test_show_dropdown_survives_layer_changes_and_names_keep_the_class(
    make_napari_viewer, qtbot, tiny_checkpoint, volume_data, errors
):
    viewer = make_napari_viewer()
    viewer.add_image(volume_data, name="Subject_07.npz")
    widget = _widget(viewer, tiny_checkpoint, classes=(6, 9))
    viewer.window.add_dock_widget(widget)  # napari then resets the dock's choices on every layer change
    _run_and_wait(qtbot, widget)
    assert [layer.name for layer in viewer.layers][1:] == ["Grad-CAM EZ+OS · Subject_07", "Grad-CAM fluid · Subject_07"]
    widget.show_class.value = "fluid"
    viewer.add_points(np.zeros((1, 3)), name="fovea")
    viewer.layers.remove("fovea")
    widget.reset_choices()
    assert widget.show_class.choices == ("EZ+OS", "fluid") and widget.show_class.value == "fluid"
    assert widget.show_class.enabled

"""The **Fine-tune on corrections** dock widget, with a tiny model on a small synthetic volume (Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from _toy import toy_volume  # noqa: E402

from napari_octseg._napari import _common  # noqa: E402
from napari_octseg._napari import finetune_widget as fw  # noqa: E402
from napari_octseg._napari.segment_widget import AUTO_LABELS_KEY  # noqa: E402
from napari_octseg.inference import bscan_hashes  # noqa: E402
from napari_octseg.models import SegNet, SegNetConfig, load_checkpoint, save_checkpoint  # noqa: E402

pytestmark = pytest.mark.gui
torch.set_num_threads(1)


@pytest.fixture
def setup(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setenv("OCTSEG_MODEL_DIR", str(tmp_path))
    volume, truth = toy_volume(n=4)
    auto = truth.copy()
    auto[:, 20:26] = 0  # the "automatic" result missed a layer...
    corrected = auto.copy()
    corrected[1] = truth[1]  # ...which the user repaired on B-scans 1 and 2
    corrected[2] = truth[2]
    viewer = make_napari_viewer()
    viewer.add_image(volume.data, name="scan")
    layer = viewer.add_labels(
        corrected, name="scan labels", metadata={AUTO_LABELS_KEY: {"bscan_hashes": bscan_hashes(auto)}}
    )
    torch.manual_seed(0)
    base = save_checkpoint(tmp_path / "base.pt", SegNet(SegNetConfig(widths=(4, 8, 8))), training={"data": "toy"})
    widget = fw.FinetuneWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Fine-tune on corrections")
    widget.base_combo.value = fw.FILE_CHOICE
    widget.base_file.value = base
    widget.name_edit.value = "ft"
    widget.epochs_spin.value = 3
    errors: list[str] = []
    monkeypatch.setattr(_common, "report_error", lambda exc: errors.append(str(exc)))
    return viewer, widget, layer, corrected.copy(), errors


def test_widget_detects_corrections_trains_and_resegments(setup, qtbot, tmp_path):
    viewer, widget, layer, corrected, errors = setup
    assert widget.bscans_edit.value == "1-2"
    assert "1-2" in widget.detected_label.value

    other, other_labels = toy_volume(n=2, seed=5)
    np.savez(tmp_path / "replay.npz", images=other.data.clip(0, 255).astype(np.uint8), labels=other_labels)
    widget.replay_files.value = [tmp_path / "replay.npz"]
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=180_000)  # a loaded 2-core machine is slow
    assert not errors
    assert (tmp_path / "ft.pt").is_file()
    record = load_checkpoint(tmp_path / "ft.pt").training
    assert record["bscans"] == [1, 2] and record["replay"]["n_bscans"] == 2
    assert record["data"]["image_layer"] == "scan" and record["data"]["labels_layer"] == "scan labels"
    # The loss curve got a point per step and per epoch.
    assert len(widget.loss_plot.steps_y) >= 3 and len(widget.loss_plot.epochs_y) >= 1
    assert widget.segment_btn.enabled
    # The next default name is new (image + date), never the last model's; the library lists the model.
    assert widget.name_edit.value.startswith("scan-") and widget.name_edit.value != "ft"
    assert widget.status.value.startswith("saved model 'ft' in the library (best epoch ")
    assert widget.progress.value == widget.progress.max and not widget.cancel_btn.enabled
    assert "library: ft" in widget.base_combo.choices
    np.testing.assert_array_equal(layer.data, corrected)

    n_layers = len(viewer.layers)
    widget.segment_rest()
    qtbot.waitUntil(lambda: len(viewer.layers) == n_layers + 1, timeout=60_000)
    new = viewer.layers[-1]
    assert new.name == "scan labels (fine-tuned)" and new is not layer
    np.testing.assert_array_equal(new.data[[1, 2]], corrected[[1, 2]])  # corrections kept as they are
    np.testing.assert_array_equal(layer.data, corrected)  # the corrected layer is never touched
    assert new.metadata[AUTO_LABELS_KEY]["bscan_hashes"] == bscan_hashes(new.data)


def test_widget_errors_are_one_notification_and_change_nothing(setup, qtbot, tmp_path):
    viewer, widget, layer, corrected, errors = setup
    widget.bscans_edit.value = "9"
    widget.run()
    assert widget.worker is None and len(errors) == 1 and "out of range" in errors[0]
    widget.bscans_edit.value = "1"
    widget.lr_edit.value = "fast"
    widget.run()
    assert len(errors) == 2 and "learning rate" in errors[1]
    assert not (tmp_path / "ft.pt").exists()
    np.testing.assert_array_equal(layer.data, corrected)


def test_widget_cancel_writes_nothing(setup, qtbot, tmp_path):
    viewer, widget, layer, corrected, errors = setup
    widget.epochs_spin.value = 200
    widget.run()
    qtbot.waitUntil(lambda: len(widget.loss_plot.steps_y) > 0, timeout=30_000)
    widget.cancel()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=30_000)
    assert not (tmp_path / "ft.pt").exists()
    assert widget.new_model is None and not widget.segment_btn.enabled
    assert "cancelled" in widget.status.value


def test_add_current_bscan(setup):
    viewer, widget, *_ = setup
    viewer.dims.set_current_step(0, 3)
    widget.add_current_bscan()
    assert widget.bscans_edit.value == "1-3"

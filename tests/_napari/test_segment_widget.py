"""The Segment layers widget: new Labels layer, never touches user layers, responsive, errors -> no layer."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from napari_octseg._napari import _model_panel  # noqa: E402
from napari_octseg._napari import segment_widget as sw  # noqa: E402
from napari_octseg.inference import bscan_hashes, edited_bscans  # noqa: E402
from napari_octseg.models import LoadedModel, SegNet, SegNetConfig  # noqa: E402

SCALE = (120.0, 3.9, 11.3)


@pytest.fixture
def volume_data(rng):
    return rng.random((4, 48, 40)).astype(np.float32)


def _widget(viewer, checkpoint, batch_size=2):
    widget = sw.SegmentWidget(viewer)
    widget.model_choice.value = sw.FILE_CHOICE
    widget.checkpoint.value = str(checkpoint)
    widget.device.value = "cpu"
    widget.batch_size.value = batch_size
    widget.boundaries_check.value = False  # the boundary lines layer is tested in test_boundary_layer.py
    return widget


def _run_and_wait(qtbot, widget, timeout=60_000):
    widget.start()
    assert widget.running
    # `running` turns False in the finished handler, on the GUI thread, after the result was added
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)


def test_segment_adds_a_new_named_labels_layer(make_napari_viewer, qtbot, tiny_checkpoint, volume_data, errors):
    viewer = make_napari_viewer()
    image = viewer.add_image(volume_data, name="scan", scale=SCALE, translate=(0, 5, 7))
    widget = _widget(viewer, tiny_checkpoint)
    assert widget.image.value is image
    _run_and_wait(qtbot, widget)
    assert errors == []
    assert [layer.name for layer in viewer.layers] == ["scan", "scan labels"]
    labels = viewer.layers["scan labels"]
    assert labels.data.shape == volume_data.shape and labels.data.dtype == np.uint8
    np.testing.assert_allclose(labels.scale, SCALE)
    np.testing.assert_allclose(labels.translate, (0, 5, 7))
    assert list(labels.features["class"]) == list(LoadedModel(model=SegNet()).class_names)
    meta = labels.metadata[sw.SEGMENTATION_KEY]
    assert meta["model_source"] == str(tiny_checkpoint) and meta["class_names"][9] == "fluid"
    assert meta["device"] == "cpu"
    hashes = labels.metadata[sw.AUTO_LABELS_KEY]["bscan_hashes"]
    assert hashes == bscan_hashes(labels.data)
    # the record lets the fine-tune widget find the B-scans a user paints on
    labels.data[2, 10, 10] = (labels.data[2, 10, 10] + 1) % 10
    assert edited_bscans(labels.data, hashes) == [2]
    assert widget.progress.value == widget.progress.max and widget.status.value.startswith(
        "added 'scan labels': 4 B-scan(s)"
    )


def test_never_touches_an_existing_labels_layer(make_napari_viewer, qtbot, tiny_checkpoint, volume_data, errors):
    viewer = make_napari_viewer()
    viewer.add_image(volume_data, name="scan", scale=SCALE)
    edited = np.zeros(volume_data.shape, np.uint8)
    edited[:, 20:30] = 3
    user_layer = viewer.add_labels(edited.copy(), name="scan labels", scale=SCALE)
    widget = _widget(viewer, tiny_checkpoint)
    _run_and_wait(qtbot, widget)
    _run_and_wait(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["scan", "scan labels", "scan labels [2]", "scan labels [3]"]
    assert viewer.layers["scan labels"] is user_layer
    np.testing.assert_array_equal(user_layer.data, edited)
    assert errors == []


def test_two_d_image_gives_a_two_d_labels_layer(make_napari_viewer, qtbot, tiny_checkpoint, volume_data, errors):
    viewer = make_napari_viewer()
    viewer.add_image(volume_data[0], name="bscan", scale=SCALE[1:])
    widget = _widget(viewer, tiny_checkpoint)
    _run_and_wait(qtbot, widget)
    labels = viewer.layers["bscan labels"]
    assert labels.data.shape == volume_data.shape[1:]
    np.testing.assert_allclose(labels.scale, SCALE[1:])
    assert len(labels.metadata[sw.AUTO_LABELS_KEY]["bscan_hashes"]) == 1


class _SlowNet(nn.Module):
    """A network that takes a while per batch, releasing the GIL like real convolutions do."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.05)
        return self.net(x)


def test_event_loop_keeps_running_during_segmentation(
    make_napari_viewer, qtbot, tiny_checkpoint, volume_data, errors, monkeypatch
):
    from qtpy.QtCore import QTimer

    slow = LoadedModel(model=_SlowNet(SegNet(SegNetConfig(widths=(4, 8, 8))).eval()), source="<slow>")
    monkeypatch.setattr(sw, "load_model", lambda spec, device="cpu": slow)
    viewer = make_napari_viewer()
    viewer.add_image(np.repeat(volume_data, 3, axis=0), name="scan")
    widget = _widget(viewer, tiny_checkpoint, batch_size=1)  # 12 batches x >= 50 ms
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()) if widget.running else None)
    timer.start(10)
    t0 = time.perf_counter()
    _run_and_wait(qtbot, widget)
    elapsed = time.perf_counter() - t0
    timer.stop()
    assert elapsed >= 0.6
    # a blocked loop would tick at most once or twice; a free one about every 10 ms
    assert len(ticks) >= 20, (len(ticks), elapsed)
    assert np.diff(ticks).max() < 0.5
    assert "scan labels" in [layer.name for layer in viewer.layers]


def test_cancel_adds_no_layer(make_napari_viewer, qtbot, tiny_checkpoint, volume_data, errors, monkeypatch):
    slow = LoadedModel(model=_SlowNet(SegNet(SegNetConfig(widths=(4, 8, 8))).eval()), source="<slow>")
    monkeypatch.setattr(sw, "load_model", lambda spec, device="cpu": slow)
    viewer = make_napari_viewer()
    viewer.add_image(np.repeat(volume_data, 5, axis=0), name="scan")
    widget = _widget(viewer, tiny_checkpoint, batch_size=1)
    widget.start()
    qtbot.waitUntil(lambda: widget.progress.value >= 2, timeout=10_000)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=10_000)
    assert [layer.name for layer in viewer.layers] == ["scan"]
    assert len(errors) == 1 and type(errors[0]).__name__ == "Cancelled"
    assert "cancelled" in widget.status.value
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_nan_image_gives_one_message_and_no_layer(make_napari_viewer, qtbot, tiny_checkpoint, volume_data, errors):
    viewer = make_napari_viewer()
    volume_data[1, 3, 3] = np.nan
    viewer.add_image(volume_data, name="scan")
    widget = _widget(viewer, tiny_checkpoint)
    _run_and_wait(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["scan"]
    assert len(errors) == 1 and "NaN" in str(errors[0])


def test_bad_model_file_gives_one_message_and_no_layer(make_napari_viewer, qtbot, tmp_path, volume_data, errors):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"this is not a checkpoint" * 10)
    viewer = make_napari_viewer()
    viewer.add_image(volume_data, name="scan")
    widget = _widget(viewer, bad)
    _run_and_wait(qtbot, widget)
    assert [layer.name for layer in viewer.layers] == ["scan"]
    assert len(errors) == 1 and "not a valid napari-octseg checkpoint" in str(errors[0])


def test_missing_file_device_or_image_are_reported_without_a_worker(
    make_napari_viewer, tmp_path, volume_data, errors, tiny_checkpoint
):
    viewer = make_napari_viewer()
    widget = _widget(viewer, tiny_checkpoint)
    widget.start()  # no image layer yet
    assert not widget.running and "no image layer" in str(errors[-1])
    viewer.add_image(volume_data, name="scan")
    assert widget.image.value is viewer.layers["scan"]  # the chooser follows the layer list
    widget.checkpoint.value = str(tmp_path / "absent.pt")
    widget.start()
    assert not widget.running and "no such model file" in str(errors[-1])
    if not torch.cuda.is_available():
        widget.checkpoint.value = str(tiny_checkpoint)
        widget.device.value = "cuda"
        widget.start()
        assert not widget.running and "not available" in str(errors[-1])
    assert [layer.name for layer in viewer.layers] == ["scan"]


def test_missing_bundled_model_is_explained(make_napari_viewer, volume_data, errors, monkeypatch, tmp_path):
    monkeypatch.setattr(_model_panel, "bundled_path", lambda name="default": tmp_path / "octseg_default.pt")
    viewer = make_napari_viewer()
    viewer.add_image(volume_data, name="scan")
    widget = sw.SegmentWidget(viewer)
    assert widget.model_choice.value == sw.DEFAULT_CHOICE
    assert "not installed" in widget.model_info.value and not widget.checkpoint.visible
    widget.start()
    assert not widget.running and len(errors) == 1 and "not installed" in str(errors[0])
    assert [layer.name for layer in viewer.layers] == ["scan"]

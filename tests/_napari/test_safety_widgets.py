"""Safety of the napari widgets (issue 9): a user's layers are never replaced, modified or half-made.

Re-segmenting keeps an edited Labels layer byte-identical and adds a new one; Cancel adds no layer and
leaves every existing layer as it was; thickness never writes into the labels it measures; a crash
while exporting leaves no partial CSV and keeps the file that was there; fine-tuning never alters the
corrections and never writes over an existing checkpoint. Run under Xvfb.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pathlib
import time

import numpy as np
import pytest
import torch

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_octseg._napari import _common  # noqa: E402
from napari_octseg._napari import explain_widget as ew  # noqa: E402
from napari_octseg._napari import finetune_widget as fw  # noqa: E402
from napari_octseg._napari import segment_widget as sw  # noqa: E402
from napari_octseg._napari import thickness_widget as tw  # noqa: E402
from napari_octseg._napari._common import image_layer_kwargs, labels_layer_kwargs  # noqa: E402
from napari_octseg.models import SegNet, SegNetConfig, save_checkpoint  # noqa: E402
from napari_octseg.synthetic import make_volume  # noqa: E402

pytestmark = pytest.mark.gui
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, SegNet(SegNetConfig(widths=(4, 8, 8))).eval(), training={"data": "none (test)"})
    return path


@pytest.fixture(scope="module")
def volume():
    return make_volume(n_bscans=4, height=64, width=48, seed=3)


@pytest.fixture
def errors(monkeypatch):
    """Every notification a widget would show."""
    shown: list[BaseException] = []
    monkeypatch.setattr(_common, "report_error", shown.append)  # every dock reports through _common
    return shown


def _digest(layer) -> tuple:
    """Name, type and a content hash of the layer's data (a Shapes layer's data is a list of arrays)."""
    parts = layer.data if isinstance(layer.data, list) else [layer.data]
    h = hashlib.sha256()
    for part in parts:
        arr = np.asarray(part)
        h.update(f"{arr.shape}{arr.dtype.str}".encode())
        h.update(arr.tobytes())
    return (layer.name, type(layer).__name__, h.hexdigest())


def _snapshot(viewer) -> list[tuple]:
    """Name, type and content hash of every layer, in order."""
    return [_digest(layer) for layer in viewer.layers]


def _slowed(real, delay=0.25):
    """Wrap a progress-generator function so each event takes ``delay`` s (time to press Cancel)."""

    def wrapped(*args, **kwargs):
        result = yield from _each_slow(real(*args, **kwargs), delay)
        return result

    return wrapped


def _each_slow(gen, delay):
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        time.sleep(delay)
        yield event


def _segment_widget(viewer, checkpoint):
    widget = sw.SegmentWidget(viewer)
    widget.model_choice.value = sw.FILE_CHOICE
    widget.checkpoint.value = str(checkpoint)
    widget.device.value = "cpu"
    widget.batch_size.value = 1
    return widget


def test_resegmenting_never_replaces_an_edited_result(make_napari_viewer, qtbot, checkpoint, volume, errors):
    viewer = make_napari_viewer()
    image = viewer.add_image(volume.data, **image_layer_kwargs(volume, "scan"))
    image_before = _digest(image)
    widget = _segment_widget(viewer, checkpoint)
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    first = viewer.layers["scan labels"]
    # the user corrects the result with the brush (through napari's own painting API)
    first.selected_label = 9
    first.paint((1, 30, 20), 9, refresh=True)
    first.data[2, 10:20, 5:15] = 4
    edited = np.array(first.data, copy=True)
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert errors == []
    assert [layer.name for layer in viewer.layers] == ["scan", "scan labels", "scan labels [2]"]
    assert viewer.layers["scan labels"] is first
    assert first.data.tobytes() == edited.tobytes() and first.data.dtype == edited.dtype
    second = viewer.layers["scan labels [2]"]
    assert second.data is not first.data and not np.shares_memory(np.asarray(second.data), np.asarray(first.data))
    assert _digest(image) == image_before  # the image is read, never written


def test_segment_cancel_leaves_every_layer_as_it_was(
    make_napari_viewer, qtbot, checkpoint, volume, errors, monkeypatch
):
    viewer = make_napari_viewer()
    viewer.add_image(volume.data, **image_layer_kwargs(volume, "scan"))
    viewer.add_labels(volume.labels.copy(), **labels_layer_kwargs("my corrections", scale=volume.scale_um))
    before = _snapshot(viewer)
    monkeypatch.setattr(sw, "segment", _slowed(sw.segment))
    widget = _segment_widget(viewer, checkpoint)
    widget.start()
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=30_000)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=30_000)
    assert _snapshot(viewer) == before
    assert [type(e).__name__ for e in errors] == ["Cancelled"]


def test_explain_cancel_leaves_every_layer_as_it_was(
    make_napari_viewer, qtbot, checkpoint, volume, errors, monkeypatch
):
    viewer = make_napari_viewer()
    viewer.add_image(volume.data, **image_layer_kwargs(volume, "scan"))
    viewer.add_labels(volume.labels.copy(), **labels_layer_kwargs("scan labels", scale=volume.scale_um))
    before = _snapshot(viewer)
    monkeypatch.setattr(ew, "gradcam", _slowed(ew.gradcam))
    widget = ew.ExplainWidget(viewer)
    widget.model_choice.value = ew.FILE_CHOICE
    widget.checkpoint.value = str(checkpoint)
    widget.device.value = "cpu"
    widget.start()
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=30_000)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=30_000)
    assert _snapshot(viewer) == before
    assert [type(e).__name__ for e in errors] == ["Cancelled"]


@pytest.fixture
def thickness_viewer(make_napari_viewer, volume):
    viewer = make_napari_viewer()
    viewer.add_image(volume.data, **image_layer_kwargs(volume, "scan"))
    labels = viewer.add_labels(volume.labels.copy(), **labels_layer_kwargs("scan labels", scale=volume.scale_um))
    widget = tw.ThicknessWidget(viewer)
    widget.source_labels.value = labels
    return viewer, widget, labels


def test_thickness_cancel_keeps_the_previous_result(qtbot, thickness_viewer, volume, errors, monkeypatch):
    viewer, widget, labels = thickness_viewer
    widget.start()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=30_000)
    assert widget.report is not None and errors == []
    before, report = _snapshot(viewer), widget.report
    monkeypatch.setattr(tw, "analyse", _slowed(tw.analyse, delay=0.5))
    widget.start()
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=30_000)
    widget.cancel()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=30_000)
    assert _snapshot(viewer) == before and widget.report is report
    np.testing.assert_array_equal(labels.data, volume.labels)


def test_thickness_measures_a_copy_while_the_user_paints(qtbot, thickness_viewer, volume, errors, monkeypatch):
    viewer, widget, labels = thickness_viewer
    monkeypatch.setattr(tw, "analyse", _slowed(tw.analyse, delay=0.3))
    widget.start()
    labels.data[0, :5, :5] = 9  # painted during the measurement: kept, and never overwritten by it
    painted = np.array(labels.data, copy=True)
    qtbot.waitUntil(lambda: widget._worker is None, timeout=30_000)
    assert errors == [] and widget.report is not None
    np.testing.assert_array_equal(labels.data, painted)


def _half_then_fail(real):
    def broken(self, data, *args, **kwargs):
        real(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return broken


def test_thickness_export_crash_keeps_the_previous_csv(qtbot, thickness_viewer, tmp_path, errors, monkeypatch):
    viewer, widget, labels = thickness_viewer
    widget.start()
    qtbot.waitUntil(lambda: widget._worker is None, timeout=30_000)
    target = tmp_path / "thickness.csv"
    companion = widget.sector_path(target)
    target.write_text("earlier per-A-scan table")
    companion.write_text("earlier sector table")
    monkeypatch.setattr(pathlib.Path, "write_text", _half_then_fail(pathlib.Path.write_text))
    assert widget.export_csv(target, force=True) is None
    assert len(errors) == 1 and "No space left" in str(errors[0])
    assert target.read_text() == "earlier per-A-scan table" and companion.read_text() == "earlier sector table"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, companion.name])  # no temporaries


@pytest.fixture
def finetune_setup(make_napari_viewer, tmp_path, monkeypatch, checkpoint, volume):
    monkeypatch.setenv("OCTSEG_MODEL_DIR", str(tmp_path))
    viewer = make_napari_viewer()
    viewer.add_image(volume.data, **image_layer_kwargs(volume, "scan"))
    corrected = viewer.add_labels(volume.labels.copy(), **labels_layer_kwargs("scan labels", scale=volume.scale_um))
    widget = fw.FinetuneWidget(viewer)
    widget.base_combo.value = fw.FILE_CHOICE
    widget.base_file.value = checkpoint
    widget.bscans_edit.value = "1"
    widget.epochs_spin.value = 1
    widget.device_combo.value = "cpu"
    return viewer, widget, corrected


def test_finetune_never_writes_over_an_existing_checkpoint(
    finetune_setup, qtbot, tmp_path, checkpoint, errors, monkeypatch
):
    viewer, widget, corrected = finetune_setup
    before = _snapshot(viewer)
    existing = tmp_path / "mine.pt"
    existing.write_bytes(b"an earlier checkpoint")
    base_bytes = checkpoint.read_bytes()
    for folder, name in ((tmp_path, "mine"), (checkpoint.parent, checkpoint.stem)):
        monkeypatch.setenv("OCTSEG_MODEL_DIR", str(folder))  # the library holds the file of that name
        widget.name_edit.value = name
        widget.run()
        assert widget.worker is None
    assert len(errors) == 2
    assert existing.read_bytes() == b"an earlier checkpoint" and checkpoint.read_bytes() == base_bytes
    assert _snapshot(viewer) == before


def test_finetune_keeps_corrections_painted_during_training(finetune_setup, qtbot, tmp_path, volume, errors):
    viewer, widget, corrected = finetune_setup
    widget.name_edit.value = "new"
    widget.run()
    corrected.data[3, :4, :4] = 9  # the user goes on correcting while the model trains
    painted = np.array(corrected.data, copy=True)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert errors == [] and (tmp_path / "new.pt").is_file()
    np.testing.assert_array_equal(corrected.data, painted)

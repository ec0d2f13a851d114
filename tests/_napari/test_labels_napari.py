"""Save -> close -> reopen in napari: the plugin's writer and reader keep µm scale, class names and the
record of edited B-scans, so Fine-tune finds the corrections again; ``octseg segment`` outputs open the same way."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from napari_octseg._napari import segment_widget as sw  # noqa: E402
from napari_octseg._napari.finetune_widget import FinetuneWidget, corrected_bscans  # noqa: E402
from napari_octseg._napari.reader import get_reader  # noqa: E402
from napari_octseg.cli import main  # noqa: E402

SCALE = (120.0, 3.9, 11.3)


def _scan_tif(path, rng, n=4, depth=48, width=40):
    """An ImageJ TIFF stack with its µm scale, as Fiji writes it (our reader reads the scale)."""
    data = (rng.random((n, depth, width)) * 255).astype(np.uint8)
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / SCALE[2], 1 / SCALE[1]),
        metadata={"axes": "ZYX", "unit": "um", "spacing": SCALE[0]},
    )
    return path


def _segment_in_viewer(viewer, qtbot, checkpoint):
    widget = sw.SegmentWidget(viewer)
    widget.model_choice.value = sw.FILE_CHOICE
    widget.checkpoint.value = str(checkpoint)
    widget.device.value = "cpu"
    widget.start()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    return [layer for layer in viewer.layers if type(layer).__name__ == "Labels"][-1]


def test_save_close_reopen_keeps_scale_names_and_edits(make_napari_viewer, qtbot, tiny_checkpoint, rng, tmp_path):
    import napari

    scan = _scan_tif(tmp_path / "S01.oct.tif", rng)
    viewer = make_napari_viewer()
    viewer.open(str(scan), plugin="napari-octseg")
    labels = _segment_in_viewer(viewer, qtbot, tiny_checkpoint)
    assert labels.name == "S01.oct.tif labels"
    labels.data[2, 10:14, 5:9] = 9  # the user paints fluid on B-scan 2
    assert corrected_bscans(labels) == [2]

    # File > Save Selected Layers with a .labels.tif name picks this plugin's writer (longest extension)
    written = napari.save_layers(str(tmp_path / "S01.labels.tif"), [labels])
    assert sorted(p.rsplit("/", 1)[-1] for p in written) == ["S01.labels.json", "S01.labels.tif"]
    info = json.loads((tmp_path / "S01.labels.json").read_text())
    assert info["edits"]["edited_bscans"] == [2] and info["source"]["name"] == "S01"
    assert info["model"]["source"] == str(tiny_checkpoint) and info["scale_um"] == pytest.approx(list(SCALE))

    saved = np.array(labels.data, copy=True)
    viewer.layers.clear()  # close
    reopened = viewer.open(str(tmp_path / "S01.labels.tif"), plugin="napari-octseg")
    # the labels, then their boundary lines if a boundary was found (test_boundary_layer.py)
    assert [type(lay).__name__ for lay in reopened][:1] == ["Labels"] and len(reopened) <= 2
    layer = reopened[0]
    np.testing.assert_array_equal(layer.data, saved)
    np.testing.assert_allclose(layer.scale, SCALE)
    assert all(str(u) == "micrometer" for u in layer.units)
    assert list(layer.features["class"])[9] == "fluid"
    assert corrected_bscans(layer) == [2]

    # with its image opened again, the Fine-tune dock finds the edited B-scan by itself
    image = viewer.open(str(scan), plugin="napari-octseg")[0]
    np.testing.assert_allclose(image.scale, layer.scale)
    dock = FinetuneWidget(viewer)
    dock.labels_combo.value = layer
    assert dock.detect_corrected() == [2] and dock.bscans_edit.value == "2"
    # and saving again (no new edits) keeps the same record
    again = napari.save_layers(str(tmp_path / "again.labels.tif"), [layer], plugin="napari-octseg")
    assert json.loads((tmp_path / "again.labels.json").read_text())["edits"]["edited_bscans"] == [2]
    assert len(again) == 2


def test_cli_outputs_open_as_labels_on_the_image(make_napari_viewer, tiny_checkpoint, rng, tmp_path):
    scan = _scan_tif(tmp_path / "S02.oct.tif", rng)
    out = tmp_path / "out"
    assert main(["segment", str(scan), "--out", str(out), "--model", str(tiny_checkpoint), "--quiet"]) == 0
    layers = get_reader(str(out / "S02.labels.tif"))(None)
    assert [kind for _, _, kind in layers] in (["labels"], ["labels", "shapes"])
    data, kwargs, _ = layers[0]
    assert data.dtype == np.uint8 and data.shape == (4, 48, 40)
    assert kwargs["scale"] == pytest.approx(SCALE) and kwargs["units"] == ("µm",) * 3
    assert kwargs["features"]["class"][1] == "NFL"
    meta = kwargs["metadata"]
    assert meta[sw.SEGMENTATION_KEY]["image_layer"] == "S02.oct.tif"  # the name the reader gives the scan's layer
    assert len(meta[sw.AUTO_LABELS_KEY]["bscan_hashes"]) == 4

    viewer = make_napari_viewer()
    image = viewer.open(str(scan), plugin="napari-octseg")[0]
    labels = viewer.open(str(out / "S02.labels.tif"), plugin="napari-octseg")[0]
    np.testing.assert_allclose(labels.scale, image.scale)
    assert corrected_bscans(labels) == []
    labels.data[0, 0, 0] = (labels.data[0, 0, 0] + 1) % 10
    assert corrected_bscans(labels) == [0]


def test_manifest_declares_the_labels_writer():
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManager.instance()
    pm.discover()
    writers = pm.get_manifest("napari-octseg").contributions.writers or []
    ours = [w for w in writers if w.command == "napari-octseg.write_labels"]
    assert ours and ours[0].layer_types == ["labels"] and ".labels.tif" in ours[0].filename_extensions
    writer, path = pm.get_writer("x.labels.tif", ["labels"])
    assert writer is not None and writer.command == "napari-octseg.write_labels" and path == "x.labels.tif"

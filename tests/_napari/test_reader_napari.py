"""npe2 reader and sample data: layer data tuples, None for unreadable files, napari integration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from napari_octseg._napari.reader import get_reader
from napari_octseg._napari.sample import make_sample_macula


def test_reader_returns_none_for_what_it_cannot_read(tmp_path):
    (tmp_path / "a.docx").write_bytes(b"x")
    (tmp_path / "bad.vol").write_bytes(b"garbage" * 100)
    (tmp_path / "empty.npy").write_bytes(b"")
    for name in ("a.docx", "bad.vol", "empty.npy", "missing.vol"):
        assert get_reader(str(tmp_path / name)) is None


def test_reader_vol_layers(vol_dir):
    reader = get_reader(str(vol_dir / "Willis_B_716_0.vol"))
    layers = reader(str(vol_dir / "Willis_B_716_0.vol"))
    kinds = [kind for _, _, kind in layers]
    assert kinds == ["image", "shapes"]
    (image, ikw, _), (paths, skw, _) = layers
    assert image.shape == (1, 496, 768) and ikw["scale"] == skw["scale"]
    assert ikw["metadata"]["octseg"]["reflectivity"] == "display"  # shown as x ** 0.25 already
    raw = __import__("napari_octseg.io", fromlist=["read"]).read(vol_dir / "Willis_B_716_0.vol").data
    assert np.allclose(image, raw**0.25)
    assert set(skw["features"]["line"]) == {"ILM", "BM"}  # RNFL is all FLT_MAX in this file
    assert all(p.shape[1] == 3 and np.isfinite(p).all() for p in paths)


def test_reader_npz_brings_ground_truth(duke_dir):
    layers = get_reader(str(duke_dir / "Subject_07.npz"))(None)
    assert [kind for _, _, kind in layers] == ["image", "labels"]
    assert layers[1][0].dtype == np.uint8 and layers[1][1]["units"] == ("µm",) * 3


def test_sample_layers():
    (image, ikw, k1), (labels, lkw, k2) = make_sample_macula()
    assert (k1, k2) == ("image", "labels")
    assert image.shape == labels.shape == (25, 496, 512)
    assert ikw["scale"] == lkw["scale"] and lkw["units"] == ("µm",) * 3


def test_manifest_lists_reader_and_sample():
    npe2 = pytest.importorskip("npe2")
    pm = npe2.PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("napari-octseg")
    assert any(r.command == "napari-octseg.get_reader" for r in manifest.contributions.readers)
    assert any(s.key == "macula" for s in manifest.contributions.sample_data)
    readers = [r.plugin_name for r in pm.iter_compatible_readers(["x.vol"])]
    assert "napari-octseg" in readers


@pytest.mark.gui
def test_viewer_opens_vol_and_sample(make_napari_viewer, vol_dir):
    viewer = make_napari_viewer()
    viewer.open(str(vol_dir / "valid.vol"), plugin="napari-octseg")
    viewer.open_sample("napari-octseg", "macula")
    names = [layer.name for layer in viewer.layers]
    assert names[:2] == ["valid.vol", "valid.vol device lines"] and "synthetic macula" in names
    assert tuple(viewer.layers["valid.vol"].scale) == tuple(viewer.layers["valid.vol device lines"].scale)
    # the device's lines in their own colours, each named on the B-scan as a device line
    from napari_octseg.core.surface_paths import DEVICE_LINE_COLORS

    lines = viewer.layers["valid.vol device lines"]
    for name, edge, text in zip(lines.features["line"], lines.edge_color, lines.text.values):
        assert text == f"device {name}"
        if name in DEVICE_LINE_COLORS:
            np.testing.assert_allclose(edge[:3], DEVICE_LINE_COLORS[name], atol=1 / 255)
    assert {"ILM", "BM"} <= set(lines.features["line"])


def test_every_dock_opens_from_the_plugins_menu(make_napari_viewer):
    """napari builds each manifest widget itself, injecting the viewer by its type annotation."""
    import yaml

    import napari_octseg

    manifest = yaml.safe_load((Path(napari_octseg.__file__).parent / "napari.yaml").read_text())
    names = [w["display_name"] for w in manifest["contributions"]["widgets"]]
    assert len(names) == 4
    viewer = make_napari_viewer()
    for name in names:
        dock, widget = viewer.window.add_plugin_dock_widget("napari-octseg", name)
        assert widget is not None and dock is not None, name

"""Which reader napari picks, through napari's own ``viewer.open`` / ``read_data_with_plugins`` (no plugin named).

Plain TIFF / ``.npy`` files go to napari's builtin reader without a "Choose reader" dialog; device
files, our ``*.labels.tif`` and ``*.oct.tif`` go to this plugin (the latter two once the plugin has
saved its reader preference for those double suffixes, as its docks and writer do).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
tifffile = pytest.importorskip("tifffile")

from napari.errors import MultipleReaderError  # noqa: E402
from napari.plugins.io import read_data_with_plugins  # noqa: E402
from napari.settings import get_settings  # noqa: E402

from napari_octseg._napari.reader_choice import (  # noqa: E402
    GENERIC_EXTENSIONS,
    OWN_SUFFIXES,
    PLUGIN_NAME,
    prefer_plugin_for_own_files,
    reader_patterns,
)
from napari_octseg.io.labels import write_labels_file  # noqa: E402

SCALE = (60.0, 3.87, 11.6)


@pytest.fixture
def settings():
    """napari's settings, emptied of reader preferences and kept off the user's settings file."""
    s = get_settings()
    # set and restored by hand: monkeypatch's undo deletes a pydantic (>= 2.14) private attribute that napari
    # reads on every change, which breaks every later viewer
    saving = s._save_on_change
    s._save_on_change = False
    before = dict(s.plugins.extension2reader)
    s.plugins.extension2reader = {}
    try:
        yield s
    finally:
        s.plugins.extension2reader = before
        s._save_on_change = saving


def _readers(path) -> list[str]:
    import npe2
    from napari.plugins import _initialize_plugins

    _initialize_plugins()  # napari's builtins and this plugin, as napari registers them at start
    return sorted(r.plugin_name for r in npe2.PluginManager.instance().iter_compatible_readers([str(path)]))


def test_generic_containers_are_napari_s_alone(tmp_path, rng):
    photo = tmp_path / "photo.tif"
    tifffile.imwrite(photo, (rng.random((32, 40, 3)) * 255).astype(np.uint8), photometric="rgb")
    stack = tmp_path / "stack.tif"  # a grey stack that could be OCT: still napari's by name
    tifffile.imwrite(stack, (rng.random((3, 40, 36)) * 255).astype(np.uint8))
    table = tmp_path / "points.npy"
    np.save(table, rng.random((50, 3)))
    _readers(photo)
    for path in (photo, stack, table):
        assert _readers(path) == ["napari"], path
        data, plugin = read_data_with_plugins([str(path)], plugin=None, stack=False)
        assert plugin == "napari" and data, path


@pytest.mark.parametrize("name", ["scan.vol", "scan.E2E", "scan.fds", "scan.mat", "scan.xml", "scan.oct"])
def test_device_formats_are_ours_alone(name):
    assert _readers(name) == [PLUGIN_NAME]


def test_manifest_patterns_leave_generic_extensions_to_napari():
    patterns = reader_patterns()
    for ext in GENERIC_EXTENSIONS:
        assert f"*{ext}" not in patterns and f"*{ext.upper()}" not in patterns
    for suffix in OWN_SUFFIXES:
        assert f"*{suffix}" in patterns


def test_preference_is_saved_for_our_suffixes_only_and_never_over_the_user_s(settings):
    settings.plugins.extension2reader = {"*.tif": "napari", "*.oct.npy": "someone-else"}
    added = prefer_plugin_for_own_files()
    prefs = dict(settings.plugins.extension2reader)
    assert "*.labels.tif" in added and "*.LABELS.TIF" in added and "*.oct.npy" not in added
    assert prefs["*.tif"] == "napari" and prefs["*.oct.npy"] == "someone-else"
    assert all(prefs[p] == PLUGIN_NAME for p in added)
    assert list(prefs)[0] == "*.labels.tif"  # ours first: wins over the equally specific *.tif
    assert prefer_plugin_for_own_files() == []  # idempotent


def _gui_open(viewer, path, monkeypatch) -> list:
    """Open ``path`` as File > Open and drag-and-drop do (``QtViewer._qt_open``); fail if napari would ask."""
    import napari._qt.qt_viewer as qt_viewer

    def chooser(paths, *args, **kwargs):
        raise AssertionError(f"napari would show its 'Choose reader' dialog for {paths}")

    monkeypatch.setattr(qt_viewer, "handle_gui_reading", chooser)
    before = list(viewer.layers)
    viewer.window._qt_viewer._qt_open([str(path)], stack=False)
    return [layer for layer in viewer.layers if layer not in before]


@pytest.mark.gui
def test_file_open_picks_the_right_reader_without_asking(
    make_napari_viewer, settings, tmp_path, rng, vol_dir, monkeypatch
):
    viewer = make_napari_viewer()
    # what the Segment dock (or the writer) does when it first runs; a "remember this choice" for *.tif stays
    settings.plugins.extension2reader = {"*.tif": "napari"}
    prefer_plugin_for_own_files()

    plain = tmp_path / "cells.tif"
    tifffile.imwrite(plain, (rng.random((3, 40, 36)) * 255).astype(np.uint8))
    (layer,) = _gui_open(viewer, plain, monkeypatch)
    assert layer.source.reader_plugin == "napari" and type(layer).__name__ == "Image"
    table = tmp_path / "table.npy"
    np.save(table, rng.random((4, 40, 36)).astype(np.float32))
    (layer,) = _gui_open(viewer, table, monkeypatch)
    assert layer.source.reader_plugin == "napari"

    labels = (rng.random((2, 48, 40)) * 9).astype(np.uint8)
    tif, _ = write_labels_file(tmp_path / "S01.labels.tif", labels, scale_um=SCALE)
    layer, lines = _gui_open(viewer, tif, monkeypatch)
    assert {layer.source.reader_plugin, lines.source.reader_plugin} == {PLUGIN_NAME}
    assert type(layer).__name__ == "Labels" and type(lines).__name__ == "Shapes"
    np.testing.assert_allclose(layer.scale, SCALE)
    assert list(layer.features["class"])[1] == "NFL"

    octtif = tmp_path / "scan.oct.tif"
    tifffile.imwrite(octtif, (rng.random((2, 48, 40)) * 255).astype(np.uint8))
    (layer,) = _gui_open(viewer, octtif, monkeypatch)
    assert layer.source.reader_plugin == PLUGIN_NAME and layer.name == "scan.oct.tif"

    layers = _gui_open(viewer, vol_dir / "valid.vol", monkeypatch)
    assert layers and {lay.source.reader_plugin for lay in layers} == {PLUGIN_NAME}


@pytest.mark.gui
def test_without_the_preference_napari_asks_for_our_double_suffix(make_napari_viewer, settings, tmp_path, rng):
    """Why the preference exists: napari 0.9 decides by file name alone, and ``*.labels.tif`` matches ``*.tif``."""
    viewer = make_napari_viewer()
    labels = (rng.random((2, 48, 40)) * 9).astype(np.uint8)
    tif, _ = write_labels_file(tmp_path / "S01.labels.tif", labels, scale_um=SCALE)
    with pytest.raises(MultipleReaderError):
        viewer.open(str(tif), plugin=None)  # plugin=None: as File > Open asks (viewer.open's default is napari's)


@pytest.mark.gui
def test_file_menu_opens_a_plain_tiff_as_oct(make_napari_viewer, tmp_path, rng, monkeypatch):
    """File > IO Utilities > Open as OCT scan...: a plain ImageJ TIFF through this plugin, at its µm scale."""
    from app_model.types import MenuItem
    from napari._app_model import get_app_model
    from qtpy.QtWidgets import QFileDialog

    viewer = make_napari_viewer()
    items = get_app_model().menus.get_menu("napari/file/io_utilities")
    assert "napari-octseg.open_as_oct" in [i.command.id for i in items if isinstance(i, MenuItem)]

    scan = tmp_path / "S01.tif"  # plain name: napari's own reader would take it from File > Open
    tifffile.imwrite(
        scan,
        (rng.random((3, 40, 36)) * 255).astype(np.uint8),
        imagej=True,
        resolution=(1 / SCALE[2], 1 / SCALE[1]),
        metadata={"axes": "ZYX", "unit": "um", "spacing": SCALE[0]},
    )
    photo = tmp_path / "photo.tif"
    tifffile.imwrite(photo, (rng.random((32, 40, 3)) * 255).astype(np.uint8), photometric="rgb")
    monkeypatch.setattr(QFileDialog, "getOpenFileNames", lambda *a, **k: ([str(scan), str(photo)], ""))
    get_app_model().commands.execute_command("napari-octseg.open_as_oct").result()
    assert [layer.name for layer in viewer.layers] == ["S01.tif"]  # the RGB photo is declined with a warning
    np.testing.assert_allclose(viewer.layers["S01.tif"].scale, SCALE, rtol=1e-3)
    assert viewer.layers["S01.tif"].axis_labels == ("B-scan", "depth", "A-scan")

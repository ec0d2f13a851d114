"""Boundary surfaces as polylines (core) and as a napari Shapes layer (Segment dock, labels files)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_octseg.core.boundaries import boundaries, labels_from_boundaries
from napari_octseg.core.classes import BOUNDARY_NAMES, CLASS_COLORS
from napari_octseg.core.surface_paths import BOUNDARY_COLORS, PIXEL_EDGE_OFFSET, finite_runs, surface_paths

SCALE = (120.0, 3.9, 11.3)


def _rows_of(path: np.ndarray, width: int) -> np.ndarray:
    """The path's row at every column 0..width-1 (NaN outside it), by linear interpolation of its vertices."""
    cols = np.arange(width, dtype=np.float64)
    rows = np.interp(cols, path[:, -1], path[:, -2])
    rows[(cols < path[0, -1]) | (cols > path[-1, -1])] = np.nan
    return rows


def _surfaces_from_paths(paths, shape) -> np.ndarray:
    """Rebuild (n_surfaces, n_bscans, width) from paths (NaN where no path passes)."""
    out = np.full(shape, np.nan)
    for vertices, k, i in zip(paths.vertices, paths.surface, paths.bscan):
        rows = _rows_of(vertices, shape[2])
        out[k, i] = np.where(np.isfinite(rows), rows, out[k, i])
    return out


def _known_surfaces(n=3, width=40) -> np.ndarray:
    """Eight ordered, curved surfaces (rows in px) on ``n`` B-scans, with a gap and a lone A-scan in BM."""
    cols = np.arange(width)
    base = 8 + 3 * np.sin(cols / 6.0)
    s = np.stack([np.stack([base + 4 * k + i for i in range(n)]) for k in range(8)]).round().astype(np.float32)
    s[7, 1, 10:14] = np.nan  # a gap: BM on B-scan 1 becomes two paths
    s[7, 2, 1] = np.nan  # column 0 alone: a one-A-scan run is not a path
    return s


def test_finite_runs():
    assert finite_runs(np.array([np.nan, 1, 2, np.nan, 3, np.nan, np.nan, 4, 5, 6])) == [(1, 3), (4, 5), (7, 10)]
    assert finite_runs(np.array([np.nan, np.nan])) == []


def test_paths_give_back_the_surfaces_exactly():
    s = _known_surfaces()
    paths = surface_paths(s)
    assert all(v.dtype == np.float32 and v.shape[1] == 3 for v in paths.vertices)
    for v, i in zip(paths.vertices, paths.bscan):
        assert (v[:, 0] == i).all() and (np.diff(v[:, 2]) > 0).all()  # on one B-scan, columns increasing
    expected = s.astype(np.float64).copy()
    expected[7, 2, 0] = np.nan  # the lone A-scan
    np.testing.assert_array_equal(_surfaces_from_paths(paths, s.shape), expected)
    assert ((paths.surface == 7) & (paths.bscan == 1)).sum() == 2  # split at the gap
    # straight stretches keep only their ends: fewer vertices than A-scans
    assert sum(len(v) for v in paths.vertices) < np.isfinite(s).sum()


def test_row_offset_and_bad_shape():
    s = _known_surfaces()
    shifted = surface_paths(s, row_offset=PIXEL_EDGE_OFFSET)
    plain = surface_paths(s)
    for a, b in zip(shifted.vertices, plain.vertices):
        np.testing.assert_allclose(a[:, 1], b[:, 1] - 0.5)
    with pytest.raises(ValueError, match="n_surfaces"):
        surface_paths(s[0])


def test_boundary_colours_follow_the_class_legend():
    assert len(BOUNDARY_COLORS) == len(BOUNDARY_NAMES) == 8
    for k in range(7):
        assert BOUNDARY_COLORS[k] == CLASS_COLORS[k + 1]  # the colour of the layer just below
    assert len({c[:3] for c in BOUNDARY_COLORS}) == 8 and BOUNDARY_COLORS[7][3] == 1.0


def test_device_line_colours_differ_from_every_class_and_boundary_colour():
    """The device's ILM/BM were gold and cyan: the INL and RPE colours of the legend (0.11 and 0.28 apart)."""
    from napari_octseg.core.surface_paths import DEVICE_LINE_COLORS, DEVICE_LINE_EXTRA_COLORS

    ours = np.array([c[:3] for c in CLASS_COLORS.values() if c[3] > 0] + [c[:3] for c in BOUNDARY_COLORS])
    device = np.array(list(DEVICE_LINE_COLORS.values()))
    extra = np.array(DEVICE_LINE_EXTRA_COLORS)
    gap = np.linalg.norm(device[:, None] - ours[None], axis=2)
    assert gap.min() >= 0.5, gap.min()
    everything = np.concatenate([ours, device])
    assert np.linalg.norm(extra[:, None] - everything[None], axis=2).min() >= 0.45
    theirs = np.concatenate([device, extra])
    pairs = np.linalg.norm(theirs[:, None] - theirs[None], axis=2)[np.triu_indices(len(theirs), 1)]
    assert pairs.min() >= 0.45


# ---------------------------------------------------------------------------------------------- napari


def _labels(n=3, width=40, depth=60) -> np.ndarray:
    labels = labels_from_boundaries(_known_surfaces(n, width), depth)
    labels[1, 30:33, 20:24] = 9  # a cyst in the ONL: surfaces as octseg thickness computes them
    return labels


def _check_layer(layer, labels, scale):
    """Shapes paths of ``layer`` reproduce ``core.boundaries(labels)`` (pixel edge: row - 0.5), colours, scale."""
    from napari_octseg._napari.boundary_layer import BOUNDARIES_KEY

    core = boundaries(labels)
    assert type(layer).__name__ == "Shapes" and set(layer.shape_type) == {"path"}
    np.testing.assert_allclose(layer.scale, scale)
    assert all(str(u) == "micrometer" for u in layer.units)
    names = list(layer.features["boundary"])
    bscans = list(layer.features["bscan"])
    rebuilt = np.full(core.shape, np.nan)
    for vertices, name, i, color in zip(layer.data, names, bscans, layer.edge_color):
        k = BOUNDARY_NAMES.index(name)
        assert (vertices[:, 0] == i).all()
        np.testing.assert_allclose(color, BOUNDARY_COLORS[k], atol=1 / 255)
        rows = _rows_of(vertices, core.shape[2]) - PIXEL_EDGE_OFFSET
        rebuilt[k, i] = np.where(np.isfinite(rows), rows, rebuilt[k, i])
    lone = np.isfinite(core) & np.isnan(rebuilt)  # single-A-scan runs are not drawn
    np.testing.assert_allclose(rebuilt[~lone], core[~lone], atol=1e-4)
    padded = np.pad(core, ((0, 0), (0, 0), (1, 1)), constant_values=np.nan)
    for k, i, j in zip(*np.nonzero(lone)):
        assert np.isnan(padded[k, i, j]) and np.isnan(padded[k, i, j + 2]), (k, i, j)
    assert layer.metadata[BOUNDARIES_KEY]["boundary_names"] == list(BOUNDARY_NAMES)


@pytest.mark.gui
def test_segment_dock_adds_the_boundary_layer(make_napari_viewer, monkeypatch):
    pytest.importorskip("napari")
    from napari_octseg._napari import segment_widget as sw
    from napari_octseg.core.classes import CLASS_NAMES
    from napari_octseg.inference import SegmentationResult

    viewer = make_napari_viewer()
    labels = _labels()
    image = viewer.add_image(np.zeros(labels.shape, np.float32), name="scan", scale=SCALE, units=("µm",) * 3)
    widget = sw.SegmentWidget(viewer)
    assert widget.boundaries_check.value  # on by default
    result = SegmentationResult(labels, None, "cpu", 0.1, 1, class_names=CLASS_NAMES)
    widget._show_result((image, type("M", (), {"source": "<test>"})(), result))
    assert [layer.name for layer in viewer.layers] == ["scan", "scan labels", "boundaries · scan"]
    lines = viewer.layers["boundaries · scan"]
    _check_layer(lines, labels, SCALE)
    assert viewer.layers.selection.active is viewer.layers["scan labels"]  # the brush stays on the labels

    # only the current B-scan's lines are drawn
    viewer.dims.set_point(0, 1 * SCALE[0])
    viewer.dims.current_step = (1, 0, 0)
    in_view = set(lines._view_indices.tolist())  # the shapes napari draws on this slice
    assert in_view and {list(lines.features["bscan"])[j] for j in in_view} == {1}

    widget.boundaries_check.value = False
    widget._show_result((image, type("M", (), {"source": "<test>"})(), result))
    assert [layer.name for layer in viewer.layers][-1] == "scan labels [2]"


@pytest.mark.gui
def test_labels_file_opens_with_its_boundary_layer(make_napari_viewer, tmp_path):
    from napari_octseg._napari.reader import get_reader
    from napari_octseg.io.labels import write_labels_file

    labels = _labels()
    scan = tmp_path / "S01.vol"
    tif, _ = write_labels_file(tmp_path / "S01.labels.tif", labels, scale_um=SCALE, source={"file": str(scan)})
    viewer = make_napari_viewer()
    layers = viewer.open(str(tif), plugin="napari-octseg")
    assert [layer.name for layer in layers] == ["S01.labels", "boundaries · S01.vol"]
    _check_layer(layers[1], labels, SCALE)
    # other class schemes have no such boundaries: no lines layer
    other = write_labels_file(tmp_path / "X.labels.tif", labels.clip(0, 3), ["a", "b", "c", "d"], scale_um=SCALE)[0]
    assert [kind for _, _, kind in get_reader(str(other))(None)] == ["labels"]


def test_paths_of_some_bscans_are_those_of_the_whole_volume():
    from napari_octseg.core.surface_paths import boundary_paths, bscan_digests

    labels = _labels()
    whole = boundary_paths(labels)
    some = boundary_paths(labels, [2, 1, 2])
    expected = [(v, k, i) for v, k, i in zip(whole.vertices, whole.surface, whole.bscan) if i in (1, 2)]
    assert len(some.vertices) == len(expected)
    for v, k, i, (ev, ek, ei) in zip(some.vertices, some.surface, some.bscan, expected):
        assert (k, i) == (ek, ei)
        np.testing.assert_array_equal(v, ev)  # B-scan axis in the volume's indices
    assert boundary_paths(labels, []).vertices == []
    with pytest.raises(IndexError, match="outside"):
        boundary_paths(labels, [3])
    digests = bscan_digests(labels)
    edited = labels.copy()
    edited[2, 5, 5] += 1
    assert np.flatnonzero(bscan_digests(edited) != digests).tolist() == [2]


def _paths_by_bscan(layer) -> dict[int, list[tuple[str, bytes]]]:
    out: dict[int, list[tuple[str, bytes]]] = {}
    for vertices, name, i in zip(layer.data, layer.features["boundary"], layer.features["bscan"]):
        out.setdefault(int(i), []).append((name, np.asarray(vertices).tobytes()))
    return out


@pytest.mark.gui
def test_boundary_lines_follow_brush_edits(make_napari_viewer, qtbot):
    from napari_octseg._napari.boundary_layer import add_boundary_layer, follower_of

    viewer = make_napari_viewer()
    labels = _labels()
    layer = viewer.add_labels(labels.copy(), name="scan labels", scale=SCALE, units=("µm",) * 3)
    lines = add_boundary_layer(viewer, layer, base="scan")
    before = _paths_by_bscan(lines)
    follower = follower_of(lines)
    assert follower is not None

    # a brush stroke of NFL (class 1) into the vitreous of B-scan 1 pulls its ILM up by several pixels
    layer.brush_size = 6
    layer.paint((1, 4, 20), 1)
    layer.paint((1, 4, 26), 1)
    assert not np.array_equal(boundaries(layer.data)[0, 1], boundaries(labels)[0, 1])
    qtbot.waitUntil(lambda: _paths_by_bscan(lines) != before, timeout=3000)  # the debounced redraw ran
    after = _paths_by_bscan(lines)
    assert after[0] == before[0] and after[2] == before[2]  # other B-scans untouched
    assert after[1] != before[1]
    _check_layer(lines, np.asarray(layer.data), SCALE)  # every line = core.boundaries of the edited labels
    assert follower.update() == []  # nothing left to redraw

    # undo (no paint event, a refresh) brings the old lines back
    layer.undo()
    layer.undo()
    qtbot.waitUntil(lambda: _paths_by_bscan(lines)[1] == before[1], timeout=3000)
    _check_layer(lines, labels, SCALE)

    # the array replaced (a script, a plugin): the B-scans that differ are redrawn
    replaced = labels.copy()
    replaced[[0, 2], :6] = 1
    layer.data = replaced
    assert follower.update() == [0, 2]
    _check_layer(lines, replaced, SCALE)

    # a label outside the scheme is not drawn (the old lines stay) and raises nothing
    layer.paint((0, 30, 20), 12)
    assert follower.update() == []


@pytest.mark.gui
def test_boundary_lines_of_a_labels_file_follow_edits(make_napari_viewer, tmp_path):
    from napari_octseg._napari.boundary_layer import follower_of
    from napari_octseg.io.labels import write_labels_file

    labels = _labels()
    tif, _ = write_labels_file(tmp_path / "S01.labels.tif", labels, scale_um=SCALE)
    viewer = make_napari_viewer()
    lab_layer, lines = viewer.open(str(tif), plugin="napari-octseg")
    follower = follower_of(lines)
    assert follower is not None
    lab_layer.paint((2, 4, 20), 1)
    assert follower.update() == [2]
    _check_layer(lines, np.asarray(lab_layer.data), SCALE)


@pytest.mark.gui
def test_boundary_lines_of_one_bscan_follow_edits(make_napari_viewer):
    from napari_octseg._napari.boundary_layer import add_boundary_layer, follower_of

    viewer = make_napari_viewer()
    labels = _labels()[1]
    layer = viewer.add_labels(labels.copy(), name="one")
    lines = add_boundary_layer(viewer, layer)
    top_before = min(np.asarray(v)[:, 0].min() for v in lines.data)  # the ILM's highest row
    layer.paint((4, 20), 1)
    assert follower_of(lines).update() == [0]
    assert all(np.asarray(v).shape[1] == 2 for v in lines.data)  # (row, column) paths on a 2-D layer
    ilm = [np.asarray(v) for v, name in zip(lines.data, lines.features["boundary"]) if name == "ILM"]
    assert min(v[:, 0].min() for v in ilm) < top_before  # the stroke of NFL into the vitreous lifted the ILM
    rows = _rows_of(np.column_stack([np.zeros(len(ilm[0])), ilm[0]]), labels.shape[1]) - PIXEL_EDGE_OFFSET
    core = boundaries(np.asarray(layer.data))[0, 0]
    ok = np.isfinite(rows)
    np.testing.assert_allclose(rows[ok], core[ok], atol=1e-4)

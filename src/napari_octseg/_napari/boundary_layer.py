"""The 8 boundary surfaces of a Labels layer as a napari Shapes layer of paths, one colour per boundary.

The surfaces are :func:`napari_octseg.core.boundaries.boundaries` of the labels, the very ones
``octseg thickness --surfaces`` writes; :func:`napari_octseg.core.surface_paths.surface_paths` turns
them into one path per boundary, B-scan and gap-free run. Each path lies on its B-scan, so napari
shows only the current B-scan's lines; the layer has the labels' scale (µm), translate and units.
A boundary is drawn on the pixel edge above the first pixel of the layer below it (row ``b - 0.5``)
in the colour of that layer, as in the class legend (BM in violet).

The lines follow the labels: :class:`BoundaryFollower` listens to the Labels layer's ``paint`` (a
brush, fill or eraser stroke, once it ends), ``data`` (the array replaced) and ``set_data`` (a
refresh, as after undo/redo) events and, a moment after the last one, redraws the lines of the
B-scans whose content changed (a CRC-32 per B-scan tells which), leaving the others untouched.
"""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
from qtpy.QtCore import QTimer

from ..core.classes import BOUNDARY_NAMES
from ..core.errors import LabelError
from ..core.surface_paths import (
    BOUNDARY_COLORS,
    PIXEL_EDGE_OFFSET,
    SurfacePaths,
    boundary_paths,
    bscan_digests,
)
from ._common import axis_labels, unique_layer_name

#: Layer-metadata key describing a boundary layer (boundary names, row offset, the labels it came from).
BOUNDARIES_KEY = "octseg_boundaries"

LayerData = tuple[Any, dict[str, Any], str]

#: Line width in pixels of the B-scan: napari draws a Shapes layer's edges in data coordinates, which the
#: layer's scale then stretches (a width of ``scale_y`` pixels would make lines tens of µm thick).
LINE_WIDTH_PX = 1.2


def _hex(rgba: tuple[float, ...]) -> str:
    return "#" + "".join(f"{round(255 * float(c)):02x}" for c in rgba[:3])


def _shapes_of(paths: SurfacePaths, ndim: int) -> tuple[list[np.ndarray], list[str], dict[str, list[Any]]]:
    """Vertices (2-D labels: without the B-scan axis), edge colours and features of ``paths``."""
    vertices = paths.vertices if ndim == 3 else [v[:, 1:] for v in paths.vertices]
    colors = [_hex(BOUNDARY_COLORS[k]) for k in paths.surface]
    features = {"boundary": [BOUNDARY_NAMES[k] for k in paths.surface], "bscan": paths.bscan.tolist()}
    return vertices, colors, features


def boundary_layer_name(base: str) -> str:
    """``boundaries · <base>`` (``base``: the image's, else the labels' layer name)."""
    return f"boundaries · {base}"


def boundary_shapes(
    labels: np.ndarray,
    name: str,
    *,
    scale: tuple[float, ...] | None = None,
    translate: tuple[float, ...] | None = None,
    units: tuple[Any, ...] | None = None,
    labels_name: str | None = None,
) -> LayerData | None:
    """Shapes layer data of the boundaries of ``labels``; ``None`` when no boundary is found.

    Parameters
    ----------
    labels
        Integer labels (depth, width) or (n_bscans, depth, width) in the 10-class scheme.
    name
        Layer name.
    scale, translate, units
        Those of the Labels layer (µm when known), so the lines sit on it.
    labels_name
        Name of the Labels layer, recorded in the metadata.

    Raises
    ------
    LabelError
        Labels outside the class scheme.
    """
    lab = np.asarray(labels)
    paths = boundary_paths(lab)  # rows of core.boundaries - 0.5, in px
    if not paths.vertices:
        return None
    vertices, colors, features = _shapes_of(paths, lab.ndim)
    kwargs: dict[str, Any] = {
        "name": name,
        "shape_type": "path",
        "edge_color": colors,
        "edge_width": LINE_WIDTH_PX,
        "features": features,
        "opacity": 0.9,
        "axis_labels": axis_labels(lab.ndim),
        "metadata": {
            BOUNDARIES_KEY: {
                "boundary_names": list(BOUNDARY_NAMES),
                "colors": [_hex(c) for c in BOUNDARY_COLORS],
                "row_offset_px": PIXEL_EDGE_OFFSET,
                "labels_layer": labels_name,
                "labels_shape": list(lab.shape),
                "surfaces": "napari_octseg.core.boundaries.boundaries (as octseg thickness --surfaces)",
            }
        },
    }
    if scale is not None:
        kwargs["scale"] = tuple(scale)
    if translate is not None:
        kwargs["translate"] = tuple(translate)
    if units is not None:
        kwargs["units"] = tuple(units)
    return (vertices, kwargs, "shapes")


def add_boundary_layer(viewer: Any, labels_layer: Any, base: str | None = None) -> Any:
    """Add the boundaries of ``labels_layer`` as a Shapes layer above it; return it (``None``: no boundary).

    ``base`` names the layer (``boundaries · <base>``; default: the labels layer's name).
    """
    data = boundary_shapes(
        np.asarray(labels_layer.data),
        unique_layer_name(viewer, boundary_layer_name(base or labels_layer.name)),
        scale=tuple(labels_layer.scale),
        translate=tuple(labels_layer.translate),
        units=tuple(labels_layer.units),
        labels_name=labels_layer.name,
    )
    if data is None:
        return None
    vertices, kwargs, _ = data
    shapes = viewer.add_shapes(vertices, **kwargs)
    if follower_of(shapes) is None:  # (a viewer linked by the reader has linked it on insertion)
        follow_edits(labels_layer, shapes)
    return shapes


#: The followers alive, one per boundary layer (napari holds event callbacks weakly).
_FOLLOWERS: weakref.WeakKeyDictionary[Any, BoundaryFollower] = weakref.WeakKeyDictionary()
#: Layer lists of the viewers whose inserted boundary layers are linked to their labels.
_LINKED: weakref.WeakSet[Any] = weakref.WeakSet()


class BoundaryFollower:
    """Keeps a boundary Shapes layer in step with the Labels layer it was made from.

    Every ``paint``, ``data`` or ``set_data`` event of the labels (re)starts a short single-shot
    timer; when it fires, :meth:`update` redraws the lines of the changed B-scans. Both layers are
    held weakly: a follower whose layers are gone does nothing.

    Parameters
    ----------
    labels_layer, shapes_layer
        The napari Labels layer (10-class scheme) and its boundary Shapes layer.
    delay_ms
        Quiet time after the last event before the lines are redrawn.
    """

    def __init__(self, labels_layer: Any, shapes_layer: Any, delay_ms: int = 150) -> None:
        self._labels = weakref.ref(labels_layer)
        self._shapes = weakref.ref(shapes_layer)
        self._digests = bscan_digests(np.asarray(labels_layer.data))
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.setInterval(delay_ms)
        self._timer.timeout.connect(self.update)
        for emitter in (labels_layer.events.paint, labels_layer.events.data, labels_layer.events.set_data):
            emitter.connect(self._schedule)

    def _schedule(self, event: Any = None) -> None:
        self._timer.start()  # restarts: one redraw after a burst of events

    def update(self) -> list[int]:
        """Redraw the lines of the B-scans whose labels changed since the last redraw; return them."""
        self._timer.stop()
        labels_layer, shapes = self._labels(), self._shapes()
        if labels_layer is None or shapes is None:
            return []
        lab = np.asarray(labels_layer.data)
        digests = bscan_digests(lab)
        if digests.shape != self._digests.shape:  # another volume: every B-scan
            changed = np.arange(digests.size)
        else:
            changed = np.flatnonzero(digests != self._digests)
        if changed.size == 0:
            return []
        try:
            paths = boundary_paths(lab, changed)
        except LabelError:  # a class outside the scheme (painted with a label > 9): keep the old lines
            return []
        self._digests = digests
        _replace_bscans(shapes, paths, set(changed.tolist()), lab.ndim)
        return changed.tolist()


def _replace_bscans(shapes: Any, paths: SurfacePaths, bscans: set[int], ndim: int) -> None:
    """Swap the paths of ``bscans`` in the Shapes layer for ``paths`` (their new lines), features included."""
    features = shapes.features
    old = [j for j, i in enumerate(features["bscan"].tolist()) if i in bscans] if len(features) else []
    kept = features.drop(index=features.index[old]).reset_index(drop=True) if old else features
    vertices, colors, new = _shapes_of(paths, ndim)
    if old:
        shapes.remove(old)
    if vertices:
        shapes.add(vertices, shape_type="path", edge_width=LINE_WIDTH_PX, edge_color=colors)
    table = {key: kept[key].tolist() + new[key] for key in ("boundary", "bscan")}
    shapes.features = table


def follow_edits(labels_layer: Any, shapes_layer: Any, delay_ms: int = 150) -> BoundaryFollower:
    """Make ``shapes_layer`` (boundary lines) follow brush edits of ``labels_layer``; return the follower."""
    follower = BoundaryFollower(labels_layer, shapes_layer, delay_ms)
    _FOLLOWERS[shapes_layer] = follower
    return follower


def follower_of(shapes_layer: Any) -> BoundaryFollower | None:
    """The follower keeping ``shapes_layer`` in step with its labels, if any."""
    return _FOLLOWERS.get(shapes_layer)


def link_boundary_layers(viewer: Any) -> None:
    """Make boundary layers that the reader adds to ``viewer`` follow their Labels layer (installed once).

    A reader hands napari layer data, not layers; when a Shapes layer carrying :data:`BOUNDARIES_KEY`
    is inserted, it is linked to the Labels layer named in its metadata, else to the nearest Labels
    layer below it of the same shape.
    """
    if viewer.layers in _LINKED:
        return

    def on_inserted(event: Any) -> None:
        layer = event.value
        info = getattr(layer, "metadata", {}).get(BOUNDARIES_KEY)
        if info is None or layer in _FOLLOWERS:
            return
        labels = _labels_for(viewer, layer, info.get("labels_layer"), info.get("labels_shape"))
        if labels is not None:
            follow_edits(labels, layer)

    viewer.layers.events.inserted.connect(on_inserted)
    _LINKED.add(viewer.layers)


def _labels_for(viewer: Any, shapes: Any, name: str | None, shape: list[int] | None) -> Any:
    """The Labels layer of a boundary layer: by name, else the nearest one below of the right shape."""
    candidates = [lay for lay in viewer.layers if type(lay).__name__ == "Labels"]
    for lay in candidates:
        if lay.name == name and (shape is None or list(lay.data.shape) == list(shape)):
            return lay
    below = list(viewer.layers)[: list(viewer.layers).index(shapes)]
    for lay in reversed(below):
        if type(lay).__name__ == "Labels" and shape is not None and list(lay.data.shape) == list(shape):
            return lay
    return None


__all__ = [
    "BOUNDARIES_KEY",
    "BoundaryFollower",
    "add_boundary_layer",
    "boundary_layer_name",
    "boundary_shapes",
    "follow_edits",
    "follower_of",
    "link_boundary_layers",
]

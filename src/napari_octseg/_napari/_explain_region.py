"""The Explain dock's question: a region read from napari layers, as a mask for ``explain.gradcam``.

A rectangle or polygon of a Shapes layer (the selected shape, else the last one), or the pixels of one
label value of a Labels layer (the value under the cursor, or a chosen one) in the B-scan on screen.
Everything is converted to the image layer's pixel grid through world coordinates, so layers with
different scales or offsets line up. Problems are one-line ``InputError`` messages.
"""

from __future__ import annotations

from typing import Any

import napari
import numpy as np

from ..core.errors import InputError
from ..explain.region import label_mask, polygon_mask

#: The dock's question choices: (label shown, value).
QUESTIONS: list[tuple[str, str]] = [
    ("pixels predicted as the class", "predicted"),
    ("whole B-scan", "image"),
    ("region: a shape (rectangle/polygon)", "shape"),
    ("region: a label value", "label"),
]
REGION_QUESTIONS = ("shape", "label")


def _shape3(image: napari.layers.Image) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in np.shape(image.data))
    return (1, *shape) if len(shape) == 2 else shape  # type: ignore[return-value]


def _to_image(image: napari.layers.Image, layer: Any, points: np.ndarray) -> np.ndarray:
    """Points in ``layer``'s data coordinates -> (n, ndim) in ``image``'s data coordinates."""
    world = np.array([layer.data_to_world(p) for p in np.atleast_2d(points)])
    return np.array([image.world_to_data(w) for w in world])


def current_bscan(viewer: napari.viewer.Viewer, image: napari.layers.Image) -> int:
    """Index of the image's B-scan on screen (0 for a single B-scan)."""
    if image.ndim == 2:
        return 0
    return int(round(float(image.world_to_data(viewer.dims.point)[0])))


def shape_region(viewer: napari.viewer.Viewer, image: napari.layers.Image, shapes: napari.layers.Shapes) -> np.ndarray:
    """Mask of the selected (else the last) rectangle or polygon of ``shapes`` over ``image``."""
    if len(shapes.data) == 0:
        raise InputError(f"region: shapes layer {shapes.name!r} holds no shape; draw a rectangle or polygon")
    index = max(shapes.selected_data) if shapes.selected_data else len(shapes.data) - 1
    kind = shapes.shape_type[index]
    if kind not in ("rectangle", "polygon"):
        raise InputError(f"region: the shape is a {kind}; draw a rectangle or polygon")
    vertices = _to_image(image, shapes, np.asarray(shapes.data[index], dtype=np.float64))
    shape = _shape3(image)
    if image.ndim == 3 and vertices.shape[1] == 3:
        planes = np.unique(np.round(vertices[:, 0]).astype(int))
        if len(planes) != 1:
            raise InputError("region: the shape spans several B-scans; draw it on one B-scan")
        bscan, yx = int(planes[0]), vertices[:, 1:]
    else:
        bscan, yx = current_bscan(viewer, image), vertices[:, -2:]
    return polygon_mask(shape, bscan, yx)


def label_region(
    viewer: napari.viewer.Viewer, image: napari.layers.Image, labels: napari.layers.Labels, value: int
) -> np.ndarray:
    """Mask of the pixels of label ``value`` (``-1``: the value under the cursor) in the B-scan on screen."""
    data = np.asarray(labels.data)
    if data.shape[-2:] != _shape3(image)[1:] or data.ndim != image.ndim:
        raise InputError(f"region: labels layer {labels.name!r} does not match the image's shape")
    bscan = current_bscan(viewer, image)
    if value < 0:
        picked = labels.get_value(viewer.cursor.position, world=True)
        if picked is None:
            raise InputError("region: the cursor is not over the labels; point at a label or choose a value")
        value = int(picked)
    return label_mask(data if data.ndim == 3 else data[None], bscan, value)


def region_from_layers(
    viewer: napari.viewer.Viewer, image: napari.layers.Image, question: str, source: Any, value: int
) -> np.ndarray | None:
    """The region mask for the dock's question (``None`` when the question is not a region)."""
    if question not in REGION_QUESTIONS:
        return None
    if question == "shape":
        if not isinstance(source, napari.layers.Shapes):
            raise InputError("region: choose a Shapes layer holding a rectangle or polygon")
        return shape_region(viewer, image, source)
    if not isinstance(source, napari.layers.Labels):
        raise InputError("region: choose a Labels layer")
    return label_region(viewer, image, source, value)


__all__ = ["QUESTIONS", "REGION_QUESTIONS", "current_bscan", "label_region", "region_from_layers", "shape_region"]

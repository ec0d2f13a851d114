"""The 8 boundary surfaces of a Labels layer as a napari Shapes layer of paths, one colour per boundary.

The surfaces are :func:`napari_octseg.core.boundaries.boundaries` of the labels, the very ones
``octseg thickness --surfaces`` writes; :func:`napari_octseg.core.surface_paths.surface_paths` turns
them into one path per boundary, B-scan and gap-free run. Each path lies on its B-scan, so napari
shows only the current B-scan's lines; the layer has the labels' scale (µm), translate and units.
A boundary is drawn on the pixel edge above the first pixel of the layer below it (row ``b - 0.5``)
in the colour of that layer, as in the class legend (BM in violet).

The layer is a picture of the labels when it was made: after editing the labels, make it again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.boundaries import boundaries
from ..core.classes import BOUNDARY_NAMES
from ..core.surface_paths import BOUNDARY_COLORS, PIXEL_EDGE_OFFSET, surface_paths
from ._common import axis_labels, unique_layer_name

#: Layer-metadata key describing a boundary layer (boundary names, row offset, the labels it came from).
BOUNDARIES_KEY = "octseg_boundaries"

LayerData = tuple[Any, dict[str, Any], str]

#: Line width in pixels of the B-scan: napari draws a Shapes layer's edges in data coordinates, which the
#: layer's scale then stretches (a width of ``scale_y`` pixels would make lines tens of µm thick).
LINE_WIDTH_PX = 1.2


def _hex(rgba: tuple[float, ...]) -> str:
    return "#" + "".join(f"{round(255 * float(c)):02x}" for c in rgba[:3])


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
    surfaces = boundaries(lab)  # (8, n, W) rows in px, NaN where absent
    paths = surface_paths(surfaces, row_offset=PIXEL_EDGE_OFFSET)
    if not paths.vertices:
        return None
    vertices = paths.vertices if lab.ndim == 3 else [v[:, 1:] for v in paths.vertices]
    colors = [_hex(BOUNDARY_COLORS[k]) for k in range(len(BOUNDARY_NAMES))]
    kwargs: dict[str, Any] = {
        "name": name,
        "shape_type": "path",
        "edge_color": [colors[k] for k in paths.surface],
        "edge_width": LINE_WIDTH_PX,
        "features": {"boundary": [BOUNDARY_NAMES[k] for k in paths.surface], "bscan": paths.bscan.tolist()},
        "opacity": 0.9,
        "axis_labels": axis_labels(lab.ndim),
        "metadata": {
            BOUNDARIES_KEY: {
                "boundary_names": list(BOUNDARY_NAMES),
                "colors": colors,
                "row_offset_px": PIXEL_EDGE_OFFSET,
                "labels_layer": labels_name,
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
    return viewer.add_shapes(vertices, **kwargs)


__all__ = ["BOUNDARIES_KEY", "add_boundary_layer", "boundary_layer_name", "boundary_shapes"]

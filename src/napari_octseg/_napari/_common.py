"""Shared glue of the napari widgets: layers <-> OctVolume, class colours, workers, messages.

Only this package (``_napari``) imports napari, magicgui or Qt.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from napari.layers import Image, Labels
from napari.utils import DirectLabelColormap
from napari.utils.notifications import show_error, show_info

from ..core.classes import CLASS_COLORS, CLASS_NAMES
from ..core.errors import Cancelled, OctsegError
from ..core.volume import OctVolume

#: Key under ``layer.metadata`` where the volume's own description is kept.
META_KEY = "octseg"
#: Names of the volume axes, shown on napari's dimension sliders instead of -3/-2/-1.
AXIS_LABELS: tuple[str, str, str] = ("B-scan", "depth", "A-scan")


def axis_labels(ndim: int) -> tuple[str, ...]:
    """The last ``ndim`` of :data:`AXIS_LABELS` (a single B-scan: depth, A-scan)."""
    return AXIS_LABELS[-ndim:] if 0 < ndim <= 3 else tuple(f"axis {i}" for i in range(ndim))


def image_layer_kwargs(volume: OctVolume, name: str) -> dict[str, Any]:
    """Keyword arguments for a napari Image layer showing ``volume`` at its physical scale (µm)."""
    display = volume.display_data()
    lo, hi = np.percentile(display, [0.5, 99.8]) if display.size else (0.0, 1.0)
    kwargs: dict[str, Any] = {
        "name": name,
        "colormap": "gray",
        "contrast_limits": (float(lo), float(hi) if hi > lo else float(lo) + 1.0),
        "axis_labels": axis_labels(display.ndim),
        "metadata": {
            META_KEY: {
                "scale_um": list(volume.scale_um) if volume.scale_um else None,
                "laterality": volume.laterality,
                "scan_pattern": volume.scan_pattern,
                "reflectivity": volume.reflectivity,
                "meta": volume.meta,
            }
        },
    }
    if volume.scale_um:
        kwargs["scale"] = tuple(volume.scale_um)
        kwargs["units"] = ("µm", "µm", "µm")
    return kwargs


def volume_from_layer(layer: Image) -> OctVolume:
    """Rebuild an :class:`OctVolume` from an Image layer (made by our reader or any other).

    Raises
    ------
    OctsegError
        If the layer is RGB or not 2-D/3-D.
    """
    if getattr(layer, "rgb", False):
        raise OctsegError(f"layer {layer.name!r} is RGB; OCT segmentation needs a greyscale image")
    data = np.asarray(layer.data)
    if data.ndim not in (2, 3):
        raise OctsegError(f"layer {layer.name!r} has {data.ndim} dimensions; expected a B-scan or a volume")
    info = dict(layer.metadata.get(META_KEY, {}))
    scale = info.get("scale_um")
    if scale is None and not np.allclose(layer.scale, 1.0):
        scale = ([1.0] + list(layer.scale))[-3:]
    return OctVolume(
        data=data,
        scale_um=tuple(scale) if scale is not None else None,
        laterality=info.get("laterality"),
        scan_pattern=info.get("scan_pattern", "unknown"),
        reflectivity=info.get("reflectivity", "display"),
        meta=dict(info.get("meta", {})),
    )


def class_colormap(class_names: tuple[str, ...] | list[str] = CLASS_NAMES) -> DirectLabelColormap:
    """A napari label colormap with the scheme's colour for each class value."""
    colors: dict[int | None, Any] = {None: (0.5, 0.5, 0.5, 1.0)}
    for value in range(len(class_names)):
        colors[value] = CLASS_COLORS.get(value, (0.5, 0.5, 0.5, 1.0))
    return DirectLabelColormap(color_dict=colors)


def labels_layer_kwargs(
    name: str,
    class_names: tuple[str, ...] | list[str] = CLASS_NAMES,
    scale: tuple[float, ...] | None = None,
    metadata: dict | None = None,
) -> dict[str, Any]:
    """Keyword arguments for a Labels layer with named, coloured classes (names in ``features``)."""
    kwargs: dict[str, Any] = {
        "name": name,
        "colormap": class_colormap(class_names),
        "features": {"index": list(range(len(class_names))), "class": list(class_names)},
        "opacity": 0.5,
        "metadata": dict(metadata or {}),
    }
    if scale is not None:
        kwargs["axis_labels"] = axis_labels(len(scale))
        kwargs["scale"] = tuple(scale)
        # napari shows the scale bar in µm only when every layer carries the same units
        kwargs["units"] = ("µm",) * len(scale)
    return kwargs


def short_name(name: str) -> str:
    """A layer name without the file extension our readers add (``Subject_07.npz`` -> ``Subject_07``)."""
    from ..io import SUPPORTED_EXTENSIONS

    stem, dot, ext = name.rpartition(".")
    return stem if dot and stem and f".{ext.lower()}" in SUPPORTED_EXTENSIONS else name


def unique_layer_name(viewer: Any, base: str) -> str:
    """``base``, or ``base [2]``, ``base [3]``... whichever no layer in ``viewer`` has yet."""
    names = {layer.name for layer in viewer.layers}
    if base not in names:
        return base
    k = 2
    while f"{base} [{k}]" in names:
        k += 1
    return f"{base} [{k}]"


def report_error(exc: BaseException) -> None:
    """Show a user-facing problem as one napari notification (never a traceback dialog)."""
    if isinstance(exc, Cancelled):
        show_info("cancelled; nothing was changed")
    elif isinstance(exc, OctsegError):
        show_error(str(exc))
    else:
        show_error(f"{type(exc).__name__}: {exc}")


__all__ = [
    "AXIS_LABELS",
    "META_KEY",
    "axis_labels",
    "Image",
    "Labels",
    "class_colormap",
    "image_layer_kwargs",
    "labels_layer_kwargs",
    "report_error",
    "short_name",
    "unique_layer_name",
    "volume_from_layer",
]

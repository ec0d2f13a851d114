"""npe2 reader: OCT files -> an Image layer (µm scale), the device lines and any ground-truth labels.

Our labels files (``<stem>.labels.tif`` + sidecar, from ``octseg segment`` or the plugin's writer)
open as a **Labels** layer at their µm scale, with class names, and the edit record in the layer
metadata where the Fine-tune dock looks for it. Which file names napari hands to this reader at all
(device formats, ``*.labels.tif``, ``*.oct.tif``; not plain ``.tif``/``.npy``) is set in the manifest:
see :mod:`napari_octseg._napari.reader_choice`. Files that are plainly not OCT (an XML that is no
HEYEX export, a ``.mat`` without ``images``...) are declined at once
(:func:`napari_octseg.io.sniff.looks_like_oct`) and give ``None``.

Linear reflectivity (HEYEX ``.vol``) is converted to display grey values (``x ** 0.25``) before it
becomes layer data, and the layer's metadata then says ``reflectivity='display'``: what the user sees
is exactly what the segmentation network is given, and no widget compresses it twice.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.classes import CLASS_NAMES
from ..core.errors import OctsegError
from ..core.surface_paths import DEVICE_LINE_COLORS, DEVICE_LINE_EXTRA_COLORS, finite_runs
from ..core.volume import OctVolume
from ..io import SUPPORTED_EXTENSIONS, read
from ..io.labels import LabelsFile, is_labels_file, read_labels_file
from ..io.provenance import EDIT_RECORD_KEY, SEGMENTATION_KEY
from ..io.sniff import looks_like_oct
from ._common import image_layer_kwargs, labels_layer_kwargs
from .boundary_layer import LINE_WIDTH_PX, boundary_layer_name, boundary_shapes, link_boundary_layers

#: Layer-metadata key of a labels file's whole sidecar (the writer carries it over on save).
LABELS_FILE_KEY = "octseg_labels_file"

LayerData = tuple[Any, dict[str, Any], str]

#: Point size of the "device ILM"-style names written beside each device line (its legend on the B-scan).
DEVICE_LINE_TEXT_SIZE = 8


def _claims(path: str) -> bool:
    p = Path(path)
    return p.is_dir() or p.suffix.lower() in SUPPORTED_EXTENSIONS


def get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """napari reader hook: a function returning layer data for ``path``, or ``None``.

    The file is read here (once) so that an unreadable file gives ``None`` and never an exception
    inside napari; the returned function hands back the already-read layers.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(_claims(str(p)) for p in paths):
        return None
    kinds = ["labels" if is_labels_file(p) else "oct" for p in paths]
    if not all(kind == "labels" or looks_like_oct(p) for kind, p in zip(kinds, paths)):
        return None
    layers: list[LayerData] = []
    try:
        for p, kind in zip(paths, kinds):
            if kind == "labels":
                layers.extend(labels_file_layers(read_labels_file(p), Path(p)))
            else:
                layers.extend(volume_layers(read(p), Path(p).name or str(p)))
    except OctsegError as exc:  # OctReadError, or LabelError for a file's bad annotations
        _warn(str(exc))
        return None
    except Exception as exc:  # a reader bug must not crash napari's open dialog
        _warn(f"{Path(str(paths[0])).name}: {type(exc).__name__}: {exc}")
        return None
    if any(kind == "labels" for kind in kinds):
        _link_current_viewer()

    def read_layers(_path: str | Sequence[str] | None = None) -> list[LayerData]:
        return layers

    return read_layers


def _link_current_viewer() -> None:
    """Let the boundary lines this reader returns follow brush edits of their labels, once napari adds them."""
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:  # no napari (a script): nothing to link
        return
    if viewer is not None:
        link_boundary_layers(viewer)


def _warn(message: str) -> None:
    try:
        from napari.utils.notifications import show_warning

        show_warning(message)
    except Exception:  # no napari event loop (e.g. called from a script): stay silent
        pass


def volume_layers(volume: OctVolume, name: str) -> list[LayerData]:
    """Layer data tuples for ``volume``: image, device lines (Shapes paths), labels (if any)."""
    display = OctVolume(
        data=volume.display_data(),
        scale_um=volume.scale_um,
        laterality=volume.laterality,
        scan_pattern=volume.scan_pattern,
        reflectivity="display",
        meta={**volume.meta, "source_reflectivity": volume.reflectivity},
    )
    out: list[LayerData] = [(display.data, image_layer_kwargs(display, name), "image")]
    lines = device_line_shapes(volume, f"{name} device lines")
    if lines is not None:
        out.append(lines)
    if volume.labels is not None:
        kwargs = labels_layer_kwargs(
            f"{name} ground truth", scale=volume.scale_um, metadata={"source": volume.meta.get("source")}
        )
        out.append((volume.labels, with_units(kwargs, volume), "labels"))
    return out


def labels_file_layers(found: LabelsFile, path: Path) -> list[LayerData]:
    """The Labels layer of a labels file and, for the 10-class scheme, its boundary lines (Shapes).

    The boundary layer is named after the scan the labels belong to (``boundaries · <scan file>``, as
    the Segment dock names it), else after the labels.
    """
    labels = labels_file_layer(found, path)
    out = [labels]
    if tuple(found.class_names) == CLASS_NAMES:
        kwargs = labels[1]
        base = kwargs["metadata"][SEGMENTATION_KEY].get("image_layer") or kwargs["name"]
        lines = boundary_shapes(
            found.labels,
            boundary_layer_name(base),
            scale=kwargs.get("scale"),
            units=kwargs.get("units"),
            labels_name=kwargs["name"],
        )
        if lines is not None:
            out.append(lines)
    return out


def labels_file_layer(found: LabelsFile, path: Path) -> LayerData:
    """A Labels layer for a labels file: µm scale, class names, the edit record and provenance.

    ``metadata[EDIT_RECORD_KEY]`` holds the automatic result's digests (the Fine-tune dock finds the
    edited B-scans from them); ``metadata[SEGMENTATION_KEY]`` says which scan and model made it
    (``image_layer`` is the scan's file name, as this reader names image layers).
    """
    info = found.info
    source = info.get("source") or {}
    model = info.get("model") or {}
    source_file = source.get("file")
    segmentation = {
        "image_layer": Path(source_file).name if source_file else None,
        "image_source": source_file,
        "laterality": source.get("laterality"),
        "scan_pattern": source.get("scan_pattern"),
        "scan_date": source.get("scan_date"),
        "model_source": model.get("source"),
        "model_name": model.get("name"),
        "model_sha256": model.get("sha256"),
        "class_names": list(found.class_names),
        "labels_file": str(path),
    }
    metadata: dict[str, Any] = {SEGMENTATION_KEY: segmentation, LABELS_FILE_KEY: info}
    if found.edits is not None:
        metadata[EDIT_RECORD_KEY] = found.edits
    name = path.name[: -len(path.suffix)] if path.suffix else path.name
    kwargs = labels_layer_kwargs(name, found.class_names, scale=found.scale_um, metadata=metadata)
    return (found.labels, kwargs, "labels")


def with_units(kwargs: dict[str, Any], volume: OctVolume) -> dict[str, Any]:
    """Add µm ``units`` when the volume's scale is known, as the image layer has them.

    napari ignores units (and the scale bar shows bare numbers) unless every layer agrees.
    """
    if volume.scale_um:
        kwargs["units"] = ("µm",) * 3
    return kwargs


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb)


def device_line_colors(line_names: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """RGB (0-1) of each device line: ILM and BM their own, the others in turn (then white)."""
    extra = iter(DEVICE_LINE_EXTRA_COLORS)
    return {name: DEVICE_LINE_COLORS.get(name) or next(extra, (1.0, 1.0, 1.0)) for name in line_names}


def _legible(rgb: tuple[float, float, float]) -> str:
    """The colour of a line's name: the line's own, lightened when too dark to read on a dark B-scan."""
    luminance = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    if luminance >= 0.35:
        return _hex(rgb)
    return _hex([c + 0.5 * (1.0 - c) for c in rgb])


def device_line_shapes(volume: OctVolume, name: str) -> LayerData | None:
    """The boundary lines of ``volume.layers`` as a Shapes layer of paths, one per B-scan and gap-free run.

    Vertices are (B-scan, row, column) in pixels; the layer shares the image's ``scale`` so the
    paths sit on the image in µm. NaN gaps split a line into several paths. Each path is named on the
    B-scan (``device ILM``...) in its colour (:data:`~napari_octseg.core.surface_paths.DEVICE_LINE_COLORS`,
    distinct from every class and boundary colour), so the device's lines are never taken for the
    segmentation's. ``None`` when the volume has no line with a finite value.
    """
    paths: list[np.ndarray] = []
    colors: list[str] = []
    names: list[str] = []
    palette = device_line_colors(list(volume.layers))
    text_colors: list[str] = []
    for line_name, heights in volume.layers.items():
        color = _hex(palette[line_name])
        for k, row in enumerate(np.asarray(heights, dtype=np.float32)):
            for start, stop in finite_runs(row):
                cols = np.arange(start, stop, dtype=np.float32)
                if cols.size < 2:
                    continue
                paths.append(np.column_stack([np.full_like(cols, k), row[start:stop], cols]))
                colors.append(color)
                text_colors.append(_legible(palette[line_name]))
                names.append(line_name)
    if not paths:
        return None
    kwargs: dict[str, Any] = {
        "name": name,
        "shape_type": "path",
        "edge_color": colors,
        "edge_width": LINE_WIDTH_PX,  # B-scan pixels: the layer's scale stretches it
        "features": {"line": names, "text_color": text_colors},
        "text": {
            "string": "device {line}",
            "size": DEVICE_LINE_TEXT_SIZE,
            "color": {"feature": "text_color"},
            "anchor": "upper_left",
        },
        "opacity": 0.9,
        "metadata": {
            "source": volume.meta.get("source"),
            "lines": sorted(volume.layers),
            "colors": {line_name: _hex(rgb) for line_name, rgb in palette.items()},
        },
    }
    if volume.scale_um:
        kwargs["scale"] = tuple(volume.scale_um)
    return (paths, with_units(kwargs, volume), "shapes")

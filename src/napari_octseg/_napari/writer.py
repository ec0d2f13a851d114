"""npe2 writer: a Labels layer -> our labels file (``.labels.tif`` + ``.labels.json``), µm and edits kept.

``File > Save Selected Layers...`` with a name ending ``.labels.tif`` (or ``.tif`` with this plugin
chosen) writes :func:`napari_octseg.io.labels.write_labels_file`: the µm scale (from the layer's
scale when its units are µm), the class names (layer features, else the segmentation record), the
edit record the Segment dock kept (so Fine-tune finds the edited B-scans after save -> close ->
reopen), and the scan and model the labels came from. The plugin's reader opens the file again as a
Labels layer with all of it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.classes import CLASS_NAMES
from ..core.errors import OctsegError
from ..io._sidecar import kind_of, sidecar_path, source_record
from ..io.labels import write_labels_file
from ..io.provenance import EDIT_RECORD_KEY, SEGMENTATION_KEY
from .reader import LABELS_FILE_KEY
from .reader_choice import prefer_plugin_for_own_files

_MICRONS = ("µm", "um", "micron", "micrometer", "micrometre")


def _is_microns(unit: Any) -> bool:
    text = str(unit).strip().lower()
    return any(text == m or text.startswith(m) for m in _MICRONS)


def scale_of(data_ndim: int, attributes: Mapping[str, Any]) -> tuple[float, float, float] | None:
    """(z, y, x) µm of a layer from its ``scale`` and ``units``; ``None`` when the units are not µm."""
    scale = attributes.get("scale")
    units = attributes.get("units")
    if scale is None or units is None:
        return None
    units = [units] * len(scale) if isinstance(units, str) else list(units)
    if not units or not all(_is_microns(u) for u in units):
        return None
    values = [float(s) for s in scale][-3:]
    if data_ndim == 2 or len(values) == 2:
        values = [0.0, *values[-2:]]
    return (values[0], values[1], values[2])


def class_names_of(attributes: Mapping[str, Any], n_values: int) -> tuple[str, ...]:
    """Class names from the layer's ``features['class']``, else its segmentation record, else the scheme."""
    features = attributes.get("features")
    names: Sequence[Any] | None = None
    if features is not None:
        try:
            column = features["class"]
            names = list(column.tolist() if hasattr(column, "tolist") else column)
        except (KeyError, TypeError, IndexError):
            names = None
    metadata = attributes.get("metadata") or {}
    if not names:
        names = (metadata.get(SEGMENTATION_KEY) or {}).get("class_names")
    if not names or len(names) < n_values:
        return CLASS_NAMES
    return tuple(str(n) for n in names)


def _provenance(metadata: Mapping[str, Any]) -> tuple[dict[str, Any] | None, Any]:
    """(source record, model) from a layer's metadata (Segment dock record, else the file it came from)."""
    seg = metadata.get(SEGMENTATION_KEY) or {}
    previous = metadata.get(LABELS_FILE_KEY) or {}
    source = previous.get("source")
    if seg.get("image_source"):
        source = source_record(
            seg["image_source"],
            laterality=seg.get("laterality"),
            scan_pattern=seg.get("scan_pattern"),
            scan_date=seg.get("scan_date"),
        )
    model: Any = previous.get("model")
    model_source = seg.get("model_source") or metadata.get("octseg_model")
    if model_source:
        model = str(model_source)
    return source, model


def write_labels(path: str, data: Any, attributes: dict) -> list[str]:
    """npe2 single-layer writer for Labels layers; returns the files written (TIFF, JSON).

    Raises
    ------
    OctsegError
        The sidecar name is taken by a JSON file that is not ours, or the labels cannot be stored.
    """
    labels = np.asarray(data)
    tif = Path(path)
    json_path = sidecar_path(tif)
    if json_path.exists():
        try:
            existing = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            existing = None
        if not isinstance(existing, dict) or kind_of(existing) is None:
            raise OctsegError(f"{json_path.name} exists and is not a labels sidecar; save under another name")
    metadata = dict(attributes.get("metadata") or {})
    source, model = _provenance(metadata)
    n_values = int(labels.max()) + 1 if labels.size else 1
    written = write_labels_file(
        tif,
        labels,
        class_names_of(attributes, n_values),
        scale_um=scale_of(labels.ndim, attributes),
        source=source,
        model=model,
        edits=metadata.get(EDIT_RECORD_KEY),
        force=True,  # napari's save dialog has already asked before replacing the file
        layer_name=attributes.get("name"),
    )
    prefer_plugin_for_own_files()  # so that File > Open gives the file back to this plugin, no dialog
    return [str(p) for p in written]

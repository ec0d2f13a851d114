"""Label volumes: read any label TIFF/``.npy``; write and read the labels file format (one owner).

The labels file is ``<stem>.labels.tif`` (uint8 ImageJ stack, axes ZYX = B-scan, depth, A-scan,
µm in the resolution tags) plus ``<stem>.labels.json`` (class names, scale, source scan, model name
and hash, the edit record, package and format version; schema in :mod:`._sidecar`). ``octseg
segment``, the napari writer and the napari reader all go through :func:`write_labels_file` and
:func:`read_labels_file`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.classes import CLASS_NAMES, N_CLASSES
from ..core.errors import LabelError, OctReadError
from ._sidecar import (
    LABELS_FORMAT,
    AfterTiff,
    base_record,
    embedded_sidecar,
    kind_of,
    load_sidecar,
    normalise,
    scale_from,
    sidecar_path,
    tiff_marker,
    write_tiff_pair,
)
from .provenance import edited_bscans, edited_or_none, normalise_record


def read_labels(path: str | os.PathLike, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Read a label volume in the 10-class scheme of :mod:`napari_octseg.core.classes`.

    Parameters
    ----------
    path
        ``.tif``/``.tiff`` or ``.npy`` file holding integer labels, 2-D (depth, width) or 3-D
        (n_bscans, depth, width).
    shape
        Expected (n_bscans, depth, width) (e.g. the image volume's shape), or ``None``.

    Returns
    -------
    numpy.ndarray
        uint8 (n_bscans, depth, width), values in 0..9.

    Raises
    ------
    LabelError
        Unreadable file, non-integer values, classes outside 0..9, wrong shape.
    """
    from .arrays import load_npy_array

    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix == ".npy":
            array = load_npy_array(p)
        elif suffix in (".tif", ".tiff"):
            array = _load_tiff_labels(p)
        else:
            raise LabelError(f"{p.name}: unsupported label file type {suffix!r}; use .tif, .tiff or .npy")
    except OctReadError as exc:
        raise LabelError(str(exc)) from None
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise LabelError(
            f"{p.name}: labels have {array.ndim} dimensions {array.shape}; expected (n_bscans, depth, width)"
        )
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise LabelError(f"{p.name}: labels must be integers (found non-integer values)")
    elif array.dtype.kind not in "uib":
        raise LabelError(f"{p.name}: labels must be integers, got {array.dtype}")
    if array.size:
        lo, hi = array.min(), array.max()
        if lo < 0 or hi >= N_CLASSES:
            raise LabelError(f"{p.name}: label values must be within 0..{N_CLASSES - 1}; found {lo}..{hi}")
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise LabelError(f"{p.name}: labels have shape {tuple(array.shape)}, the image has {tuple(shape)}")
    return array.astype(np.uint8)


def _load_tiff_labels(path: Path) -> np.ndarray:
    import tifffile

    from ._util import check_payload, check_shape, fail, library_errors, require_file

    size = require_file(path)
    with library_errors(path, "not a readable TIFF"), tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise fail(path, "TIFF holds no image")
        series = tif.series[0]
        check_shape(path, series.shape, "label volume")
        compressed = any(p.compression != 1 for p in tif.pages[:1])
        check_payload(path, int(np.prod(series.shape)) * series.dtype.itemsize, size, compressed=compressed)
        return np.asarray(series.asarray())


# ---------------------------------------------------------------------------------------------------
# The labels file: <stem>.labels.tif (ImageJ, µm) + <stem>.labels.json (see :mod:`._sidecar`)

#: Suffix of a labels file and of its sidecar.
LABELS_SUFFIX = ".labels.tif"
LABELS_SIDECAR_SUFFIX = ".labels.json"


@dataclass
class LabelsFile:
    """A labels file read back.

    Attributes
    ----------
    labels
        uint8 (n_bscans, depth, width).
    scale_um
        (z, y, x) µm from the sidecar (else the TIFF's ImageJ tags), or ``None``.
    class_names
        Name of each label value (the scheme's names when the file does not say).
    edits
        The edit record (``{"method", "bscan_hashes"}``) of the automatic result, or ``None``.
    edited_bscans
        B-scans that differ from the automatic result (``None`` without a fitting record).
    info
        The whole sidecar, in the current schema (empty dict for a bare TIFF).
    """

    labels: np.ndarray
    scale_um: tuple[float, float, float] | None
    class_names: tuple[str, ...]
    edits: dict[str, Any] | None
    edited_bscans: list[int] | None
    info: dict[str, Any] = field(default_factory=dict)


def labels_sidecar(
    labels: np.ndarray,
    class_names: tuple[str, ...] | list[str],
    *,
    model: object = None,
    scale_um: tuple[float, float, float] | None = None,
    source: Mapping[str, Any] | None = None,
    edits: object = None,
    file: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON description of a label volume (the ``<stem>.labels.json`` sidecar).

    Parameters
    ----------
    labels
        uint8 (n_bscans, depth, width) label volume (a 2-D array is one B-scan).
    class_names
        Name of each label value.
    model
        The checkpoint that produced the labels (a loaded model, a path or a ready ``model`` dict):
        name, source, SHA-256 and training summary are recorded.
    scale_um
        Voxel spacing (B-scan, depth, A-scan) in µm, or ``None`` when unknown.
    source
        The OCT scan the labels belong to (:func:`source_record`), or ``None``.
    edits
        The automatic result's edit record (a record dict, or the automatic labels themselves);
        ``edits.edited_bscans`` is worked out against ``labels``. ``None``: no record kept.
    file
        The TIFF's file name.
    **extra
        Further JSON-serialisable entries (device, seconds...).
    """
    arr = np.asarray(labels, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr
    info = base_record(
        LABELS_FORMAT,
        file=file or "",
        axes=["bscan", "depth", "ascan"],
        tiff_axes="ZYX",
        shape=arr.shape,
        dtype="uint8",
        scale_um=scale_um,
        source=source,
        model=model,
        class_names=list(class_names),
    )
    counts = np.bincount(arr.ravel(), minlength=len(class_names))
    info["classes"] = {str(i): name for i, name in enumerate(class_names)}
    info["pixel_counts"] = {str(i): int(c) for i, c in enumerate(counts)}
    record = normalise_record(edits, arr.shape[0]) if edits is not None else None
    if record is not None:
        record["edited_bscans"] = edited_bscans(arr, record)
    info["edits"] = record
    info.update(extra)
    return info


def write_labels_file(
    path: str | os.PathLike,
    labels: np.ndarray,
    class_names: tuple[str, ...] | list[str] = CLASS_NAMES,
    *,
    scale_um: tuple[float, float, float] | None = None,
    source: Mapping[str, Any] | None = None,
    model: object = None,
    edits: object = None,
    force: bool = False,
    after_tiff: AfterTiff | None = None,
    **extra: Any,
) -> tuple[Path, Path]:
    """Write ``labels`` as ``path`` (ImageJ uint8 TIFF at µm scale) + its JSON sidecar, atomically.

    Parameters
    ----------
    path
        The TIFF, e.g. ``out/scan.labels.tif`` (sidecar ``out/scan.labels.json``).
    labels
        Integer labels (n_bscans, depth, width) or (depth, width), values 0..255.
    class_names, scale_um, source, model, edits, **extra
        See :func:`labels_sidecar`.
    force
        Replace existing files.

    Returns
    -------
    (Path, Path)
        The TIFF and the sidecar written.

    Raises
    ------
    LabelError
        Labels that are not integers in 0..255 or not 2-D/3-D.
    OctsegError
        A target exists and ``force`` is false.
    """
    arr = np.asarray(labels)
    arr = arr[None] if arr.ndim == 2 else arr
    if arr.ndim != 3:
        raise LabelError(f"labels have shape {arr.shape}; expected (n_bscans, depth, width)")
    if arr.dtype.kind not in "uib" or (arr.size and (arr.min() < 0 or arr.max() > 255)):
        raise LabelError(f"labels must be integers in 0..255 to be saved as uint8; got {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    tif = Path(path)
    info = labels_sidecar(
        arr, class_names, model=model, scale_um=scale_um, source=source, edits=edits, file=tif.name, **extra
    )
    return write_tiff_pair(
        tif, arr, info, tiff_axes="ZYX", scale_um=scale_um, marker="labels", force=force, after_tiff=after_tiff
    )


def is_labels_file(path: str | os.PathLike) -> bool:
    """Cheap test: does ``path`` look like a labels file of ours (name, sidecar or TIFF marker)?

    Reads at most the sidecar and the TIFF's first page header; never the pixel data.
    """
    p = Path(path)
    if p.suffix.lower() not in (".tif", ".tiff") or not p.is_file():
        return False
    if p.name.lower().endswith((".labels.tif", ".labels.tiff")):
        return True
    try:
        info = load_sidecar(p)
    except (OSError, ValueError):
        info = None
    if info is not None:
        return kind_of(info) == "labels"
    try:
        import tifffile

        with tifffile.TiffFile(p) as tif:
            return tiff_marker(tif) == "labels"
    except Exception:  # any unreadable TIFF is simply not ours
        return False


def read_labels_file(path: str | os.PathLike, shape: tuple[int, ...] | None = None) -> LabelsFile:
    """Read a labels file (or any label TIFF/``.npy``) with what its sidecar says about it.

    The sidecar ``<stem>.json`` beside the TIFF is used when present (any schema version), else
    the copy embedded in our TIFFs, else only the ImageJ scale tags; a bare label file reads with
    the scheme's class names and no edit record.

    Raises
    ------
    LabelError
        Unreadable labels or sidecar, classes outside 0..9, wrong shape.
    """
    p = Path(path)
    labels = read_labels(p, shape)
    try:
        info = load_sidecar(p)
    except (OSError, ValueError) as exc:
        raise LabelError(f"{sidecar_path(p).name}: not a readable labels sidecar ({exc})") from None
    scale = None
    if p.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        from .arrays import _imagej_scale

        with tifffile.TiffFile(p) as tif:
            if info is None:
                embedded = embedded_sidecar(tif)
                info = normalise(embedded) if embedded is not None else None
            scale = _imagej_scale(tif)
    info = info or {}
    scale = scale_from(info) or scale
    names = info.get("class_names")
    class_names = tuple(str(n) for n in names) if isinstance(names, list) and names else CLASS_NAMES
    record = normalise_record(info.get("edits"), labels.shape[0])
    return LabelsFile(
        labels=labels,
        scale_um=scale,
        class_names=class_names,
        edits=record,
        edited_bscans=edited_or_none(labels, record),
        info=info,
    )

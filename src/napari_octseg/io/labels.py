"""Label volumes (ground truth or corrections) from TIFF or ``.npy`` files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.classes import N_CLASSES
from ..core.errors import LabelError, OctReadError


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
        return series.asarray()

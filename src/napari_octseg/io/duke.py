"""Duke DME data (Chiu et al., Biomed. Opt. Express 6(4), 2015): ``.mat`` originals and ``.npz`` exports.

``.mat`` (MATLAB v5, read with :func:`scipy.io.loadmat`, which never unpickles): ``images``
(H, W, n) uint8, ``manualLayers1``/``manualLayers2`` (8, W, n) 1-based rows of the boundaries
ILM, NFL/GCL, IPL/INL, INL/OPL, OPL/ONL, ISM/ISE, OS/RPE, BM (NaN where not annotated), and
``manualFluid1``/``manualFluid2`` (H, W, n) fluid masks (> 0 = fluid, NaN where not annotated).
Only a few B-scans of each volume, and only their central columns, are annotated, so the reader
keeps the annotated B-scans cropped to the columns annotated in all of them (the same crop as the
``.npz`` exports in ``../shared/data/duke_dme``); ``meta['duke']`` records which.

``.npz`` (``np.load(allow_pickle=False)``): ``images`` (n, H, W) uint8 and optional ``labels``
(n, H, W) in the 10-class scheme; any other ``.npz`` must hold exactly one array.

Scale: axial 3.87 µm and lateral 11.35 µm (midpoint of the published 11.07-11.68 µm). The annotated
B-scans are not contiguous, so z is the nominal B-scan spacing of the protocol (120 µm) and
``meta['z_spacing_known']`` is False: treat each B-scan as its own 2-D image.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ..core.classes import BOUNDARY_NAMES, FLUID_CLASS, N_CLASSES
from ..core.errors import InputError, LabelError, OctReadError
from ..core.volume import OctVolume
from ._util import (
    as_volume_array,
    check_memory,
    check_payload,
    check_shape,
    display_scale,
    fail,
    library_errors,
    require_file,
)

#: Pixel spacing (z, y, x) µm assumed for Duke DME data (see the module docstring).
DUKE_SCALE_UM: tuple[float, float, float] = (120.0, 3.87, 11.35)


def layers_to_labels(boundaries: np.ndarray, height: int, fluid: np.ndarray | None = None) -> np.ndarray:
    """Boundary surfaces -> 10-class label volume.

    Parameters
    ----------
    boundaries
        float (8, n_bscans, width): 0-based row of each boundary of
        :data:`~napari_octseg.core.classes.BOUNDARY_NAMES`, top to bottom. Must be finite.
    height
        Number of rows (depth) of the output.
    fluid
        Optional bool (n_bscans, height, width) fluid mask, painted over as class 9.

    Returns
    -------
    numpy.ndarray
        uint8 (n_bscans, height, width): a pixel's class is the number of boundaries at or above
        its row, so layer labels never decrease down an A-scan. Crossing boundaries are made
        ordered first (each one at least as deep as the one above).
    """
    b = np.maximum.accumulate(np.asarray(boundaries, dtype=np.float32), axis=0)
    rows = np.arange(height, dtype=np.float32)[None, :, None]
    labels = np.zeros((b.shape[1], height, b.shape[2]), dtype=np.uint8)
    for surface in b:
        labels += rows >= surface[:, None, :]
    if fluid is not None:
        labels[fluid] = FLUID_CLASS
    return labels


def _fill_columns(path: Path, layers: np.ndarray) -> np.ndarray:
    """Interpolate isolated NaN columns along the A-scan axis (layers (8, n, W))."""
    out = np.copy(layers)
    cols = np.arange(out.shape[2])
    for i in range(out.shape[0]):
        for k in range(out.shape[1]):
            row = out[i, k]
            bad = ~np.isfinite(row)
            if bad.all():
                raise fail(path, f"boundary {BOUNDARY_NAMES[i]} of an annotated B-scan has no values")
            if bad.any():
                row[bad] = np.interp(cols[bad], cols[~bad], row[~bad])
    return out


def read_duke_mat(path: str | os.PathLike, grader: int = 1) -> OctVolume:
    """Read a Duke DME ``.mat`` file: the annotated B-scans with grader ``grader``'s labels.

    Returns
    -------
    OctVolume
        ``data`` float32 (n_annotated, H, W_crop) in [0, 1] (display grey values), ``labels`` uint8
        (same shape) in the 10-class scheme, ``layers`` the 8 boundaries as 0-based rows (NaN where the
        grader left a gap), ``scale_um`` :data:`DUKE_SCALE_UM`.
    """
    import scipy.io

    path = Path(path)
    size = require_file(path)
    if grader not in (1, 2):
        raise fail(path, f"grader must be 1 or 2, got {grader}")
    with library_errors(path, "not a readable MATLAB v5 file"):
        info = {name: (tuple(shape), cls) for name, shape, cls in scipy.io.whosmat(str(path))}
    lay_key, fluid_key = f"manualLayers{grader}", f"manualFluid{grader}"
    missing = [k for k in ("images", lay_key) if k not in info]
    if missing:
        raise fail(path, f"not a Duke DME file: variable(s) {', '.join(missing)} missing")
    total = 0
    for key in ("images", lay_key, fluid_key):
        if key in info:
            check_shape(path, info[key][0], key)
            total += int(np.prod(info[key][0])) * 8
    if total > size * 1100:
        raise fail(path, "header claims far more data than the file can hold (corrupt file?)")
    keys = [k for k in ("images", lay_key, fluid_key) if k in info]
    with library_errors(path, "could not load the MATLAB variables"):
        mat = scipy.io.loadmat(str(path), variable_names=keys)
    images = np.asarray(mat["images"])
    layers = np.asarray(mat[lay_key], dtype=np.float64)
    if images.ndim == 2:
        images = images[:, :, None]
    if layers.ndim == 2:
        layers = layers[:, :, None]
    if images.ndim != 3 or layers.ndim != 3 or layers.shape[0] != len(BOUNDARY_NAMES):
        raise fail(
            path,
            f"unexpected shapes: images {images.shape}, {lay_key} {layers.shape} "
            f"(expected (H, W, n) and ({len(BOUNDARY_NAMES)}, W, n))",
        )
    h, w, n = images.shape
    if layers.shape[1:] != (w, n):
        raise fail(path, f"{lay_key} {layers.shape} does not match images {images.shape}")
    layers = np.transpose(layers, (0, 2, 1)) - 1.0  # (8, n, W), MATLAB rows are 1-based
    annotated = np.flatnonzero(np.isfinite(layers).any(axis=(0, 2)))
    if annotated.size == 0:
        raise fail(path, f"{lay_key} holds no annotated B-scan")
    full = np.isfinite(layers[:, annotated]).all(axis=(0, 1))
    cols = np.flatnonzero(full)
    if cols.size < 2:
        raise fail(path, "no column is annotated in every annotated B-scan")
    c0, c1 = int(cols[0]), int(cols[-1]) + 1
    kept = layers[:, annotated, c0:c1]
    data = np.transpose(images, (2, 0, 1))[annotated, :, c0:c1]
    fluid = None
    if fluid_key in mat:
        f = np.asarray(mat[fluid_key], dtype=np.float64)
        if f.ndim == 2:
            f = f[:, :, None]
        if f.shape == images.shape:
            f = np.transpose(f, (2, 0, 1))[annotated, :, c0:c1]
            fluid = np.nan_to_num(f, nan=0.0) > 0
    labels = layers_to_labels(_fill_columns(path, kept), h, fluid)
    if data.dtype.kind == "f" and np.nanmax(data, initial=0.0) > 1.0:
        data = data / 255.0  # MATLAB doubles holding 8-bit grey values
    volume = as_volume_array(path, display_scale(data))
    return OctVolume(
        data=volume,
        scale_um=DUKE_SCALE_UM,
        reflectivity="display",
        layers={name: kept[i].astype(np.float32) for i, name in enumerate(BOUNDARY_NAMES)},
        labels=labels,
        meta={
            "source": str(path),
            "format": "duke_mat",
            "z_spacing_known": False,
            "duke": {"grader": grader, "bscan_indices": annotated.tolist(), "columns": [c0, c1]},
        },
    )


def _npz_members(path: Path, size: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shapes and dtypes of the arrays of an ``.npz``, checked before anything is decompressed.

    Each member's size is checked against its compressed size (truncation, decompression bombs) and
    all of them together against the available memory.
    """
    from numpy.lib import format as npformat

    out = {}
    total = 0
    with library_errors(path, "not a readable .npz archive"), zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            if info.file_size > size * 1100:
                raise fail(path, f"member {info.filename} claims {info.file_size} bytes (zip bomb?)")
            with zf.open(info) as fh:
                version = npformat.read_magic(fh)
                if version not in ((1, 0), (2, 0)):
                    raise fail(path, f"member {info.filename}: unsupported .npy version {version}")
                reader = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
                shape, _, dtype = reader(fh)
            if dtype.hasobject:
                raise fail(path, f"member {info.filename} holds Python objects; refusing to unpickle it")
            check_shape(path, shape or (1,), info.filename)
            nbytes = int(np.prod(shape)) * dtype.itemsize
            if nbytes > info.file_size:
                raise fail(path, f"member {info.filename} is truncated")
            compressed = info.compress_type != zipfile.ZIP_STORED
            check_payload(path, nbytes, max(1, info.compress_size), compressed=compressed)
            total += nbytes + 4 * int(np.prod(shape))
            out[info.filename[:-4]] = (tuple(shape), dtype)
    check_memory(path, total)
    return out


def load_npz_arrays(
    path: str | os.PathLike, keys: tuple[str, ...], error: type[Exception] = InputError
) -> dict[str, np.ndarray]:
    """Load the arrays ``keys`` of an ``.npz`` after the guards of :func:`read_npz` (sizes, bombs, pickles).

    Raises
    ------
    error
        One line naming the file: not a zip, a missing key, a bomb, too big for this machine.
    """
    path = Path(path)
    try:
        size = require_file(path)
        members = _npz_members(path, size)
        missing = [k for k in keys if k not in members]
        if missing:
            have = ", ".join(sorted(members)) or "nothing"
            raise fail(path, f".npz has no {', '.join(repr(k) for k in missing)} array (has: {have})")
        with library_errors(path, "could not load the .npz arrays"), np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in keys}
    except OctReadError as exc:
        if error is OctReadError:
            raise
        raise error(str(exc)) from None


def read_npz(path: str | os.PathLike) -> OctVolume:
    """Read a Duke-style ``.npz`` (``images`` + optional ``labels``) or a one-array ``.npz``."""
    path = Path(path)
    size = require_file(path)
    members = _npz_members(path, size)
    if not members:
        raise fail(path, ".npz holds no array")
    if "images" in members:
        key = "images"
    elif len(members) == 1:
        key = next(iter(members))
    else:
        raise fail(path, f".npz holds several arrays ({', '.join(sorted(members))}) and no 'images'")
    with library_errors(path, "could not load the .npz arrays"), np.load(path, allow_pickle=False) as z:
        images = z[key]
        labels = z["labels"] if "labels" in members and key == "images" else None
    data = as_volume_array(path, display_scale(images))
    if labels is not None:
        labels = labels[None] if labels.ndim == 2 else labels
        if labels.shape != data.shape:
            raise fail(path, f"labels {labels.shape} do not match images {data.shape}")
        if labels.dtype.kind not in "ui" or (labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES)):
            found = f"; found {labels.min()}..{labels.max()}" if labels.size and labels.dtype.kind in "ui" else ""
            raise LabelError(f"{path.name}: labels must be integers 0..{N_CLASSES - 1}{found}")
        labels = labels.astype(np.uint8)
    duke = key == "images"
    return OctVolume(
        data=data,
        scale_um=DUKE_SCALE_UM if duke else None,
        reflectivity="display",
        labels=labels,
        meta={"source": str(path), "format": "duke_npz" if duke else "npz", "z_spacing_known": False},
    )

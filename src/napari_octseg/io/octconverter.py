"""Topcon ``.fds``/``.fda``, Zeiss ``.img``, DICOM OCT and Bioptigen ``.OCT``, read through oct-converter.

oct-converter (https://github.com/marksgraham/OCT-Converter) does the byte-level work; here we
check signatures first (so foreign bytes fail fast with a clear message), bound the sizes, and
convert its ``OCTVolumeWithMetaData`` (a list of (depth, width) B-scans, ``pixel_spacing`` in mm
ordered width, slice distance, height) into an :class:`OctVolume`. Grey values: 8-bit data / 255,
16-bit data / its maximum (``reflectivity='display'``).

No sample file of these formats is available to the project: the readers are exercised on crafted
and foreign bytes only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from oct_converter.image_types import OCTVolumeWithMetaData

from ..core.volume import OctVolume
from ._util import as_volume_array, check_payload, check_shape, fail, library_errors, require_file

_LATERALITY = {"R": "OD", "L": "OS", "OD": "OD", "OS": "OS"}
#: Zeiss Cirrus cubes: raw uint8, 1024 rows, 512 or 200 A-scans per B-scan (no header at all).
_ZEISS_ROWS = 1024
_ZEISS_COLS = (512, 200)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence oct-converter's progress prints (they would corrupt the CLI's output)."""
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def _to_volume(path: Path, oct_volume: OCTVolumeWithMetaData, fmt: str, device: str) -> OctVolume:
    slices = oct_volume.volume
    if isinstance(slices, np.ndarray) and slices.ndim == 3:
        stack = slices
    else:
        slices = list(slices)
        if not slices:
            raise fail(path, "file holds no B-scan")
        shapes = {np.shape(s) for s in slices}
        if len(shapes) != 1:
            raise fail(path, f"B-scans differ in size: {sorted(shapes)[:3]}")
        check_shape(path, (len(slices),) + next(iter(shapes)))
        stack = np.stack([np.asarray(s) for s in slices])
    if stack.dtype.kind in "ui":
        top = 255.0 if stack.dtype.itemsize == 1 else float(max(int(stack.max(initial=0)), 1))
        stack = stack.astype(np.float32) / top
    data = as_volume_array(path, stack)
    scale = None
    spacing = getattr(oct_volume, "pixel_spacing", None)
    if spacing is not None and len(spacing) == 3:
        x, z, y = (float(v) for v in spacing)
        if all(np.isfinite(v) and v > 0 for v in (x, z, y)):
            scale = (z * 1000.0, y * 1000.0, x * 1000.0)
    laterality = _LATERALITY.get(str(getattr(oct_volume, "laterality", "") or "").upper())
    return OctVolume(
        data=data,
        scale_um=scale,
        laterality=laterality,
        scan_pattern="volume" if data.shape[0] > 1 else "line",
        reflectivity="display",
        meta={
            "source": str(path),
            "format": fmt,
            "device": device,
            "z_spacing_known": scale is not None and data.shape[0] > 1,
        },
    )


def _topcon(path: str | os.PathLike, kind: str) -> OctVolume:
    from oct_converter.readers import FDA, FDS

    path = Path(path)
    require_file(path, min_size=15)
    with open(path, "rb") as fh:
        head = fh.read(7)
    if head[:4] != b"FOCT":
        raise fail(path, f"not a Topcon .{kind.lower()} file (no FOCT signature)")
    with library_errors(path, f"oct-converter could not read this Topcon .{kind.lower()} file"), _quiet():
        reader = FDS(path) if kind == "FDS" else FDA(path)
        oct_volume = reader.read_oct_volume()
    return _to_volume(path, oct_volume, f"topcon_{kind.lower()}", "Topcon")


def read_fds(path: str | os.PathLike) -> OctVolume:
    """Read a Topcon ``.fds`` file (via oct-converter)."""
    return _topcon(path, "FDS")


def read_fda(path: str | os.PathLike) -> OctVolume:
    """Read a Topcon ``.fda`` file (via oct-converter; JPEG 2000 slices)."""
    return _topcon(path, "FDA")


def read_zeiss_img(path: str | os.PathLike) -> OctVolume:
    """Read a Zeiss Cirrus ``.img`` cube (raw uint8, 1024 rows, 512 or 200 A-scans per B-scan).

    The format has no header, so the size must be a whole number of B-scans.
    """
    from oct_converter.readers import IMG

    path = Path(path)
    size = require_file(path)
    cols = next((c for c in _ZEISS_COLS if size % (_ZEISS_ROWS * c) == 0), None)
    if cols is None:
        raise fail(
            path,
            f"not a Zeiss .img cube: {size} bytes is not a whole number of "
            f"{_ZEISS_ROWS}x512 or {_ZEISS_ROWS}x200 B-scans",
        )
    check_shape(path, (size // (_ZEISS_ROWS * cols), _ZEISS_ROWS, cols))
    with library_errors(path, "oct-converter could not read this Zeiss .img file"), _quiet():
        oct_volume = IMG(path).read_oct_volume(rows=_ZEISS_ROWS, cols=cols)
    return _to_volume(path, oct_volume, "zeiss_img", "Zeiss Cirrus")


def read_dicom(path: str | os.PathLike) -> OctVolume:
    """Read a DICOM OCT file (multi-frame B-scans; via oct-converter and pydicom)."""
    path = Path(path)
    require_file(path, min_size=132)
    with open(path, "rb") as fh:
        fh.seek(128)
        if fh.read(4) != b"DICM":
            raise fail(path, "not a DICOM file (no DICM signature)")
    with library_errors(path, "could not read this DICOM file"):
        import pydicom

        header = pydicom.dcmread(path, stop_before_pixels=True)
        rows, cols = int(header.get("Rows", 0)), int(header.get("Columns", 0))
        frames = int(header.get("NumberOfFrames", 1) or 1)
    check_shape(path, (frames, rows, cols))
    if str(header.get("Manufacturer", "")).startswith("Carl Zeiss Meditec"):
        raise fail(path, "Zeiss DICOM files (encrypted pixel data) are not supported by oct-converter 0.7")
    with library_errors(path, "oct-converter could not read this DICOM file"), _quiet():
        from oct_converter.readers import Dicom

        oct_volume = Dicom(path).read_oct_volume()
    return _to_volume(path, oct_volume, "dicom", str(header.get("Manufacturer", "DICOM")))


def read_bioptigen(path: str | os.PathLike) -> OctVolume:
    """Read the first volume of a Bioptigen ``.OCT`` file (via oct-converter)."""
    from oct_converter.readers import BOCT

    path = Path(path)
    size = require_file(path, min_size=16)
    with library_errors(path, "not a Bioptigen .OCT file"), _quiet():
        header = BOCT.header_structure.parse_file(path)
        dims = (header.framecount.value, header.linecount.value, header.linelength.value)
    check_shape(path, dims, "Bioptigen volume")
    check_payload(path, int(np.prod(dims)) * 2, size)
    with library_errors(path, "oct-converter could not read this Bioptigen .OCT file"), _quiet():
        volumes = BOCT(path).read_oct_volume()
        if not volumes:
            raise fail(path, "file holds no OCT volume")
        first = volumes[0]
    return _to_volume(path, first, "bioptigen_oct", "Bioptigen")

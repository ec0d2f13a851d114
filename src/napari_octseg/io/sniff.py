"""Cheap look at a file before reading it: is it an OCT scan (or one of our labels files) at all?

The napari reader claims extensions other tools use too (``.tif``, ``.npy``, ``.img``, ``.xml``,
``.mat``). :func:`looks_like_oct` reads at most a header (a TIFF's first page tags, an ``.npy``
header, a ``.mat`` variable table, 4 kB of XML, a file size) and says ``False`` for files that are
plainly something else (an RGB photo, a table of points, a MATLAB file without ``images``, an XML
that is not a HEYEX export, an ``.img`` that is no Zeiss cube), so napari can hand them to its own
reader. ``True`` means "worth trying": the real reader may still refuse with a clear message.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Smallest depth and width of a B-scan worth calling OCT (a 3-column .npy is a table, not a scan).
MIN_SIDE = 16


def looks_like_oct(path: str | os.PathLike) -> bool:
    """``False`` when ``path`` is certainly not an OCT scan this package reads; else ``True``.

    Never raises: a file that cannot be opened is left to the real reader to explain.
    """
    p = Path(path)
    if p.is_dir():
        return True
    suffix = p.suffix.lower()
    check = _CHECKS.get(suffix)
    if check is None:
        return True
    try:
        return check(p)
    except Exception:  # a header we cannot parse: not ours to claim
        return False


def _tiff(p: Path) -> bool:
    import tifffile

    from ._sidecar import tiff_marker

    with tifffile.TiffFile(p) as tif:
        marker = tiff_marker(tif)
        if marker is not None:
            return marker == "labels"  # our heatmaps are not scans
        if not tif.pages:
            return False
        page = tif.pages[0]
        photometric = int(getattr(page, "photometric", 1))
        if getattr(page, "samplesperpixel", 1) > 1 or photometric in (2, 3, 5, 6):  # RGB, palette, CMYK, YCbCr
            return False
        series = tif.series[0] if tif.series else None
        shape = tuple(series.shape) if series is not None else tuple(page.shape)
    shape = tuple(s for s in shape if s != 1) or shape
    return 2 <= len(shape) <= 3 and min(shape[-2:]) >= MIN_SIDE


def _npy(p: Path) -> bool:
    from numpy.lib import format as npformat

    with open(p, "rb") as fh:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = npformat.read_array_header_1_0(fh)
        else:
            shape, _, dtype = npformat.read_array_header_2_0(fh)
    if dtype.hasobject or dtype.kind not in "biuf" or len(shape) not in (2, 3):
        return False
    if len(shape) == 3 and shape[-1] in (3, 4) and shape[0] >= MIN_SIDE:
        return False  # (H, W, RGB[A]) picture
    return min(shape[-2:]) >= MIN_SIDE


def _mat(p: Path) -> bool:
    import scipy.io

    names = {name for name, _, _ in scipy.io.whosmat(str(p))}
    return "images" in names


def _xml(p: Path) -> bool:
    with open(p, "rb") as fh:
        head = fh.read(4096)
    return b"<HEDX" in head


def _img(p: Path) -> bool:
    from .octconverter import _ZEISS_COLS, _ZEISS_ROWS

    size = p.stat().st_size
    return size > 0 and any(size % (_ZEISS_ROWS * c) == 0 for c in _ZEISS_COLS)


_CHECKS = {".tif": _tiff, ".tiff": _tiff, ".npy": _npy, ".mat": _mat, ".xml": _xml, ".img": _img}

__all__ = ["MIN_SIDE", "looks_like_oct"]

"""Plain image containers: ``.npy``, TIFF stacks and folders of PNG/JPEG B-scans.

They carry grey values already compressed for display (``reflectivity='display'``); integer data
is scaled to [0, 1] by its dtype's range, float data is kept as it is. A 2-D image is one B-scan;
an array of 4 or more dimensions is refused. Scale is unknown (``None``) unless an ImageJ TIFF
states it in micrometres.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

if TYPE_CHECKING:
    from tifffile import TiffFile, TiffPage

from ..core.intensity import Reflectivity, detect_reflectivity
from ..core.volume import OctVolume
from ._util import (
    as_volume_array,
    check_image_header,
    check_memory,
    check_payload,
    check_shape,
    display_scale,
    fail,
    library_errors,
    open_image,
    require_file,
)

#: Extensions of the B-scan images a folder may hold.
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg")
_NPY_MAGIC = b"\x93NUMPY"


def _npy_header(path: Path, fh: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """Parse an ``.npy`` header without reading the data (``ast.literal_eval``: no code runs)."""
    from numpy.lib import format as npformat

    try:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, OSError, SyntaxError, TypeError, EOFError) as exc:
        raise fail(path, f"not a valid .npy file ({exc})") from None
    return tuple(shape), bool(fortran), dtype


def load_npy_array(path: str | os.PathLike) -> np.ndarray:
    """Load a numeric ``.npy`` array safely: header checked first, never unpickled.

    Raises
    ------
    OctReadError
        Object arrays (pickles), absurd or truncated shapes, foreign bytes.
    """
    path = Path(path)
    size = require_file(path)
    with open(path, "rb") as fh:
        if fh.read(6) != _NPY_MAGIC:
            raise fail(path, "not a .npy file (bad magic bytes)")
        fh.seek(0)
        shape, _, dtype = _npy_header(path, fh)
        if dtype.hasobject:
            raise fail(path, "holds Python objects; refusing to unpickle it")
        if len(shape) == 0:
            raise fail(path, "holds a single number, not an image")
        check_shape(path, shape, "array")
        check_payload(path, int(np.prod(shape)) * dtype.itemsize, size - fh.tell(), voxels=int(np.prod(shape)))
    try:
        return np.asarray(np.load(path, allow_pickle=False))
    except (ValueError, OSError, EOFError) as exc:
        raise fail(path, f"could not load the array ({exc})") from None


def read_npy(path: str | os.PathLike) -> OctVolume:
    """Read a ``.npy`` array (2-D B-scan or 3-D (n_bscans, depth, width)) as an :class:`OctVolume`."""
    raw = load_npy_array(path)
    data = as_volume_array(path, display_scale(raw))
    kind, reason = _float_reflectivity(raw, data)
    meta = {"source": str(path), "format": "npy", "reflectivity_reason": reason}
    return OctVolume(data=data, reflectivity=kind, meta=meta)


def _float_reflectivity(raw: np.ndarray, data: np.ndarray) -> tuple[Reflectivity, str]:
    """Float arrays may hold linear reflectivity (a HEYEX export saved raw): detect it; integers are display."""
    if raw.dtype.kind != "f":
        return "display", f"integer grey values ({raw.dtype}) are display values"
    return detect_reflectivity(data)


def _to_grey(path: Path, array: np.ndarray, samples_last: bool) -> np.ndarray:
    """RGB(A) -> luminance; keeps single-channel data as it is."""
    if not samples_last:
        return array
    if array.shape[-1] not in (3, 4):
        raise fail(path, f"has {array.shape[-1]} colour channels; expected grey, RGB or RGBA")
    rgb = array[..., :3].astype(np.float32)
    return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _first_page(tif: TiffFile) -> TiffPage:
    """The first page with its tags (IndexError when the file has none)."""
    from tifffile import TiffPage

    page = tif.pages[0]
    if not isinstance(page, TiffPage):  # a TiffFrame carries no tags; tifffile always loads page 0 in full
        raise IndexError("first TIFF page not loaded")
    return page


def _imagej_scale(tif: TiffFile) -> tuple[float, float, float] | None:
    """(z, y, x) µm from ImageJ metadata and resolution tags, when the file states microns."""
    meta = tif.imagej_metadata or {}
    unit = str(meta.get("unit", "")).lower().replace("\\u00b5", "µ")
    if unit not in ("micron", "microns", "um", "µm"):
        return None
    try:
        page = _first_page(tif)
        xres = page.tags["XResolution"].value
        yres = page.tags["YResolution"].value
        x = xres[1] / xres[0]
        y = yres[1] / yres[0]
        z = float(meta.get("spacing", 1.0))
    except (KeyError, ZeroDivisionError, TypeError, IndexError):
        return None
    if not all(np.isfinite(v) and v > 0 for v in (x, y, z)):
        return None
    return (z, y, x)


def read_tiff(path: str | os.PathLike) -> OctVolume:
    """Read a TIFF B-scan or stack (pages = B-scans) as an :class:`OctVolume`."""
    import tifffile

    path = Path(path)
    size = require_file(path)
    with library_errors(path, "not a readable TIFF"), tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise fail(path, "TIFF holds no image")
        series = tif.series[0]
        shape = tuple(series.shape)
        check_shape(path, shape, "image")
        compressed = any(p.compression != 1 for p in tif.pages[:1])
        check_payload(
            path, int(np.prod(shape)) * series.dtype.itemsize, size, compressed=compressed, voxels=int(np.prod(shape))
        )
        samples_last = series.axes.endswith("S")
        array = series.asarray()
        scale = _imagej_scale(tif)
        plain = None if scale is not None else _resolution_scale(tif)
    data = as_volume_array(path, _to_grey(path, display_scale(array), samples_last))
    kind, reason = _float_reflectivity(array, data)
    meta: dict[str, Any] = {"source": str(path), "format": "tiff", "reflectivity_reason": reason}
    if plain is not None:
        scale = plain
        meta["z_spacing_known"] = False
    return OctVolume(data=data, scale_um=scale, reflectivity=kind, meta=meta)


def _resolution_scale(tif: TiffFile) -> tuple[float, float, float] | None:
    """(1, y, x) µm from plain TIFF resolution tags in centimetres, or ``None`` (tags absent, inches, no unit).

    The B-scan spacing is not in such tags: the caller marks it unknown (``meta['z_spacing_known']``).
    """
    try:
        page = _first_page(tif)
        if int(page.tags["ResolutionUnit"].value) != 3:  # 3 = centimetre
            return None
        xres = page.tags["XResolution"].value
        yres = page.tags["YResolution"].value
        x = 1e4 * xres[1] / xres[0]
        y = 1e4 * yres[1] / yres[0]
    except (KeyError, ZeroDivisionError, TypeError, IndexError, ValueError):
        return None
    if not all(np.isfinite(v) and 0 < v <= 1e5 for v in (x, y)):
        return None
    return (1.0, y, x)


def natural_key(name: str) -> list:
    """Sort key that orders ``bscan2`` before ``bscan10``."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def image_files(folder: str | os.PathLike) -> list[Path]:
    """The PNG/JPEG files of ``folder``, in natural order."""
    folder = Path(folder)
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: natural_key(p.name))


def _read_image(path: Path) -> np.ndarray:
    size = require_file(path)
    with library_errors(path, "not a readable image"), open_image(path) as im:
        check_image_header(path, im.height, im.width, max(1, len(im.getbands())), size)
        if im.mode in ("RGB", "RGBA", "P", "LA", "CMYK", "YCbCr"):
            im = im.convert("L")
        array = np.asarray(im)
    if array.ndim != 2:
        raise fail(path, f"unsupported image layout {array.shape}")
    return array


def read_image_folder(path: str | os.PathLike) -> OctVolume:
    """Read a folder of PNG/JPEG B-scans (natural file-name order, all the same size)."""
    path = Path(path)
    if not path.is_dir():
        raise fail(path, "is not a folder")
    try:
        files = image_files(path)
    except OSError as exc:
        raise fail(path, f"cannot list the folder ({exc})") from None
    if not files:
        raise fail(path, f"folder holds no {'/'.join(e[1:].upper() for e in IMAGE_EXTENSIONS)} B-scans")
    first = _read_image(files[0])
    check_shape(path, (len(files),) + first.shape)
    check_memory(path, 8 * len(files) * first.size)
    stack = np.empty((len(files),) + first.shape, dtype=np.float32)
    stack[0] = display_scale(first)
    for i, file in enumerate(files[1:], start=1):
        image = _read_image(file)
        if image.shape != first.shape:
            raise fail(path, f"B-scans differ in size: {files[0].name} is {first.shape}, {file.name} is {image.shape}")
        stack[i] = display_scale(image)
    data = as_volume_array(path, stack)
    return OctVolume(
        data=data,
        reflectivity="display",
        meta={"source": str(path), "format": "image folder", "files": [f.name for f in files]},
    )


def read_image_file(path: str | os.PathLike) -> OctVolume:
    """Read one PNG/JPEG B-scan as a volume of one B-scan."""
    path = Path(path)
    data = as_volume_array(path, display_scale(_read_image(path)))
    return OctVolume(data=data, reflectivity="display", meta={"source": str(path), "format": "image"})

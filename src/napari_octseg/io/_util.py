"""Guards shared by every reader: one error type, size limits checked before allocating.

Every reader turns whatever goes wrong into :class:`OctReadError` with the message
``"<file name>: <problem>"`` on one line, and checks the dimensions a header claims against
:data:`MAX_DIM`, :data:`MAX_VOXELS` and the file's size *before* allocating anything.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..core.errors import InputError, OctReadError

#: Largest accepted size of any single axis (pixels). Real OCT axes stay below ~10 000.
MAX_DIM: int = 65_536
#: Largest accepted number of voxels in one volume (2**30 float32 = 4 GiB).
MAX_VOXELS: int = 1 << 30
#: Largest plausible decompression ratio (zlib's theoretical maximum is ~1032:1).
MAX_COMPRESSION_RATIO: int = 1100
#: Compressed data decoding to more than this many bytes must also stay under :data:`MAX_BOMB_RATIO`.
BOMB_MIN_BYTES: int = 64 << 20
#: Largest accepted decompression ratio of big payloads (OCT speckle compresses ~2-10:1, label maps ~100:1).
MAX_BOMB_RATIO: int = 200
#: Largest accepted single B-scan image (pixels): real B-scans stay below ~4096 x 4096.
MAX_IMAGE_PIXELS: int = 1 << 26


def one_line(text: object) -> str:
    """``text`` as a single, reasonably short line (exception messages can span many)."""
    line = " ".join(str(text).split())
    return line if len(line) <= 300 else line[:297] + "..."


def fail(path: str | os.PathLike, problem: object) -> OctReadError:
    """The reader error for ``path``: ``"<file name>: <problem>"`` on one line."""
    return OctReadError(f"{Path(path).name or path}: {one_line(problem)}")


def require_file(path: str | os.PathLike, min_size: int = 1) -> int:
    """Check that ``path`` is a regular, readable file of at least ``min_size`` bytes.

    Returns
    -------
    int
        The file size in bytes.
    """
    p = Path(path)
    if not p.exists():
        raise fail(p, "no such file")
    if p.is_dir():
        raise fail(p, "is a directory, expected a file")
    if not p.is_file():
        raise fail(p, "is not a regular file")
    size = p.stat().st_size
    if size == 0:
        raise fail(p, "file is empty")
    if size < min_size:
        raise fail(p, f"file is truncated ({size} bytes, a valid one has at least {min_size})")
    if not os.access(p, os.R_OK):
        raise fail(p, "permission denied")
    return size


def check_shape(path: str | os.PathLike, shape: Iterable[int], what: str = "volume") -> tuple[int, ...]:
    """Reject absurd dimensions (zero, negative, above :data:`MAX_DIM` or :data:`MAX_VOXELS`)."""
    dims = tuple(int(d) for d in shape)
    if any(d <= 0 for d in dims):
        raise fail(path, f"{what} has an empty or negative dimension {dims}")
    if any(d > MAX_DIM for d in dims):
        raise fail(path, f"{what} claims absurd dimensions {dims} (limit {MAX_DIM} per axis)")
    if math.prod(dims) > MAX_VOXELS:
        raise fail(path, f"{what} claims {math.prod(dims)} voxels {dims} (limit {MAX_VOXELS})")
    return dims


def check_payload(
    path: str | os.PathLike, needed: int, available: int, compressed: bool = False, voxels: int | None = None
) -> None:
    """Reject a header that claims more data bytes than the file can hold (before allocating).

    Parameters
    ----------
    needed
        Bytes the data decodes to.
    available
        Bytes the file holds for it (its size, or a zip member's compressed size).
    compressed
        Whether the data is compressed: then up to :data:`MAX_COMPRESSION_RATIO` times ``available``
        may be claimed, and a payload above :data:`BOMB_MIN_BYTES` at most :data:`MAX_BOMB_RATIO` times.
    voxels
        Voxels of the volume the reader builds from it (float32, 4 bytes each), for the memory check;
        ``None`` for data kept as it is (labels).

    Raises
    ------
    OctReadError
        Truncated or corrupt header, a decompression bomb, or more memory than this machine has.
    """
    limit = available * MAX_COMPRESSION_RATIO if compressed else available
    if needed > limit:
        raise fail(
            path,
            f"file is truncated or its header is corrupt: it claims {needed} bytes of data, {available} are present",
        )
    if compressed and needed > BOMB_MIN_BYTES and needed > available * MAX_BOMB_RATIO:
        raise fail(
            path,
            f"{available} compressed bytes claim to decode to {needed} bytes "
            f"(over {MAX_BOMB_RATIO}:1; a decompression bomb?); refused",
        )
    check_memory(path, needed + (8 * voxels if voxels is not None else needed))


def check_memory(path: str | os.PathLike, needed: int) -> None:
    """Reject data whose decoding needs more memory than this process can get (see ``core.resources``)."""
    from ..core.resources import require_memory

    try:
        require_memory(needed, "reading it", "crop or split the file")
    except InputError as exc:
        raise fail(path, str(exc)) from None


@contextmanager
def open_image(path: str | os.PathLike) -> Iterator:
    """``PIL.Image.open`` without Pillow's own bomb warning: :func:`check_image_header` judges the size."""
    import warnings

    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except Image.DecompressionBombError:
            raise fail(
                path, "image is larger than any OCT B-scan (its header claims over 178 million pixels)"
            ) from None
    with im:
        yield im


def check_image_header(path: str | os.PathLike, height: int, width: int, bands: int, size: int) -> None:
    """Check the dimensions a PNG/JPEG header states before its pixels are decoded."""
    check_shape(path, (height, width), "image")
    if height * width > MAX_IMAGE_PIXELS:
        raise fail(path, f"image of {width} x {height} pixels is larger than any OCT B-scan (limit {MAX_IMAGE_PIXELS})")
    check_payload(path, height * width * bands, size, compressed=True, voxels=height * width)


def as_volume_array(path: str | os.PathLike, array: np.ndarray) -> np.ndarray:
    """Turn a 2-D B-scan or 3-D stack into float32 (n_bscans, depth, width); reject the rest."""
    if array.dtype.hasobject:
        raise fail(path, "holds Python objects, not numbers")
    if array.dtype.kind == "c":
        raise fail(path, "holds complex numbers, expected real grey values")
    if array.dtype.kind not in "biuf":
        raise fail(path, f"unsupported data type {array.dtype}")
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3:
        raise fail(
            path,
            f"has {array.ndim} dimensions {tuple(array.shape)}; expected a B-scan (depth, width) "
            "or a volume (n_bscans, depth, width)",
        )
    check_shape(path, array.shape)
    out = np.asarray(array, dtype=np.float32)
    if not np.all(np.isfinite(out)):
        raise fail(path, "contains NaN or infinite grey values")
    return out


def display_scale(array: np.ndarray) -> np.ndarray:
    """Integer grey values -> float32 in [0, 1] by the dtype's range; floats are kept as they are."""
    if array.dtype.kind in "ui":
        info = np.iinfo(array.dtype)
        return (array.astype(np.float32) - max(info.min, 0)) / float(info.max - max(info.min, 0))
    if array.dtype.kind == "b":
        return array.astype(np.float32)
    return array


@contextmanager
def library_errors(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Turn any exception a third-party parser raises on bad bytes into one :class:`OctReadError`.

    Library parsers (tifffile, Pillow, eyepy, oct-converter, scipy) fail on foreign bytes with a
    zoo of exception types (``struct.error``, ``KeyError``, ``ZeroDivisionError``...), so every
    ``Exception`` is caught here; ``KeyboardInterrupt`` and ``SystemExit`` pass through.
    """
    try:
        yield
    except OctReadError:
        raise
    except MemoryError:
        raise fail(path, f"{what}: not enough memory (corrupt header?)") from None
    except Exception as exc:
        detail = one_line(exc) or type(exc).__name__
        raise fail(path, f"{what} ({detail})") from None

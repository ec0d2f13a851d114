"""Heidelberg ``.e2e`` files and HEYEX XML exports, read through eyepy.

eyepy (https://github.com/MedVisBonn/eyepy) does the byte-level work. Before handing a file over we
check its magic bytes and, for E2E, walk the chunk chain ourselves: eyepy parses chunks with a
greedy loop that follows a position stored in the file, and a crafted file pointing backwards would
loop forever. Grey values are eyepy's display transform (uint8 -> [0, 1], ``reflectivity='display'``).
E2E files carry no pixel size eyepy can find, so their ``scale_um`` is ``None``; XML exports state it.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

from ..core.volume import OctVolume
from ._util import as_volume_array, check_shape, display_scale, fail, library_errors, require_file

_E2E_VERSION = 36  # version structure
_E2E_HEADER = 52  # main header and chunk headers
_E2E_FOLDER = 44  # folder header
_E2E_CONTAINER = 60  # data container header
_MAX_FOLDERS = 1 << 16

_PATTERNS = {1: "line", 2: "circle", 3: "volume", 4: "volume", 5: "radial"}


def check_e2e_structure(path: Path, size: int) -> int:
    """Walk the E2E chunk chain as eyepy will, refusing chains that do not move forward.

    Returns
    -------
    int
        The number of chunks eyepy will parse.
    """
    with open(path, "rb") as fh:
        head = fh.read(_E2E_VERSION + _E2E_HEADER)
        if len(head) < _E2E_VERSION + _E2E_HEADER or not head.startswith(b"CMDb"):
            raise fail(path, "not a Heidelberg .e2e file (no CMDb signature)")
        pos, chunks = _E2E_VERSION + _E2E_HEADER, 0
        while pos + _E2E_HEADER <= size:
            fh.seek(pos)
            header = fh.read(_E2E_HEADER)
            (num_entries,) = struct.unpack_from("<I", header, 36)
            if num_entries == 0 or num_entries > _MAX_FOLDERS:
                break  # eyepy's greedy parse stops here too
            folders_end = pos + _E2E_HEADER + num_entries * _E2E_FOLDER
            if folders_end > size:
                break
            fh.seek(folders_end - _E2E_FOLDER)
            _, start, length = struct.unpack("<3I", fh.read(12))
            nxt = start + length + _E2E_CONTAINER
            if nxt <= pos:
                raise fail(path, f"corrupt chunk chain: chunk at byte {pos} points back to byte {nxt}")
            pos, chunks = nxt, chunks + 1
    if chunks == 0:
        raise fail(path, "E2E file holds no data chunk (truncated?)")
    return chunks


def _from_eyevolume(path: Path, ev, fmt: str, scale_known: bool) -> OctVolume:
    data = np.asarray(ev.data)
    check_shape(path, data.shape, "volume")
    volume = as_volume_array(path, display_scale(data))
    scale = None
    if scale_known and str(ev.scale_unit).lower() == "mm":
        values = (float(ev.scale_z), float(ev.scale_y), float(ev.scale_x))
        if all(np.isfinite(v) and v > 0 for v in values[1:]):
            z = values[0] if values[0] > 0 and volume.shape[0] > 1 else values[2]
            scale = (z * 1000.0, values[1] * 1000.0, values[2] * 1000.0)
    layers = {}
    for name, annotation in ev.layers.items():
        heights = np.asarray(annotation.data, dtype=np.float32)
        if heights.shape == (volume.shape[0], volume.shape[2]):
            heights = heights.copy()
            heights[~np.isfinite(heights) | (heights >= 3.0e38) | (heights < 0)] = np.nan
            layers[name] = heights
    laterality = str(ev.laterality).upper() if ev.laterality else None
    laterality = laterality if laterality in ("OD", "OS") else None
    return OctVolume(
        data=volume,
        scale_um=scale,
        laterality=laterality,
        scan_pattern="volume" if volume.shape[0] > 1 else "line",
        reflectivity="display",
        layers=layers,
        meta={
            "source": str(path),
            "format": fmt,
            "device": "Heidelberg Spectralis",
            "z_spacing_known": bool(scale and volume.shape[0] > 1),
        },
    )


def read_e2e(path: str | os.PathLike) -> OctVolume:
    """Read the first OCT series of a Heidelberg ``.e2e`` file (via eyepy) as an :class:`OctVolume`."""
    import eyepy

    path = Path(path)
    size = require_file(path, min_size=_E2E_VERSION + _E2E_HEADER)
    check_e2e_structure(path, size)
    with library_errors(path, "eyepy could not read this E2E file"):
        ev = eyepy.import_heyex_e2e(path)
    return _from_eyevolume(path, ev, "heyex_e2e", scale_known=False)


def _xml_file(path: Path) -> Path:
    if path.is_dir():
        xmls = [p for p in path.iterdir() if p.suffix.lower() == ".xml"]
        if len(xmls) != 1:
            raise fail(path, f"expected one HEYEX .xml file in the folder, found {len(xmls)}")
        return xmls[0]
    return path


def read_heyex_xml(path: str | os.PathLike) -> OctVolume:
    """Read a HEYEX XML export (the ``.xml`` file or its folder, B-scans as images beside it)."""
    import eyepy

    path = _xml_file(Path(path))
    require_file(path)
    with open(path, "rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"<") or b"<HEDX" not in head:
        raise fail(path, "not a HEYEX XML export (no <HEDX> root element)")
    pattern = _scan_pattern_code(head)
    if pattern in (2, 5):
        raise fail(path, f"{_PATTERNS[pattern]} scans in XML exports are not supported (export them as .vol)")
    with library_errors(path, "eyepy could not read this HEYEX XML export"):
        ev = eyepy.import_heyex_xml(path)
    return _from_eyevolume(path, ev, "heyex_xml", scale_known=True)


def _scan_pattern_code(head: bytes) -> int | None:
    start = head.find(b"<ScanPattern>")
    if start < 0:
        return None
    end = head.find(b"</ScanPattern>", start)
    try:
        return int(head[start + len(b"<ScanPattern>") : end].strip())
    except ValueError:
        return None

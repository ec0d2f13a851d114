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
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from eyepy import EyeVolume

from ..core.volume import OctVolume
from ._util import (
    as_volume_array,
    check_image_header,
    check_memory,
    check_shape,
    display_scale,
    fail,
    library_errors,
    open_image,
    require_file,
)

_E2E_VERSION = 36  # version structure
_E2E_HEADER = 52  # main header and chunk headers
_E2E_FOLDER = 44  # folder header
_E2E_CONTAINER = 60  # data container header
_MAX_FOLDERS = 1 << 16
#: Largest accepted HEYEX XML file (a real export with segmentation lines stays below a few MB).
MAX_XML_BYTES = 256 << 20

_PATTERNS = {1: "line", 2: "circle", 3: "volume", 4: "volume", 5: "radial"}


def check_e2e_structure(path: Path, size: int) -> int:
    """Walk the E2E chunk chain as eyepy will, refusing chains that would make it loop or crawl.

    eyepy parses every chunk's folder headers (44 bytes each) and jumps to the byte after the last
    folder's data. In a real file each chunk's header table and data lie after the previous chunk's, so
    the next chunk starts beyond the current chunk's folder table and all the tables together fit in the
    file. A chain that steps forward a few bytes at a time while claiming 65,536 folders per chunk
    would make eyepy parse billions of folder headers (hours, gigabytes); it is refused here, after at
    most ``size / 96`` cheap steps.

    Returns
    -------
    int
        The number of chunks eyepy will parse.
    """
    with open(path, "rb") as fh:
        head = fh.read(_E2E_VERSION + _E2E_HEADER)
        if len(head) < _E2E_VERSION + _E2E_HEADER or not head.startswith(b"CMDb"):
            raise fail(path, "not a Heidelberg .e2e file (no CMDb signature)")
        pos, chunks, folders = _E2E_VERSION + _E2E_HEADER, 0, 0
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
            if nxt < folders_end:
                raise fail(
                    path,
                    f"corrupt chunk chain: chunk at byte {pos} claims {num_entries} folders but the next chunk "
                    f"starts inside them, at byte {nxt}",
                )
            folders += num_entries
            if folders * _E2E_FOLDER > size:
                raise fail(path, f"corrupt chunk chain: {folders} folder headers do not fit in {size} bytes")
            pos, chunks = nxt, chunks + 1
    if chunks == 0:
        raise fail(path, "E2E file holds no data chunk (truncated?)")
    return chunks


def _from_eyevolume(path: Path, ev: EyeVolume, fmt: str, scale_known: bool) -> OctVolume:
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
    """Read a HEYEX XML export (the ``.xml`` file or its folder, B-scans as images beside it).

    Every image the XML refers to must lie in the XML's folder (an ``ExamURL`` that is absolute or
    climbs out with ``..`` is refused) and its header's size is checked, all images together against
    the available memory, before eyepy decodes any of them.
    """
    import eyepy

    path = _xml_file(Path(path))
    size = require_file(path)
    if size > MAX_XML_BYTES:
        raise fail(path, f"XML export of {size} bytes is larger than any HEYEX export (limit {MAX_XML_BYTES})")
    with open(path, "rb") as fh:
        head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"<") or b"<HEDX" not in head:
        raise fail(path, "not a HEYEX XML export (no <HEDX> root element)")
    pattern = _scan_pattern_code(head)
    if pattern in (2, 5):
        raise fail(path, f"{_PATTERNS[pattern]} scans in XML exports are not supported (export them as .vol)")
    check_xml_images(path)
    with library_errors(path, "eyepy could not read this HEYEX XML export"):
        ev = eyepy.import_heyex_xml(path)
    return _from_eyevolume(path, ev, "heyex_xml", scale_known=True)


def check_xml_images(path: Path) -> None:
    """Check every image a HEYEX XML refers to, by its header, before anything is decoded.

    Raises
    ------
    OctReadError
        An ``ExamURL`` outside the XML's folder, a missing or oversized image, B-scans of different
        sizes, or images that together need more memory than is available.
    """
    from xml.etree import ElementTree

    with library_errors(path, "not a readable XML file"), open(path, encoding="utf-8", errors="replace") as fh:
        root = ElementTree.parse(fh).getroot()
    folder = path.parent.resolve()
    total, bscan_shape, n_bscans = 0, None, 0
    for image in root.iter("Image"):
        url = image.findtext("./ImageData/ExamURL")
        kind = (image.findtext("./ImageType/Type") or "").strip()
        if url is None:
            continue
        name = url.strip().split("\\")[-1]
        target = (path.parent / name).resolve()
        if Path(name).is_absolute() or folder not in target.parents:
            raise fail(path, f"image {url.strip()!r} lies outside the export's folder; refused")
        if not target.is_file():
            raise fail(path, f"image {name} named in the XML is missing")
        file_size = target.stat().st_size
        with library_errors(target, "not a readable image"), open_image(target) as im:
            check_image_header(target, im.height, im.width, max(1, len(im.getbands())), max(1, file_size))
            shape = (im.height, im.width)
            total += im.height * im.width * max(1, len(im.getbands()))
        if kind == "OCT":
            n_bscans += 1
            if bscan_shape is not None and shape != bscan_shape:
                raise fail(path, f"B-scans differ in size: {bscan_shape} and {shape} ({name})")
            bscan_shape = shape
            check_shape(path, (n_bscans, *shape), "volume")
    if bscan_shape is not None:
        # decoded images, eyepy's stack and our float32 volume
        check_memory(path, 2 * total + 4 * n_bscans * bscan_shape[0] * bscan_shape[1])


def _scan_pattern_code(head: bytes) -> int | None:
    start = head.find(b"<ScanPattern>")
    if start < 0:
        return None
    end = head.find(b"</ScanPattern>", start)
    try:
        return int(head[start + len(b"<ScanPattern>") : end].strip())
    except ValueError:
        return None

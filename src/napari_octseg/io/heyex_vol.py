"""Heidelberg Engineering HEYEX raw export (``.vol``, HSF-OCT-103), line, circle, volume and radial scans.

Our own small parser, because eyepy 0.21 refuses circle (pattern 2) and radial (pattern 5) scans.
The layout follows eyepy's ``eyepy/io/he/vol_reader.py`` (``vol_format`` / ``bscan_format``,
MIT licence, itself after ayl/heyexReader and FabianRathke/octSegmentation's HDEVolImporter.m) and
the HSF-OCT-103 specification. All little-endian::

    file header      2048 bytes  (fields below, then spare bytes)
    SLO image        SizeXSlo * SizeYSlo uint8
    n x B-scan       BScanHdrSize bytes of header (256 bytes of fields, NumSeg float32 lines of
                     SizeX values at OffSeg, padding), then SizeZ * SizeX float32 reflectivity

``BScanHdrSize`` varies between files (55296, 46080...): it is read, never assumed. Bytes after the
last B-scan (e.g. 132 in ``Willis_B_716_0.vol``) are tolerated and counted in ``meta``. Missing values
are stored as FLT_MAX: they become NaN in the device lines and 0 (no signal, as eyepy's
``from_vol_intensity`` and HEYEX show them) in the image.
"""

from __future__ import annotations

import datetime as _dt
import os
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..core.volume import OctVolume, ScanPattern
from ._util import check_payload, check_shape, fail, require_file

FILE_HEADER_SIZE = 2048
BSCAN_FIELDS_SIZE = 256
#: Values at or above this are HEYEX's "missing" marker (FLT_MAX = 3.4028235e38).
MISSING = 3.0e38
#: Largest B-scan header and number of device lines accepted (real files: <= 61440 bytes, <= 19 lines).
MAX_BSCAN_HEADER = 1 << 22
MAX_SEGMENTATIONS = 64

SCAN_PATTERNS: dict[int, ScanPattern] = {0: "unknown", 1: "line", 2: "circle", 3: "volume", 4: "volume", 5: "radial"}
#: Names of the device lines in the order HEYEX stores them (eyepy's SEG_MAPPING).
LINE_NAMES = (
    "ILM",
    "BM",
    "RNFL",
    "GCL",
    "IPL",
    "INL",
    "OPL",
    "ONL",
    "ELM",
    "IOS",
    "OPT",
    "CHO",
    "VIT",
    "ANT",
    "PR1",
    "PR2",
    "RPE",
    "IPL+",
    "IPL-",
)

# The 258 bytes of file-header fields and the 88 bytes of B-scan header fields (offsets in the docstring
# of eyepy's vol_format); spare bytes follow both.
_HEADER = struct.Struct("<12s3I3d2I2dId4sQiI16s16sI24sdI24sd")
_BSCAN = struct.Struct("<12sI4d2IfI6f")


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", errors="replace").strip()


def _filetime(value: int) -> str | None:
    """Windows FILETIME (100 ns since 1601-01-01) -> ISO text, ``None`` when unset or absurd."""
    if value <= 0:
        return None
    try:
        return (_dt.datetime(1601, 1, 1) + _dt.timedelta(microseconds=value / 10)).isoformat()
    except (OverflowError, ValueError):
        return None


def _oledate(value: float) -> str | None:
    """OLE automation date (days since 1899-12-30) -> ISO date, ``None`` when unset or absurd."""
    if not np.isfinite(value) or value <= 0:
        return None
    try:
        return (_dt.datetime(1899, 12, 30) + _dt.timedelta(days=value)).date().isoformat()
    except (OverflowError, ValueError):
        return None


def parse_header(path: str | os.PathLike, raw: bytes) -> dict:
    """Parse and sanity-check the 2048-byte file header (no allocation beyond it)."""
    if len(raw) < FILE_HEADER_SIZE:
        raise fail(path, f"file is truncated: {len(raw)} bytes, the .vol header alone has {FILE_HEADER_SIZE}")
    f = _HEADER.unpack_from(raw, 0)
    version = _text(f[0])
    if not version.startswith("HSF-OCT-"):
        raise fail(path, f"not a Heidelberg .vol file (version field {f[0][:12]!r})")
    hdr = {
        "version": version,
        "size_x": f[1],
        "n_bscans": f[2],
        "size_z": f[3],
        "scale_x": f[4],
        "distance": f[5],
        "scale_z": f[6],
        "size_x_slo": f[7],
        "size_y_slo": f[8],
        "scale_x_slo": f[9],
        "scale_y_slo": f[10],
        "field_size_slo": f[11],
        "scan_focus": f[12],
        "scan_position": _text(f[13]),
        "exam_time": _filetime(f[14]),
        "scan_pattern": f[15],
        "bscan_hdr_size": f[16],
        "id": _text(f[17]),
        "reference_id": _text(f[18]),
        "visit_date": _oledate(f[24]),
    }
    check_shape(path, (hdr["n_bscans"], hdr["size_z"], hdr["size_x"]), "B-scan volume")
    if hdr["size_x_slo"] or hdr["size_y_slo"]:
        check_shape(path, (hdr["size_y_slo"], hdr["size_x_slo"]), "SLO image")
    if not BSCAN_FIELDS_SIZE <= hdr["bscan_hdr_size"] <= MAX_BSCAN_HEADER:
        raise fail(
            path,
            f"corrupt header: B-scan header size {hdr['bscan_hdr_size']} is outside "
            f"{BSCAN_FIELDS_SIZE}..{MAX_BSCAN_HEADER}",
        )
    for key in ("scale_x", "scale_z"):
        if not (np.isfinite(hdr[key]) and 0 < hdr[key] < 1.0):
            raise fail(path, f"corrupt header: {key} = {hdr[key]!r} mm is not a plausible pixel size")
    if not (np.isfinite(hdr["distance"]) and 0 <= hdr["distance"] < 10.0):
        raise fail(path, f"corrupt header: B-scan distance {hdr['distance']!r} mm is not plausible")
    return hdr


def _read_exact(path: Path, fh: BinaryIO, n: int, what: str) -> bytes:
    raw = fh.read(n)
    if len(raw) != n:
        raise fail(path, f"file is truncated in {what}")
    return raw


def read_vol(path: str | os.PathLike) -> OctVolume:
    """Read a HEYEX ``.vol`` file (any scan pattern) as an :class:`OctVolume`.

    Returns
    -------
    OctVolume
        ``data`` float32 (n_bscans, SizeZ, SizeX) linear reflectivity in [0, 1]
        (``reflectivity='linear'``, shown as ``x ** 0.25``); ``scale_um`` = (Distance, ScaleZ,
        ScaleX) x 1000 (for a single B-scan, where Distance is 0, z repeats the lateral size so the
        scale stays complete; ``meta['z_spacing_known']`` says so); ``layers`` = device lines
        (ILM, BM, RNFL, ...) as float32 (n_bscans, SizeX) row positions, NaN where missing.

    Raises
    ------
    OctReadError
        Foreign bytes, truncation, absurd header values.
    """
    path = Path(path)
    size = require_file(path)
    with open(path, "rb") as fh:
        hdr = parse_header(path, fh.read(FILE_HEADER_SIZE))
        n, sz, sx = hdr["n_bscans"], hdr["size_z"], hdr["size_x"]
        slo_bytes = hdr["size_x_slo"] * hdr["size_y_slo"]
        per_bscan = hdr["bscan_hdr_size"] + sz * sx * 4
        needed = FILE_HEADER_SIZE + slo_bytes + n * per_bscan
        check_payload(path, needed, size)
        fh.seek(FILE_HEADER_SIZE + slo_bytes)
        data = np.empty((n, sz, sx), dtype=np.float32)
        lines: list[np.ndarray] = []
        positions = []
        quality = []
        for k in range(n):
            bhdr = _read_exact(path, fh, hdr["bscan_hdr_size"], f"the header of B-scan {k}")
            b = _BSCAN.unpack_from(bhdr, 0)
            if not _text(b[0]).startswith("HSF-BS-"):
                raise fail(path, f"corrupt B-scan {k}: header does not start with HSF-BS- ({b[0][:12]!r})")
            num_seg, off_seg = b[6], b[7]
            if num_seg > MAX_SEGMENTATIONS or off_seg + num_seg * sx * 4 > hdr["bscan_hdr_size"]:
                raise fail(
                    path,
                    f"corrupt B-scan {k}: {num_seg} device lines at offset {off_seg} "
                    f"do not fit its {hdr['bscan_hdr_size']}-byte header",
                )
            seg = np.frombuffer(bhdr, dtype="<f4", count=num_seg * sx, offset=off_seg).reshape(num_seg, sx)
            lines.append(seg)
            positions.append([float(v) for v in b[2:6]])
            quality.append(float(b[8]))
            raw = _read_exact(path, fh, sz * sx * 4, f"the image of B-scan {k}")
            data[k] = np.frombuffer(raw, dtype="<f4").reshape(sz, sx)
        trailing = size - fh.tell()

    invalid = ~np.isfinite(data) | (data >= MISSING)
    n_invalid = int(invalid.sum())
    if n_invalid:
        data[invalid] = 0.0
    layers = _device_lines(lines, n, sx)
    pattern = SCAN_PATTERNS.get(hdr["scan_pattern"], "unknown")
    z_known = n > 1 and hdr["distance"] > 0
    scale = (
        (hdr["distance"] if z_known else hdr["scale_x"]) * 1000.0,
        hdr["scale_z"] * 1000.0,
        hdr["scale_x"] * 1000.0,
    )
    laterality = hdr["scan_position"] if hdr["scan_position"] in ("OD", "OS") else None
    meta = {
        "source": str(path),
        "format": "heyex_vol",
        "device": "Heidelberg Spectralis",
        "version": hdr["version"],
        "scan_pattern_code": hdr["scan_pattern"],
        "z_spacing_known": bool(z_known),
        "exam_time": hdr["exam_time"],
        "visit_date": hdr["visit_date"],
        "scan_id": hdr["id"],
        "slo_shape": [hdr["size_y_slo"], hdr["size_x_slo"]],
        "bscan_header_size": hdr["bscan_hdr_size"],
        "bscan_positions_mm": positions if n <= 512 else None,
        "quality": quality if n <= 512 else None,
        "invalid_pixels": n_invalid,
        "trailing_bytes": int(trailing),
        "device_lines": sorted(layers),
    }
    return OctVolume(
        data=data,
        scale_um=scale,
        laterality=laterality,
        scan_pattern=pattern,
        reflectivity="linear",
        layers=layers,
        meta=meta,
    )


def _device_lines(lines: list[np.ndarray], n: int, width: int) -> dict[str, np.ndarray]:
    """Per-B-scan device lines -> name -> float32 (n_bscans, width), FLT_MAX -> NaN.

    B-scans may carry different numbers of lines; the missing ones are NaN.
    """
    n_lines = min(max((len(seg) for seg in lines), default=0), len(LINE_NAMES))
    out: dict[str, np.ndarray] = {}
    for i in range(n_lines):
        heights = np.full((n, width), np.nan, dtype=np.float32)
        for k, seg in enumerate(lines):
            if i < len(seg):
                heights[k] = seg[i]
        heights[~np.isfinite(heights) | (heights >= MISSING) | (heights < 0)] = np.nan
        out[LINE_NAMES[i]] = heights
    return out

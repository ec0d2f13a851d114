"""Identity columns for CSVs that pool across a cohort, and the boundary-surface CSV.

Every row of the per-A-scan, sector and surface CSVs starts with the same identity columns, so
the files of 200 subjects concatenate into one table a statistician can group by subject, eye and
layer, and trace each row to its file and model:

==================  ==========================================================================
column              meaning
==================  ==========================================================================
``subject``         subject/volume id: the scan's file stem (``S01.vol`` -> ``S01``)
``source_file``     the scan (or labels) file the numbers come from
``eye``             ``OD`` / ``OS``; empty when unknown
``scan_date``       acquisition date (ISO) when the file says; else empty
``scan_pattern``    ``volume``, ``line``, ``circle``, ``radial`` or ``unknown``
``model``           name (file stem) of the checkpoint that made the labels; empty for manual labels
``model_hash``      first 12 hex digits of that checkpoint's SHA-256
``fovea_bscan_um``  fovea (ETDRS centre) along the B-scan axis, µm from the first B-scan
``fovea_ascan_um``  fovea along the A-scan axis, µm from the first A-scan (empty without a grid or scale)
==================  ==========================================================================

Surface CSV (:func:`surfaces_csv_text`), long format: identity columns, then
``bscan,ascan,boundary,depth_px,depth_um``: the row of each of the 8 boundaries
(:data:`~napari_octseg.core.classes.BOUNDARY_NAMES`) per A-scan, in pixels from the top of the
B-scan and in µm (empty when the scale is unknown); an absent boundary leaves both empty.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .atomic import atomic_path, check_writable
from .classes import BOUNDARY_NAMES

IDENTITY_COLUMNS: tuple[str, ...] = (
    "subject",
    "source_file",
    "eye",
    "scan_date",
    "scan_pattern",
    "model",
    "model_hash",
    "fovea_bscan_um",
    "fovea_ascan_um",
)


@dataclass(frozen=True)
class ScanIdentity:
    """Who and what a measurement belongs to (see the module docstring for each field)."""

    subject: str = ""
    source_file: str = ""
    eye: str | None = None
    scan_date: str | None = None
    scan_pattern: str = "unknown"
    model: str | None = None
    model_hash: str | None = None
    fovea_bscan_um: float | None = None
    fovea_ascan_um: float | None = None

    def located(
        self, fovea_px: tuple[float, float] | None, scale_um: tuple[float, float, float] | None
    ) -> ScanIdentity:
        """A copy with the fovea position in µm (from (B-scan, A-scan) pixels and the scale)."""
        if fovea_px is None or scale_um is None:
            return replace(self, fovea_bscan_um=None, fovea_ascan_um=None)
        return replace(
            self, fovea_bscan_um=float(fovea_px[0]) * scale_um[0], fovea_ascan_um=float(fovea_px[1]) * scale_um[2]
        )

    def cells(self) -> list[str]:
        """The identity values as CSV text cells, in :data:`IDENTITY_COLUMNS` order."""
        out = []
        for name in IDENTITY_COLUMNS:
            value = getattr(self, name)
            if value is None:
                out.append("")
            elif isinstance(value, float):
                out.append(f"{value:.1f}" if np.isfinite(value) else "")
            else:
                out.append(str(value))
        return out

    def prefix(self) -> str:
        """The identity cells as the start of a CSV row (quoted where needed), ending with a comma."""
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(self.cells())
        return buf.getvalue() + ","


def as_identity(value: ScanIdentity | str | None) -> ScanIdentity:
    """A :class:`ScanIdentity` from an identity, a bare subject name, or ``None``."""
    if isinstance(value, ScanIdentity):
        return value
    return ScanIdentity(subject=value or "")


def identity_header() -> str:
    """The identity column names, comma-separated, ending with a comma."""
    return ",".join(IDENTITY_COLUMNS) + ","


def format_numbers(values: npt.ArrayLike, decimals: int) -> list[str]:
    """Numbers (flattened) as text with ``decimals`` places; NaN and infinities as an empty field."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    text = np.char.mod(f"%.{decimals}f", v)
    return [str(t) if ok else "" for t, ok in zip(text, np.isfinite(v))]


def surfaces_csv_text(
    boundaries: np.ndarray, scale_um: tuple[float, float, float] | None, identity: ScanIdentity | str | None = None
) -> str:
    """Boundary surfaces (8, n_bscans, width) rows in pixels -> long-format CSV text (see module docstring).

    Rows are ordered by B-scan, A-scan, then boundary (top to bottom).
    """
    b = np.asarray(boundaries, dtype=np.float32)
    if b.ndim != 3 or b.shape[0] != len(BOUNDARY_NAMES):
        raise ValueError(f"boundaries must be ({len(BOUNDARY_NAMES)}, n_bscans, width); got {b.shape}")
    _, n, width = b.shape
    stack = np.moveaxis(b, 0, -1).reshape(-1)  # (n, W, 8) flattened
    px = format_numbers(stack, 2)
    um = format_numbers(stack * np.float32(scale_um[1]), 2) if scale_um is not None else [""] * stack.size
    prefix = as_identity(identity).prefix()
    out = io.StringIO()
    out.write(identity_header() + "bscan,ascan,boundary,depth_px,depth_um\n")
    names = [f"{name}," for name in BOUNDARY_NAMES]
    k = 0
    for i in range(n):
        for j in range(width):
            row = f"{prefix}{i},{j},"
            for name in names:
                out.write(f"{row}{name}{px[k]},{um[k]}\n")
                k += 1
    return out.getvalue()


def export_surfaces_csv(
    boundaries: np.ndarray,
    path: str | os.PathLike,
    scale_um: tuple[float, float, float] | None,
    identity: ScanIdentity | str | None = None,
    force: bool = False,
) -> Path:
    """Write :func:`surfaces_csv_text` to ``path`` atomically; refuse to overwrite unless ``force``."""
    target = check_writable(path, force)
    text = surfaces_csv_text(boundaries, scale_um, identity)
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


__all__ = [
    "IDENTITY_COLUMNS",
    "ScanIdentity",
    "as_identity",
    "export_surfaces_csv",
    "identity_header",
    "surfaces_csv_text",
]

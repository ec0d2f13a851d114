"""Sector grids over thickness maps: the ETDRS grid (macular volumes) and TSNIT (circle scans).

Orientation conventions (Heidelberg Spectralis, as read by eyepy and our readers):

* **x (A-scan index) runs left to right on the fundus image** (SLO). On a fundus image, the optic
  disc of a right eye (OD) is on the right, so for OD **nasal is +x** and for OS nasal is -x.
* **B-scan 0 is the most inferior B-scan**; the index grows towards superior (eyepy places B-scan 0
  at the bottom of the localizer). ``bscan_order="superior_to_inferior"`` flips this for devices
  that scan the other way. The en-face maps keep the volume's own B-scan order (row 0 = B-scan 0),
  so in napari they line up with the volume; the grid's sector labels show where superior is.
* ETDRS: central circle 1 mm, inner ring 3 mm, outer ring 6 mm (diameters), centred on the fovea;
  inner and outer rings split into superior/nasal/inferior/temporal quadrants at 45 degrees. Sector
  names follow Heidelberg's export: C0, S1, N1, I1, T1 (inner), S2, N2, I2, T2 (outer); ``total``
  is the whole 6 mm disc and ``scan`` every measured A-scan of the volume.
* Circle scans: Spectralis starts the circle on the temporal meridian and runs clockwise in OD,
  counter-clockwise in OS, so A-scans are in T-S-N-I-T order for both eyes (A-scan 0 = temporal).
  Sectors (Garway-Heath, as the Spectralis printout): T 315-45 deg, TS 45-85, NS 85-125, N 125-235,
  NI 235-275, TI 275-315; ``G`` is the global mean. Several circles are pooled by angle.

A sector the scan covers less than ``min_coverage`` of (by area, for ETDRS; by A-scans, for TSNIT)
is reported with NaN mean and volume, never zero. Volume = mean thickness x nominal sector area, as
device software reports it; the ``scan`` row's volume is the sum over A-scans x A-scan footprint.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .fovea import find_fovea

ETDRS_SECTORS: tuple[str, ...] = ("C0", "S1", "N1", "I1", "T1", "S2", "N2", "I2", "T2")
ETDRS_RADII_UM: tuple[float, float, float] = (500.0, 1500.0, 3000.0)
TSNIT_SECTORS: tuple[str, ...] = ("T", "TS", "NS", "N", "NI", "TI")
#: Fraction of a sector that must be measured for its mean to be given (else NaN, shown as "–").
MIN_COVERAGE = 0.95
#: TSNIT sector edges in degrees from the temporal meridian, in scan order (T wraps around 0).
TSNIT_EDGES_DEG: tuple[float, ...] = (45.0, 85.0, 125.0, 235.0, 275.0, 315.0)
SECTOR_DESCRIPTIONS: dict[str, str] = {
    "C0": "central 1 mm",
    "S1": "inner superior",
    "N1": "inner nasal",
    "I1": "inner inferior",
    "T1": "inner temporal",
    "S2": "outer superior",
    "N2": "outer nasal",
    "I2": "outer inferior",
    "T2": "outer temporal",
    "total": "whole 6 mm grid",
    "scan": "every measured A-scan",
    "G": "global (whole circle)",
    "T": "temporal",
    "TS": "temporal superior",
    "NS": "nasal superior",
    "N": "nasal",
    "NI": "nasal inferior",
    "TI": "temporal inferior",
}
_COVERAGE_STEP_UM = 20.0
#: (superior, nasal) signs of the four diagonals that split the quadrants.
_DIAGONALS: tuple[tuple[int, int], ...] = ((1, 1), (1, -1), (-1, 1), (-1, -1))


@dataclass
class SectorRow:
    """One layer in one sector: mean thickness (map unit), volume in mm^3, A-scans, coverage 0-1."""

    layer: str
    sector: str
    mean: float
    volume_mm3: float
    n_ascans: int
    coverage: float


@dataclass
class SectorTable:
    """Sector statistics of every layer.

    Attributes
    ----------
    grid
        ``"etdrs"``, ``"tsnit"`` or ``"none"`` (only the whole-scan rows; ``note`` says why).
    unit
        Unit of ``mean``: ``"um"`` or ``"px"``.
    rows
        One :class:`SectorRow` per layer and sector.
    fovea
        Grid centre (B-scan, A-scan) in pixels (floats), or ``None``.
    note
        Human-readable remark (why no grid, which conventions were assumed).
    bscan_order
        Direction of increasing B-scan index (see :func:`etdrs_table`).
    """

    grid: str
    unit: str
    rows: list[SectorRow] = field(default_factory=list)
    fovea: tuple[float, float] | None = None
    laterality: str | None = None
    note: str = ""
    bscan_order: str = "inferior_to_superior"

    @property
    def sectors(self) -> list[str]:
        """Sector names in table order (without repeats)."""
        return list(dict.fromkeys(r.sector for r in self.rows))

    def get(self, layer: str, sector: str) -> SectorRow:
        """The row of ``layer`` in ``sector`` (KeyError if absent)."""
        for row in self.rows:
            if row.layer == layer and row.sector == sector:
                return row
        raise KeyError((layer, sector))


def _directions(laterality: str, bscan_order: str) -> tuple[float, float]:
    """Signs that turn +B-scan index into +superior and +A-scan index into +nasal."""
    if laterality not in ("OD", "OS"):
        raise InputError(f"laterality must be 'OD' or 'OS' to place nasal and temporal; got {laterality!r}")
    if bscan_order not in ("inferior_to_superior", "superior_to_inferior"):
        raise InputError(f"bscan_order must be 'inferior_to_superior' or 'superior_to_inferior'; got {bscan_order!r}")
    up = 1.0 if bscan_order == "inferior_to_superior" else -1.0
    nasal = 1.0 if laterality == "OD" else -1.0
    return up, nasal


def _etdrs_sector_of(up_um: np.ndarray, nasal_um: np.ndarray) -> np.ndarray:
    """ETDRS sector index (0..8 in ``ETDRS_SECTORS`` order, -1 outside 6 mm) of physical offsets."""
    r = np.hypot(up_um, nasal_um)
    # Quadrants in S, N, I, T order (as S1, N1, I1, T1), split on the 45-degree diagonals. Points
    # exactly on a diagonal go to superior/inferior, for OD and OS alike, so that flipping the eye
    # swaps nasal and temporal exactly.
    vertical = np.abs(up_um) >= np.abs(nasal_um)
    quad = np.where(vertical, np.where(up_um > 0, 0, 2), np.where(nasal_um > 0, 1, 3)).astype(np.int8)
    r0, r1, r2 = ETDRS_RADII_UM
    out = np.full(r.shape, -1, np.int8)
    out[r <= r2] = 5 + quad[r <= r2]
    out[r < r1] = 1 + quad[r < r1]
    out[r < r0] = 0
    return out


def etdrs_sector_map(
    shape: tuple[int, int],
    scale_um: tuple[float, float, float],
    fovea: tuple[float, float],
    laterality: str,
    bscan_order: str = "inferior_to_superior",
) -> np.ndarray:
    """ETDRS sector of every A-scan centre, int8 (n_bscans, width): index into ``ETDRS_SECTORS``, -1 outside."""
    up_sign, nasal_sign = _directions(laterality, bscan_order)
    n, width = shape
    up = (np.arange(n) - fovea[0])[:, None] * float(scale_um[0]) * up_sign
    nasal = (np.arange(width) - fovea[1])[None, :] * float(scale_um[2]) * nasal_sign
    return _etdrs_sector_of(np.broadcast_to(up, shape), np.broadcast_to(nasal, shape))


def _sector_areas_mm2() -> np.ndarray:
    r0, r1, r2 = (r / 1000.0 for r in ETDRS_RADII_UM)
    inner = np.pi * (r1**2 - r0**2) / 4
    outer = np.pi * (r2**2 - r1**2) / 4
    return np.array([np.pi * r0**2] + [inner] * 4 + [outer] * 4)


def _etdrs_coverage(
    valid: np.ndarray,
    scale_um: tuple[float, float, float],
    fovea: tuple[float, float],
    up_sign: float,
    nasal_sign: float,
) -> np.ndarray:
    """Fraction of each ETDRS sector's area (and, last, of the whole disc) on a measured A-scan.

    Points every 20 µm over the 6 mm disc each fall in the footprint of the nearest A-scan
    (± half a spacing); a point is covered when that A-scan lies in the scan and is measured.
    """
    r2 = ETDRS_RADII_UM[2]
    g = np.arange(-r2, r2 + _COVERAGE_STEP_UM / 2, _COVERAGE_STEP_UM)
    up, nasal = np.meshgrid(g, g, indexing="ij")
    sector = _etdrs_sector_of(up, nasal)
    inside = sector >= 0
    up, nasal, sector = up[inside], nasal[inside], sector[inside]
    i = np.rint(fovea[0] + up * up_sign / float(scale_um[0])).astype(np.int64)
    j = np.rint(fovea[1] + nasal * nasal_sign / float(scale_um[2])).astype(np.int64)
    n, width = valid.shape
    in_scan = (i >= 0) & (i < n) & (j >= 0) & (j < width)
    covered = np.zeros(i.shape, bool)
    covered[in_scan] = valid[i[in_scan], j[in_scan]]
    total = np.bincount(sector, minlength=9).astype(np.float64)
    hit = np.bincount(sector, weights=covered, minlength=9)
    return np.append(hit / total, covered.mean())


def _scan_row(layer: str, values: np.ndarray, scale_um: tuple[float, float, float] | None) -> SectorRow:
    """Whole-scan statistics; volume only for a volume scan with a known scale (sum x footprint)."""
    finite = np.isfinite(values)
    n = int(finite.sum())
    mean = float(values[finite].astype(np.float64).mean()) if n else float("nan")
    volume = float("nan")
    if scale_um is not None and values.shape[0] > 1 and n:
        volume = float(values[finite].astype(np.float64).sum()) * float(scale_um[0]) * float(scale_um[2]) * 1e-9
    return SectorRow(layer, "scan", mean, volume, n, n / values.size)


def etdrs_table(
    maps: dict[str, np.ndarray],
    scale_um: tuple[float, float, float],
    laterality: str,
    fovea: tuple[float, float],
    min_coverage: float = MIN_COVERAGE,
    bscan_order: str = "inferior_to_superior",
) -> SectorTable:
    """ETDRS statistics of every thickness map.

    Parameters
    ----------
    maps
        Layer name -> (n_bscans, width) thickness in µm, NaN = not measured.
    scale_um
        (z, y, x) pixel spacing in µm.
    laterality
        ``"OD"`` or ``"OS"`` (decides which side is nasal).
    fovea
        Grid centre (B-scan, A-scan) in pixels.
    min_coverage
        Sectors whose area is measured less than this fraction get NaN mean and volume.
    bscan_order
        ``"inferior_to_superior"`` (Spectralis, Cirrus: B-scan 0 is inferior) or the reverse.

    Returns
    -------
    SectorTable
        Rows for C0..T2, ``total`` (6 mm disc) and ``scan`` per layer; mean in µm, volume in mm^3.
    """
    up_sign, nasal_sign = _directions(laterality, bscan_order)
    first = next(iter(maps.values()))
    sectors = etdrs_sector_map(first.shape, scale_um, fovea, laterality, bscan_order)
    areas = np.append(_sector_areas_mm2(), np.pi * (ETDRS_RADII_UM[2] / 1000.0) ** 2)
    names = ETDRS_SECTORS + ("total",)
    rows: list[SectorRow] = []
    for layer, values in maps.items():
        valid = np.isfinite(values)
        coverage = _etdrs_coverage(valid, scale_um, fovea, up_sign, nasal_sign)
        use = valid & (sectors >= 0)
        ids = sectors[use].astype(np.int64)
        vals = values[use].astype(np.float64)
        counts = np.append(np.bincount(ids, minlength=9), ids.size)
        sums = np.append(np.bincount(ids, weights=vals, minlength=9), vals.sum())
        for s, name in enumerate(names):
            ok = counts[s] > 0 and coverage[s] >= min_coverage
            mean = sums[s] / counts[s] if ok else float("nan")
            rows.append(
                SectorRow(layer, name, float(mean), float(mean * 1e-3 * areas[s]), int(counts[s]), float(coverage[s]))
            )
        rows.append(_scan_row(layer, values, scale_um))
    return SectorTable(
        "etdrs",
        "um",
        rows,
        fovea=(float(fovea[0]), float(fovea[1])),
        laterality=laterality,
        note=f"ETDRS grid centred on B-scan {fovea[0]:.0f}, A-scan {fovea[1]:.0f}; "
        f"{'nasal = +x' if nasal_sign > 0 else 'nasal = -x'} ({laterality}); "
        f"B-scan order {bscan_order.replace('_', ' ')}",
        bscan_order=bscan_order,
    )


def tsnit_sector_map(width: int) -> np.ndarray:
    """TSNIT sector of each A-scan of a circle scan, int8 (width,): index into ``TSNIT_SECTORS``."""
    angle = (np.arange(width) + 0.5) * 360.0 / width  # A-scan centres, from the temporal meridian
    idx = np.searchsorted(np.asarray(TSNIT_EDGES_DEG), angle, side="right")
    return np.where(idx == len(TSNIT_EDGES_DEG), 0, idx).astype(np.int8)  # past 315 deg: T again


def tsnit_table(maps: dict[str, np.ndarray], unit: str, min_coverage: float = MIN_COVERAGE) -> SectorTable:
    """Peripapillary (TSNIT) statistics of circle-scan thickness maps (n_circles, width).

    Mean per sector over all circles; volume is not defined for a circle (NaN). A sector with fewer
    than ``min_coverage`` of its A-scans measured gets a NaN mean.
    """
    rows: list[SectorRow] = []
    first = next(iter(maps.values()))
    sector = np.broadcast_to(tsnit_sector_map(first.shape[1])[None, :], first.shape)
    for layer, values in maps.items():
        valid = np.isfinite(values)
        for s, name in [(-1, "G")] + list(enumerate(TSNIT_SECTORS)):
            inside = np.ones(values.shape, bool) if s < 0 else sector == s
            n = int((valid & inside).sum())
            coverage = n / max(int(inside.sum()), 1)
            mean = (
                float(values[valid & inside].astype(np.float64).mean())
                if n and coverage >= min_coverage
                else float("nan")
            )
            rows.append(SectorRow(layer, name, mean, float("nan"), n, coverage))
    return SectorTable(
        "tsnit",
        unit,
        rows,
        note="circle scan: A-scans taken in T-S-N-I-T order from the "
        "temporal meridian (Spectralis convention, both eyes)",
    )


def etdrs_unavailable(
    n_bscans: int, scale_um: tuple[float, float, float] | None, scan_pattern: str, laterality: str | None
) -> str:
    """Why a scan gets no ETDRS grid (empty string when it does, or when it is a circle scan)."""
    if scan_pattern == "circle":
        return ""
    if n_bscans == 1 or scan_pattern == "line":
        return "single B-scan (line scan): the ETDRS grid needs a volume"
    if scan_pattern == "radial":
        return "radial scans: the ETDRS grid is computed for raster volumes only"
    if scale_um is None or float(scale_um[0]) <= 0 or float(scale_um[2]) <= 0:
        return "pixel spacing unknown: the ETDRS grid needs the scale in µm"
    if laterality not in ("OD", "OS"):
        return "laterality unknown: the ETDRS grid needs OD or OS to place nasal and temporal"
    return ""


def sector_table(
    maps: dict[str, np.ndarray],
    unit: str,
    scale_um: tuple[float, float, float] | None,
    scan_pattern: str,
    laterality: str | None,
    inner_thickness: np.ndarray | None = None,
    fovea: tuple[float, float] | None = None,
    min_coverage: float = MIN_COVERAGE,
    bscan_order: str = "inferior_to_superior",
) -> SectorTable:
    """The grid that suits the scan: ETDRS for a volume, TSNIT for a circle, none for a line.

    Parameters
    ----------
    maps
        Layer name -> (n_bscans, width) thickness map in ``unit``.
    unit
        ``"um"`` or ``"px"``.
    scale_um, scan_pattern, laterality
        From the volume; a volume needs all three for ETDRS.
    inner_thickness
        (n_bscans, width) inner retinal thickness to find the fovea when ``fovea`` is ``None``.
    fovea
        (B-scan, A-scan) grid centre set by the user, or ``None`` to find it.

    Returns
    -------
    SectorTable
        With ``grid="none"`` and a ``note`` (and whole-scan rows only) when no grid applies.
    """
    if scan_pattern == "circle":
        return tsnit_table(maps, unit, min_coverage)
    scan_rows = [_scan_row(layer, values, scale_um) for layer, values in maps.items()]
    first = next(iter(maps.values()))
    reason = etdrs_unavailable(first.shape[0], scale_um, scan_pattern, laterality)
    if reason:
        return SectorTable("none", unit, scan_rows, note=f"ETDRS not applicable: {reason}")
    assert scale_um is not None and laterality is not None
    if fovea is None:
        if inner_thickness is None:
            raise InputError("the fovea is not set and no inner retinal thickness was given to find it")
        fovea = find_fovea(inner_thickness, scale_um)
    return etdrs_table(maps, scale_um, laterality, fovea, min_coverage, bscan_order)

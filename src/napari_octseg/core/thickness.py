"""Layer thickness from a label volume: per-A-scan values, en-face maps, sector grids, CSV export.

Thickness of layer ``k`` (class ``k + 1``) = (boundary ``k + 1`` - boundary ``k``) x ``scale_um[1]``;
``total retina`` = (BM - ILM) x ``scale_um[1]`` and counts fluid; ``fluid`` = fluid pixels in the
A-scan x ``scale_um[1]``. Each fluid pixel also belongs to the layer it sits in (see
:mod:`~napari_octseg.core.boundaries`), so the seven layers add up to the total retina exactly.
Without a scale every value is in pixels and the unit says ``px`` (never a silent 1.0).

CSV layout: two files, both with a header row, missing values left empty. Each row starts with the
identity columns of :mod:`~napari_octseg.core.tables` (``subject,source_file,eye,scan_date,
scan_pattern,model,model_hash,fovea_bscan_um,fovea_ascan_um``), so the files of many subjects
concatenate into one table; then

* per A-scan, long format: ``bscan,ascan,layer,thickness_um`` (``thickness_px`` when the scale is
  unknown), one row per A-scan and layer, ordered by B-scan, A-scan, then layer;
* sectors: ``layer,sector,mean_um,volume_mm3,n_ascans,coverage`` (``mean_px`` when unscaled): the
  ETDRS or TSNIT sectors plus the ``total`` (6 mm disc) and ``scan`` (every measured A-scan) rows.
  ``coverage`` (0-1) explains NaN means: the sector was measured less than the required fraction.

When the segmentation's per-B-scan quality is known (:mod:`napari_octseg.quality`), both files get a last
column ``quality``: in the per-A-scan file the quality (0-1) of the row's B-scan, in the sector file the
mean quality of the volume's B-scans, so rows from B-scans that should not be trusted can be filtered.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .atomic import atomic_paths, check_writable
from .boundaries import LabelSurfaces, measure_labels
from .classes import CLASS_NAMES, LAYER_CLASSES
from .errors import InputError
from .etdrs import SectorTable, sector_table
from .progress import CancelCheck, Progress, cancellable, run_generator
from .tables import ScanIdentity, as_identity, format_numbers, identity_header

TOTAL_RETINA = "total retina"
FLUID = "fluid"
#: Every quantity measured per A-scan, in CSV and display order.
THICKNESS_LAYERS: tuple[str, ...] = tuple(CLASS_NAMES[c] for c in LAYER_CLASSES) + (TOTAL_RETINA, FLUID)


@dataclass
class ThicknessMaps:
    """En-face thickness maps of a label volume.

    Attributes
    ----------
    maps
        Layer name (``THICKNESS_LAYERS``) -> float32 (n_bscans, width) thickness in ``unit``, NaN where
        not measured.
    unit
        ``"um"`` when ``scale_um`` is known, else ``"px"``.
    scale_um
        (z, y, x) pixel spacing in µm, or ``None``.
    boundaries
        float32 (8, n_bscans, width) boundary rows in pixels.
    fluid_px
        float32 (n_bscans, width) fluid pixels per A-scan.
    """

    maps: dict[str, np.ndarray]
    unit: str
    scale_um: tuple[float, float, float] | None
    boundaries: npt.NDArray[np.float32]
    fluid_px: npt.NDArray[np.float32]

    @property
    def shape(self) -> tuple[int, int]:
        """(n_bscans, width) of every map."""
        n, width = self.fluid_px.shape
        return int(n), int(width)

    def inner_retina(self) -> np.ndarray:
        """ILM to OPL/ONL thickness (n_bscans, width), in ``unit``: thinnest at the foveal pit."""
        return self.boundaries[4, ...] - self.boundaries[0, ...]

    def fluid_volume_mm3(self) -> float:
        """Fluid in the whole scan: voxels x voxel volume in mm^3 (NaN without a scale or for one B-scan)."""
        if self.scale_um is None or self.shape[0] < 2:
            return float("nan")
        z, y, x = self.scale_um
        return float(np.nansum(self.fluid_px, dtype=np.float64)) * z * y * x * 1e-9


@dataclass
class ThicknessReport:
    """Everything the thickness tools show and export: maps plus the sector table."""

    thickness: ThicknessMaps
    sectors: SectorTable


def _check_scale(scale_um: tuple[float, float, float] | None) -> tuple[float, float, float] | None:
    if scale_um is None:
        return None
    scale = tuple(float(s) for s in scale_um)
    if len(scale) != 3 or not all(np.isfinite(scale)) or scale[1] <= 0 or min(scale) < 0:
        raise InputError(f"scale must be three non-negative (z, y, x) values in µm with y > 0; got {scale_um}")
    return scale[0], scale[1], scale[2]


def maps_from_surfaces(surfaces: LabelSurfaces, scale_um: tuple[float, float, float] | None) -> ThicknessMaps:
    """Thickness maps from boundary surfaces (see :func:`thickness_maps`)."""
    scale = _check_scale(scale_um)
    factor = np.float32(scale[1]) if scale is not None else np.float32(1.0)
    b = surfaces.boundaries
    maps: dict[str, np.ndarray] = {}
    for k, c in enumerate(LAYER_CLASSES):
        maps[CLASS_NAMES[c]] = (b[k + 1] - b[k]) * factor
    maps[TOTAL_RETINA] = (b[-1] - b[0]) * factor
    maps[FLUID] = surfaces.fluid_px * factor
    return ThicknessMaps(maps, "um" if scale is not None else "px", scale, b, surfaces.fluid_px)


def iter_thickness(
    labels: np.ndarray, scale_um: tuple[float, float, float] | None = None, cancel: CancelCheck | None = None
) -> Generator[Progress, None, ThicknessMaps]:
    """Generator form of :func:`thickness_maps` (yields B-scan progress; ``cancel`` as in :func:`analyse`)."""
    scale = _check_scale(scale_um)
    surfaces = yield from cancellable(measure_labels(labels), cancel, "thickness cancelled")
    return maps_from_surfaces(surfaces, scale)


def thickness_maps(labels: np.ndarray, scale_um: tuple[float, float, float] | None = None) -> ThicknessMaps:
    """Per-A-scan thickness of every layer, total retina and fluid.

    Parameters
    ----------
    labels
        Integer labels (depth, width) or (n_bscans, depth, width), classes 0..9.
    scale_um
        (z, y, x) pixel spacing in µm, or ``None`` for values in pixels.

    Returns
    -------
    ThicknessMaps
        ``maps[layer]`` float32 (n_bscans, width) in µm (``unit="um"``) or pixels (``unit="px"``).

    Raises
    ------
    LabelError
        Invalid labels.
    InputError
        Invalid scale.
    """
    return run_generator(iter_thickness(labels, scale_um))


def analyse(
    labels: np.ndarray,
    scale_um: tuple[float, float, float] | None = None,
    laterality: str | None = None,
    scan_pattern: str = "unknown",
    fovea: tuple[float, float] | None = None,
    min_coverage: float = 0.95,
    bscan_order: str = "inferior_to_superior",
    cancel: CancelCheck | None = None,
) -> Generator[Progress, None, ThicknessReport]:
    """Thickness maps and the sector grid that suits the scan, as a progress generator.

    Parameters
    ----------
    labels
        Integer labels (n_bscans, depth, width) (or one B-scan), classes 0..9.
    scale_um
        (z, y, x) µm, or ``None`` (values in pixels; no ETDRS grid).
    laterality
        ``"OD"``/``"OS"``/``None``; the ETDRS grid needs it.
    scan_pattern
        ``"volume"``/``"unknown"`` (ETDRS), ``"circle"`` (TSNIT), ``"line"`` (no grid).
    fovea
        (B-scan, A-scan) grid centre, or ``None`` to find the thinnest inner retina near the centre.
    min_coverage, bscan_order
        See :func:`napari_octseg.core.etdrs.etdrs_table`.
    cancel
        Polled after every chunk of B-scans; returning ``True`` raises
        :class:`~napari_octseg.core.errors.Cancelled`.

    Yields
    ------
    Progress
        B-scans measured, then a final ``"sectors"`` step.

    Returns
    -------
    ThicknessReport
    """
    if fovea is not None and not all(np.isfinite(fovea)):
        raise InputError(f"fovea must be two finite numbers (B-scan, A-scan); got {fovea}")
    check_scale(scale_um)
    if fovea is not None:
        n, _, width = np.shape(labels)[-3:] if np.ndim(labels) == 3 else (1, *np.shape(labels))
        if not (0 <= fovea[0] <= n - 1 and 0 <= fovea[1] <= width - 1):
            raise InputError(
                f"fovea ({fovea[0]:g}, {fovea[1]:g}) lies outside the scan (B-scans 0..{n - 1}, A-scans 0..{width - 1})"
            )
    thickness = yield from iter_thickness(labels, scale_um, cancel)
    table = sector_table(
        thickness.maps,
        thickness.unit,
        thickness.scale_um,
        scan_pattern,
        laterality,
        inner_thickness=thickness.inner_retina(),
        fovea=fovea,
        min_coverage=min_coverage,
        bscan_order=bscan_order,
    )
    n = thickness.shape[0]
    yield Progress(n, n, "sectors")
    return ThicknessReport(thickness, table)


def _check_quality(quality: np.ndarray | None, n_bscans: int) -> np.ndarray | None:
    if quality is None:
        return None
    q = np.asarray(quality, dtype=np.float64).reshape(-1)
    if q.shape != (n_bscans,):
        raise InputError(f"quality must have one value per B-scan ({n_bscans}); got {q.shape[0]}")
    return q


def ascan_csv_text(
    thickness: ThicknessMaps, identity: ScanIdentity | str | None = None, quality: np.ndarray | None = None
) -> str:
    """Per-A-scan long-format CSV (identity columns, then ``bscan,ascan,layer,thickness_<unit>[,quality]``).

    ``identity`` may be a bare subject name; ``quality``: float (n_bscans,) per-B-scan quality in [0, 1], or
    ``None`` (no column).
    """
    prefix0 = as_identity(identity).prefix()
    n, width = thickness.shape
    stack = np.stack([thickness.maps[name] for name in THICKNESS_LAYERS], axis=-1)  # (n, W, L)
    values = format_numbers(stack.reshape(-1), 3)
    n_layers = len(THICKNESS_LAYERS)
    q = _check_quality(quality, n)
    suffix = [""] * n if q is None else ["," + v for v in format_numbers(q, 4)]
    out = io.StringIO()
    out.write(
        f"{identity_header()}bscan,ascan,layer,thickness_{thickness.unit}" + ("" if q is None else ",quality") + "\n"
    )
    prefixes = [f"{prefix0}{b},{a}," for b in range(n) for a in range(width)]
    layer_cells = [f"{name}," for name in THICKNESS_LAYERS]
    for p, prefix in enumerate(prefixes):
        base = p * n_layers
        end = suffix[p // width] + "\n"
        for li in range(n_layers):
            out.write(prefix + layer_cells[li] + values[base + li] + end)
    return out.getvalue()


def sector_csv_text(
    table: SectorTable, identity: ScanIdentity | str | None = None, quality: np.ndarray | None = None
) -> str:
    """Sector CSV (identity columns, then ``layer,sector,mean_<unit>,volume_mm3,n_ascans,coverage[,quality]``).

    ``quality``: float (n_bscans,) per-B-scan quality; the column holds its mean (the volume's summary).
    """
    prefix = as_identity(identity).prefix()
    header = f"{identity_header()}layer,sector,mean_{table.unit},volume_mm3,n_ascans,coverage"
    end = ""
    if quality is not None and np.size(quality):
        header += ",quality"
        end = "," + format_numbers(np.array([np.mean(np.asarray(quality, dtype=np.float64))]), 4)[0]
    lines = [header]
    for r in table.rows:
        mean, vol, cov = format_numbers(np.array([r.mean, r.volume_mm3, r.coverage]), 6)
        lines.append(f"{prefix}{r.layer},{r.sector},{mean},{vol},{r.n_ascans},{cov}{end}")
    return "\n".join(lines) + "\n"


#: Largest accepted pixel spacing (µm): 10 cm, far above any OCT scan's.
MAX_SCALE_UM = 1e5


def check_scale(scale_um: tuple[float, float, float] | None) -> None:
    """Refuse a pixel spacing that is not three finite numbers in (0, :data:`MAX_SCALE_UM`] µm."""
    if scale_um is None:
        return
    values = tuple(scale_um)
    if len(values) != 3 or not all(isinstance(v, (int, float, np.floating, np.integer)) for v in values):
        raise InputError(f"pixel spacing must be three numbers (z, y, x) in µm; got {values!r}")
    # z may be 0: the B-scan spacing of a single line or circle scan does not apply
    z_ok = math.isfinite(float(values[0])) and 0 <= float(values[0]) <= MAX_SCALE_UM
    if not z_ok or not all(math.isfinite(float(v)) and 0 < float(v) <= MAX_SCALE_UM for v in values[1:]):
        raise InputError(
            f"pixel spacing {tuple(float(v) for v in values)} µm is not usable: axial and lateral must be above 0, "
            f"each at most {MAX_SCALE_UM:g} µm"
        )


def export_csv(
    report: ThicknessReport,
    ascan_path: str | os.PathLike[str],
    sector_path: str | os.PathLike[str] | None = None,
    volume_name: str = "volume",
    force: bool = False,
    identity: ScanIdentity | None = None,
    quality: np.ndarray | None = None,
) -> list[Path]:
    """Write the per-A-scan CSV (and the sector CSV) atomically.

    ``quality`` (float (n_bscans,), or ``None``) adds the ``quality`` column to both files.

    ``identity`` fills the identity columns (its fovea is set from the report's grid); without it
    the subject column holds ``volume_name`` and the others are empty.

    Both paths are checked before anything is written: an existing file (without ``force``) or the
    same path twice raises and leaves every file untouched.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    OctsegError
        A target exists and ``force`` is false.
    InputError
        Both paths are the same file.
    """
    targets = [Path(ascan_path)] + ([Path(sector_path)] if sector_path is not None else [])
    if len(targets) == 2 and targets[0].resolve() == targets[1].resolve():
        raise InputError(f"the per-A-scan and the sector CSV must be two different files; both are {targets[0]}")
    for target in targets:
        check_writable(target, force)
    who = as_identity(identity or volume_name).located(report.sectors.fovea, report.thickness.scale_um)
    quality = _check_quality(quality, report.thickness.shape[0])
    texts = [ascan_csv_text(report.thickness, who, quality)]
    if sector_path is not None:
        texts.append(sector_csv_text(report.sectors, who, quality))
    with atomic_paths(*targets, overwrite=force) as temporaries:
        for tmp, text in zip(temporaries, texts):
            tmp.write_text(text, encoding="utf-8")
    return targets

"""Boundary surfaces as polylines, one per B-scan and gap-free run: what a viewer draws over the B-scans.

A surface is a height map (n_bscans, width) of rows in pixels, NaN where absent
(:func:`napari_octseg.core.boundaries.boundaries`, the device lines of a ``.vol``). Its polyline on
B-scan ``i`` has vertices ``(i, row + row_offset, column)`` in pixels; a NaN splits it into several.
Vertices where the line goes straight on are dropped (the drawn line is the same, with far fewer
vertices to triangulate), so a path's rows at the surface's columns are recovered exactly by linear
interpolation between its vertices.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .boundaries import boundaries
from .classes import BOUNDARY_NAMES, CLASS_COLORS

#: RGBA colour (0-1) of each boundary of ``BOUNDARY_NAMES``: that of the layer class just below it
#: (boundary ``k`` is the top edge of class ``k + 1``, as in the class legend); BM, above the uncoloured
#: choroid, is violet, a colour no class has.
BOUNDARY_COLORS: tuple[tuple[float, float, float, float], ...] = (
    *(CLASS_COLORS[k + 1] for k in range(len(BOUNDARY_NAMES) - 1)),
    (0.58, 0.40, 1.00, 1.0),
)

#: RGB colour (0-1) of the lines a device stored with the scan (HEYEX ``.vol`` ILM, BM...), drawn as they
#: are, beside the boundaries of the labels: light lime and ultramarine, at least 0.5 apart in RGB from
#: every class colour and every boundary colour (gold and cyan, used before, read as INL and RPE).
DEVICE_LINE_COLORS: dict[str, tuple[float, float, float]] = {
    "ILM": (0.65, 1.00, 0.50),
    "BM": (0.15, 0.00, 1.00),
}
#: Colours of any other device line (RNFL, ...), in turn: each as far as the grid allowed from the class,
#: boundary and ILM/BM device colours (at least 0.47 in RGB), and dark enough or bright enough to see.
DEVICE_LINE_EXTRA_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.90, 0.60, 0.65),
    (0.50, 1.00, 0.00),
    (0.40, 0.15, 0.55),
    (0.30, 0.15, 0.00),
    (0.00, 1.00, 0.00),
    (0.00, 0.30, 0.35),
)

#: Row offset that puts a label-derived boundary on the edge between two pixels when pixel ``r`` is
#: drawn centred on ``r`` (napari): boundary ``b`` is the top edge of row ``b``.
PIXEL_EDGE_OFFSET = -0.5


@dataclass
class SurfacePaths:
    """Polylines of surfaces.

    Attributes
    ----------
    vertices
        One float32 (m, 3) array per path, m >= 2: (B-scan, row, column) in pixels, columns increasing.
    surface
        int (n_paths,): index of the surface (first axis of the input) each path belongs to.
    bscan
        int (n_paths,): B-scan of each path.
    """

    vertices: list[np.ndarray]
    surface: np.ndarray
    bscan: np.ndarray


def finite_runs(row: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index ranges of consecutive finite values in the 1-D array ``row``."""
    finite = np.concatenate([[False], np.isfinite(row), [False]])
    edges = np.flatnonzero(np.diff(finite.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def _turning_points(rows: np.ndarray) -> np.ndarray:
    """Indices of ``rows`` (unit column steps) where the line bends, plus both ends."""
    if rows.size <= 2:
        return np.arange(rows.size)
    bends = np.flatnonzero(np.abs(np.diff(rows, 2)) > 1e-6) + 1
    return np.concatenate([[0], bends, [rows.size - 1]])


def surface_paths(surfaces: np.ndarray, row_offset: float = 0.0) -> SurfacePaths:
    """Polylines of every surface on every B-scan.

    Parameters
    ----------
    surfaces
        (n_surfaces, n_bscans, width) rows in pixels, NaN where absent (e.g. the 8 boundaries).
    row_offset
        Added to every row (``PIXEL_EDGE_OFFSET`` draws label-derived boundaries on pixel edges).

    Returns
    -------
    SurfacePaths
        Paths ordered by surface, then B-scan, then column; runs of a single A-scan are left out.
    """
    s = np.asarray(surfaces, dtype=np.float32)
    if s.ndim != 3:
        raise ValueError(f"surfaces must be (n_surfaces, n_bscans, width); got shape {s.shape}")
    vertices: list[np.ndarray] = []
    surface: list[int] = []
    bscan: list[int] = []
    for k in range(s.shape[0]):
        for i in range(s.shape[1]):
            row = s[k, i]
            for start, stop in finite_runs(row):
                if stop - start < 2:
                    continue
                keep = _turning_points(row[start:stop]) + start
                cols = keep.astype(np.float32)
                vertices.append(np.column_stack([np.full_like(cols, i), row[keep] + np.float32(row_offset), cols]))
                surface.append(k)
                bscan.append(i)
    return SurfacePaths(vertices, np.asarray(surface, dtype=int), np.asarray(bscan, dtype=int))


def boundary_paths(labels: np.ndarray, bscans: Iterable[int] | None = None) -> SurfacePaths:
    """Paths of the 8 boundaries of ``labels`` on some of its B-scans, drawn on pixel edges.

    The boundaries of an A-scan depend on that A-scan alone, so the paths of B-scan ``i`` are the
    same whether the whole volume or B-scan ``i`` alone is measured: after an edit, only the edited
    B-scans need measuring again.

    Parameters
    ----------
    labels
        Integer labels (depth, width) or (n_bscans, depth, width) in the 10-class scheme.
    bscans
        Indices of the B-scans to measure (default: all).

    Returns
    -------
    SurfacePaths
        Paths (vertices (B-scan, row, column) in pixels of the whole volume, rows ``boundary - 0.5``)
        ordered by boundary, then B-scan, then column.

    Raises
    ------
    LabelError
        Labels outside the class scheme.
    IndexError
        A B-scan index outside the volume.
    """
    lab = np.asarray(labels)
    lab = lab[None] if lab.ndim == 2 else lab
    if bscans is None:
        idx = np.arange(lab.shape[0])
        part = lab
    else:
        idx = np.unique(np.fromiter(bscans, dtype=np.intp))
        if idx.size and (idx[0] < 0 or idx[-1] >= lab.shape[0]):
            raise IndexError(f"B-scans {idx.tolist()} outside 0..{lab.shape[0] - 1}")
        if idx.size == 0:
            return SurfacePaths([], np.zeros(0, dtype=int), np.zeros(0, dtype=int))
        part = lab[idx]  # copies only these B-scans
    paths = surface_paths(boundaries(part), row_offset=PIXEL_EDGE_OFFSET)
    for v, i in zip(paths.vertices, paths.bscan):
        v[:, 0] = idx[i]
    return SurfacePaths(paths.vertices, paths.surface, idx[paths.bscan].astype(int))


def bscan_digests(labels: np.ndarray) -> np.ndarray:
    """CRC-32 of every B-scan of ``labels`` (depth, width) or (n_bscans, depth, width): uint32 (n_bscans,).

    Cheap (about 0.4 ms per MB) change detection: B-scans whose digest changed were edited.
    """
    lab = np.asarray(labels)
    lab = lab[None] if lab.ndim == 2 else lab
    return np.fromiter((zlib.crc32(np.ascontiguousarray(b).data) for b in lab), dtype=np.uint32, count=len(lab))


__all__ = [
    "BOUNDARY_COLORS",
    "DEVICE_LINE_COLORS",
    "DEVICE_LINE_EXTRA_COLORS",
    "PIXEL_EDGE_OFFSET",
    "SurfacePaths",
    "boundary_paths",
    "bscan_digests",
    "finite_runs",
    "surface_paths",
]

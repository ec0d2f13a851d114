"""Regions a Grad-CAM question is asked about (Seg-Grad-CAM): a rectangle, a polygon or a label's pixels.

Every helper returns a bool mask (n_bscans, depth, width) holding the region in exactly one B-scan and
raises one :class:`InputError` line for a region outside the image, an empty one or a B-scan that does
not exist. Coordinates are pixels of the volume: row (depth) ``y`` from the top, column ``x`` from the left.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.errors import InputError

Shape3 = tuple[int, int, int]


def _check_bscan(bscan: int, shape: Shape3) -> int:
    b = int(bscan)
    if not 0 <= b < shape[0]:
        raise InputError(f"region: B-scan {b} does not exist (the volume has B-scans 0..{shape[0] - 1})")
    return b


def rectangle_mask(shape: Shape3, bscan: int, y0: float, x0: float, y1: float, x1: float) -> np.ndarray:
    """The pixels ``y0 <= row < y1``, ``x0 <= column < x1`` of one B-scan (corners in either order).

    Parameters
    ----------
    shape
        (n_bscans, depth, width) of the volume.
    bscan, y0, x0, y1, x1
        B-scan index and two opposite corners in pixels (fractions are rounded to the nearest pixel edge).

    Raises
    ------
    InputError
        A B-scan that does not exist, a corner outside ``0..depth`` x ``0..width``, or an empty rectangle.
    """
    b = _check_bscan(bscan, shape)
    _, depth, width = shape
    ys = sorted((round(float(y0)), round(float(y1))))
    xs = sorted((round(float(x0)), round(float(x1))))
    if ys[0] < 0 or xs[0] < 0 or ys[1] > depth or xs[1] > width:
        raise InputError(
            f"region: rows {ys[0]}..{ys[1]}, columns {xs[0]}..{xs[1]} lie outside the {depth} x {width} B-scan"
        )
    if ys[0] == ys[1] or xs[0] == xs[1]:
        raise InputError(f"region: rows {ys[0]}..{ys[1]}, columns {xs[0]}..{xs[1]} is empty")
    mask = np.zeros(shape, dtype=bool)
    mask[b, ys[0] : ys[1], xs[0] : xs[1]] = True
    return mask


def polygon_mask(shape: Shape3, bscan: int, vertices: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """The pixels inside a polygon (vertices (n, 2) as (row, column)) of one B-scan.

    Raises
    ------
    InputError
        Fewer than 3 vertices, a vertex outside the B-scan, a B-scan that does not exist, or no pixel inside.
    """
    from skimage.draw import polygon

    b = _check_bscan(bscan, shape)
    _, depth, width = shape
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3 or not np.isfinite(v).all():
        raise InputError("region: a polygon needs at least 3 finite (row, column) vertices")
    if v[:, 0].min() < -0.5 or v[:, 1].min() < -0.5 or v[:, 0].max() > depth - 0.5 or v[:, 1].max() > width - 0.5:
        raise InputError(f"region: the polygon reaches outside the {depth} x {width} B-scan")
    rr, cc = polygon(v[:, 0], v[:, 1], shape=(depth, width))
    if rr.size == 0:
        raise InputError("region: the polygon holds no pixel")
    mask = np.zeros(shape, dtype=bool)
    mask[b, rr, cc] = True
    return mask


def label_mask(labels: np.ndarray, bscan: int, value: int) -> np.ndarray:
    """The pixels of one label value in one B-scan of ``labels`` (n_bscans, depth, width).

    Raises
    ------
    InputError
        A B-scan that does not exist or a value with no pixel in that B-scan.
    """
    lab = np.asarray(labels)
    if lab.ndim == 2:
        lab = lab[None]
    b = _check_bscan(bscan, lab.shape)  # type: ignore[arg-type]
    mask = np.zeros(lab.shape, dtype=bool)
    mask[b] = lab[b] == int(value)
    if not mask[b].any():
        raise InputError(f"region: label {int(value)} has no pixel in B-scan {b}")
    return mask


def parse_region(text: str, shape: Shape3) -> np.ndarray:
    """``"B,Y0,X0,Y1,X1"`` (the CLI's ``--region``) -> :func:`rectangle_mask`; InputError if malformed."""
    items = [t.strip() for t in text.split(",")]
    try:
        values = [float(t) for t in items]
    except ValueError:
        values = []
    if len(values) != 5 or not all(np.isfinite(values)) or values[0] != int(values[0]):
        raise InputError(f"--region {text!r}: give B,Y0,X0,Y1,X1 (B-scan index, then two corners in pixels)")
    return rectangle_mask(shape, int(values[0]), *values[1:])


def check_region(region: np.ndarray, shape: Shape3) -> np.ndarray:
    """A region mask as bool (n_bscans, depth, width), validated against the volume's shape.

    A 2-D mask is accepted for a single-B-scan volume.
    """
    mask = np.asarray(region)
    if mask.ndim == 2 and shape[0] == 1:
        mask = mask[None]
    if mask.shape != tuple(shape):
        raise InputError(f"region: mask shape {mask.shape} does not match the volume {tuple(shape)}")
    mask = mask.astype(bool, copy=False)
    if not mask.any():
        raise InputError("region: the region is empty")
    return mask


__all__ = ["check_region", "label_mask", "parse_region", "polygon_mask", "rectangle_mask"]

"""The model's pixel grid: B-scans resampled to the pixel spacing a checkpoint was trained at, and back.

A network learns layer thicknesses in pixels. A B-scan from a device with another pixel spacing (Zeiss
Cirrus: 1.95 µm axial, 30 µm lateral on optic-nerve-head scans; Spectralis: 3.87 x 5.7-11.8 µm) shows
the same retina at other pixel sizes, and the segmentation degrades badly. Inference therefore
resamples every B-scan to the checkpoint's spacing (``normalization['pixel_spacing_um']``), and maps
the result back to the image's own pixels.

opencv's ``resize`` does the resampling: it is several times faster than scipy/scikit-image for this
(area averaging when shrinking, bilinear when enlarging) and keeps float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .core.errors import InputError

#: Spacing ratios within this relative tolerance are treated as equal (no resampling).
SAME_SPACING_TOLERANCE = 0.02


@dataclass(frozen=True)
class GridMap:
    """How one B-scan shape maps to the model grid.

    Attributes
    ----------
    native_shape
        (depth, width) of the image, in pixels.
    model_shape
        (depth, width) on the model's grid, in pixels.
    native_spacing_um
        (axial, lateral) spacing of the image in µm, or ``None`` when unknown (then assumed equal to
        the model's).
    model_spacing_um
        (axial, lateral) spacing the model was trained at, or ``None`` (old checkpoints: no resampling).
    """

    native_shape: tuple[int, int]
    model_shape: tuple[int, int]
    native_spacing_um: tuple[float, float] | None
    model_spacing_um: tuple[float, float] | None

    @property
    def identity(self) -> bool:
        """True when no resampling is needed."""
        return self.native_shape == self.model_shape

    @property
    def row_factor(self) -> float:
        """Native rows per model row (the exact ratio opencv uses)."""
        return self.native_shape[0] / self.model_shape[0]

    @property
    def col_factor(self) -> float:
        """Native columns per model column."""
        return self.native_shape[1] / self.model_shape[1]


def check_spacing(spacing: Sequence[float | str], what: str = "pixel spacing") -> tuple[float, ...]:
    """Validate a spacing in µm: every value finite and in (0, 100000].

    Raises
    ------
    InputError
        One line naming the bad value.
    """
    out = []
    for v in spacing:
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise InputError(f"{what} must be numbers in µm; got {v!r}") from None
        if not math.isfinite(f) or f <= 0 or f > 1e5:
            raise InputError(f"{what} must be a positive finite size in µm (at most 100000); got {v!r}")
        out.append(f)
    return tuple(out)


def parse_scale(text: str | None, what: str = "scale") -> tuple[float, float, float] | None:
    """``"Z,Y,X"`` (µm per pixel along B-scan, depth, A-scan) -> a validated tuple; empty -> ``None``.

    Raises
    ------
    InputError
        Not three comma-separated positive finite sizes.
    """
    if text is None or not str(text).strip():
        return None
    parts = str(text).split(",")
    if len(parts) != 3:
        raise InputError(f"{what} must be three comma-separated sizes in µm (B-scan,depth,A-scan); got {text!r}")
    z, y, x = check_spacing(parts, what)
    return (z, y, x)


def grid_map(
    native_shape: tuple[int, int],
    native_spacing_um: tuple[float, float] | None,
    model_spacing_um: tuple[float, float] | None,
    max_pixels: int = 40_000_000,
) -> GridMap:
    """Plan the resampling of a (depth, width) B-scan to the model's grid.

    Parameters
    ----------
    native_shape
        (depth, width) in pixels.
    native_spacing_um
        (axial, lateral) µm per pixel of the image, or ``None`` when unknown.
    model_spacing_um
        (axial, lateral) µm per pixel the model expects, or ``None`` for no resampling.
    max_pixels
        Refuse a model grid larger than this (a wrong scale would otherwise blow up memory).

    Raises
    ------
    InputError
        Invalid spacing, or a resampled B-scan that would be absurdly large.
    """
    h, w = int(native_shape[0]), int(native_shape[1])
    if native_spacing_um is None or model_spacing_um is None:
        return GridMap((h, w), (h, w), native_spacing_um, model_spacing_um)
    ny, nx = check_spacing(native_spacing_um, "image pixel spacing")
    my, mx = check_spacing(model_spacing_um, "model pixel spacing")
    fy, fx = ny / my, nx / mx
    mh = h if abs(fy - 1) <= SAME_SPACING_TOLERANCE else max(1, round(h * fy))
    mw = w if abs(fx - 1) <= SAME_SPACING_TOLERANCE else max(1, round(w * fx))
    if mh * mw > max_pixels:
        raise InputError(
            f"a {h} x {w} B-scan at {ny:g} x {nx:g} µm/px would be {mh} x {mw} px at the model's "
            f"{my:g} x {mx:g} µm/px; check the scale (--scale)"
        )
    return GridMap((h, w), (mh, mw), (ny, nx), (my, mx))


def to_model_grid(bscans: np.ndarray, gm: GridMap, nearest: bool = False) -> np.ndarray:
    """Resample (n, depth, width) B-scans to ``gm.model_shape``.

    Grey values (float32 out) use area averaging when shrinking, else bilinear; ``nearest=True`` keeps
    the dtype and is for labels.
    """
    if gm.identity:
        return bscans
    import cv2  # lazily: opencv ships its own Qt plugins, keep it out of napari's start-up

    mh, mw = gm.model_shape
    shrink = mh * mw < gm.native_shape[0] * gm.native_shape[1]
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    dtype = bscans.dtype if nearest else np.float32
    out = np.empty((bscans.shape[0], mh, mw), dtype)
    for i, b in enumerate(bscans):
        out[i] = cv2.resize(np.ascontiguousarray(b, dtype=dtype), (mw, mh), interpolation=interp)
    return out


def volume_grid(shape: tuple[int, ...], scale_um: tuple[float, ...] | None, model_spacing_um) -> GridMap:
    """:func:`grid_map` for a volume of ``shape`` (n, depth, width) with ``scale_um`` (z, y, x) or ``None``."""
    native = (float(scale_um[1]), float(scale_um[2])) if scale_um is not None else None
    return grid_map((int(shape[-2]), int(shape[-1])), native, model_spacing_um)


def to_native_grid(maps: np.ndarray, gm: GridMap, nearest: bool = False) -> np.ndarray:
    """Resample (..., model_depth, model_width) maps back to the image's (..., depth, width).

    Parameters
    ----------
    maps
        float (probabilities, heatmaps) or integer (masks) arrays on the model grid.
    nearest
        Nearest-neighbour (for masks and labels); bilinear otherwise.
    """
    if gm.identity:
        return maps
    import cv2

    h, w = gm.native_shape
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, maps.shape[-2], maps.shape[-1])
    out = np.empty((flat.shape[0], h, w), maps.dtype)
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    for i, m in enumerate(flat):
        src = m if m.dtype != np.float16 else m.astype(np.float32)
        out[i] = cv2.resize(np.ascontiguousarray(src), (w, h), interpolation=interp)
    return out.reshape(lead + (h, w))


def surfaces_to_native(edges: np.ndarray, gm: GridMap) -> np.ndarray:
    """Map boundary edges from the model grid to the image's pixels.

    Parameters
    ----------
    edges
        (n_boundaries, model_width) float: boundary k lies at the pixel edge ``edges[k, j]`` (rows above
        it belong to classes < k), in model-grid rows.

    Returns
    -------
    (n_boundaries, width) float32 edges in native rows (same convention), interpolated at the native
    A-scans' centres; the order between boundaries is kept (a linear map of ordered values).
    """
    if gm.identity:
        return edges.astype(np.float32, copy=False)
    w = gm.native_shape[1]
    mw = gm.model_shape[1]
    xs = (np.arange(w) + 0.5) * (mw / w) - 0.5
    cols = np.arange(mw)
    out = np.empty((edges.shape[0], w), np.float32)
    for k in range(edges.shape[0]):
        out[k] = np.interp(xs, cols, edges[k]) * gm.row_factor
    return out

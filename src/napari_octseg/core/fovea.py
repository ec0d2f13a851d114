"""Where the fovea is: the thinnest inner retina near the centre of a macular volume.

The ETDRS grid (:mod:`.etdrs`) is centred here unless the user sets the centre by hand.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .errors import InputError


def _nan_smooth(values: np.ndarray, sigma: tuple[float, float]) -> npt.NDArray[np.float64]:
    """Gaussian smoothing that ignores NaN (normalised convolution), float64 (n, W)."""
    from scipy.ndimage import gaussian_filter

    valid = np.isfinite(values)
    filled = np.where(valid, values, 0.0)
    num = np.asarray(gaussian_filter(filled, sigma, mode="nearest"), dtype=np.float64)
    den = np.asarray(gaussian_filter(valid.astype(np.float64), sigma, mode="nearest"), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~valid] = np.nan
    return out


def find_fovea(
    inner_thickness: np.ndarray,
    scale_um: tuple[float, float, float],
    search_radius_um: float = 1500.0,
    smooth_um: float = 100.0,
) -> tuple[float, float]:
    """Locate the fovea as the thinnest inner retina near the centre of the scan.

    Parameters
    ----------
    inner_thickness
        (n_bscans, width) inner retinal thickness (e.g. ILM to OPL/ONL), any unit, NaN = unknown.
    scale_um
        (z, y, x) pixel spacing in µm; z (B-scan spacing) and x (A-scan spacing) place the A-scans.
    search_radius_um
        Only A-scans within this distance of the scan centre are candidates (the fixation target is
        at the centre; this keeps the thin disc margin or a scan edge from winning).
    smooth_um
        Gaussian smoothing (sigma, µm) applied first, so one noisy A-scan cannot win.

    Returns
    -------
    tuple of float
        (B-scan, A-scan) index of the fovea.

    Raises
    ------
    InputError
        No measurable inner retina near the centre.
    """
    t = np.asarray(inner_thickness, dtype=np.float64)
    n, width = t.shape
    sz, sx = float(scale_um[0]), float(scale_um[2])
    smooth = _nan_smooth(t, (smooth_um / sz, smooth_um / sx))
    dz = (np.arange(n) - (n - 1) / 2.0)[:, None] * sz
    dx = (np.arange(width) - (width - 1) / 2.0)[None, :] * sx
    candidates = np.where(np.hypot(dz, dx) <= search_radius_um, smooth, np.nan)
    if not np.isfinite(candidates).any():
        raise InputError("cannot find the fovea: no measurable retina near the centre of the scan; set it by hand")
    i, j = np.unravel_index(int(np.nanargmin(candidates)), candidates.shape)
    return float(i), float(j)

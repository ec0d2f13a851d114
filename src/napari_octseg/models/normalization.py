"""Intensity normalisation of B-scans before the network (stored in each checkpoint)."""

from __future__ import annotations

import numpy as np

from ..core.errors import InputError

#: Default: per-B-scan percentile scaling of display grey values to [0, 1].
DEFAULT_NORMALIZATION: dict = {"method": "percentile", "low": 1.0, "high": 99.9}


def normalize_bscans(bscans: np.ndarray, spec: dict | None = None) -> np.ndarray:
    """Scale each B-scan's grey values to about [0, 1] as the checkpoint expects.

    Parameters
    ----------
    bscans
        Display grey values (see ``OctVolume.display_data``), shape (n, depth, width) or
        (depth, width), any real dtype.
    spec
        ``{"method": "percentile", "low": p_low, "high": p_high}``: per B-scan, the p_low and
        p_high percentiles map to 0 and 1 and values are clipped to [0, 1].

    Returns
    -------
    float32 array of the input's shape.

    Raises
    ------
    InputError
        If a B-scan holds NaN or infinite values, or the method is unknown.
    """
    spec = spec or DEFAULT_NORMALIZATION
    x = np.asarray(bscans, dtype=np.float32)
    squeeze = x.ndim == 2
    if squeeze:
        x = x[None]
    if not np.isfinite(x).all():
        raise InputError("image holds NaN or infinite values; fix or mask them before segmenting")
    if spec.get("method") != "percentile":
        raise InputError(f"unknown intensity normalisation {spec.get('method')!r}")
    out = np.empty_like(x)
    for i, b in enumerate(x):
        lo, hi = np.percentile(b, [spec["low"], spec["high"]])
        span = hi - lo if hi > lo else 1.0
        out[i] = np.clip((b - lo) / span, 0.0, 1.0)
    return out[0] if squeeze else out

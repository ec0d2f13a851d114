"""What kind of grey values a volume holds: linear reflectivity or display (log-like) grey values.

OCT devices store either linear reflectivity (HEYEX ``.vol``: float32 in [0, 1], most pixels near 0,
a heavy bright tail; shown as ``x ** 0.25``) or compressed display grey values (PNG/TIFF exports,
Duke images, most other formats). The network was trained on display grey values, so a linear volume
fed as display looks almost black with a few specks, and the segmentation fails without an error.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .errors import InputError

Reflectivity = Literal["linear", "display"]
REFLECTIVITY_CHOICES = ("auto", "linear", "display")

#: Positive-pixel median / 99.9th percentile below which float data is taken as linear reflectivity.
#: Measured: HEYEX .vol linear data 5e-5 to 2.3e-4; display grey values of the same scans 0.085-0.12;
#: Duke display images 0.10. The threshold sits a factor >= 8 from both.
LINEAR_RATIO_THRESHOLD = 0.01

#: At most this many pixels are looked at (evenly strided) to decide.
_SAMPLE = 2_000_000


def detect_reflectivity(data: np.ndarray) -> tuple[Reflectivity, str]:
    """Guess whether ``data`` holds linear reflectivity or display grey values.

    Parameters
    ----------
    data
        Grey values (n_bscans, depth, width) or (depth, width), any real dtype.

    Returns
    -------
    kind
        ``"linear"`` or ``"display"``.
    reason
        One sentence saying why (for ``octseg info``, the labels sidecar and the dock status).
    """
    arr = np.asarray(data)
    if arr.dtype.kind in "biu":
        return "display", f"integer grey values ({arr.dtype}) are display values"
    if arr.dtype.kind != "f" or arr.size == 0:
        return "display", f"{arr.dtype} data taken as display grey values"
    flat = arr.reshape(-1)
    step = max(1, flat.size // _SAMPLE)
    sample = flat[::step].astype(np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return "display", "no finite values"
    if sample.min() < 0:
        return "display", "negative values: not linear reflectivity"
    positive = sample[sample > 0]
    if positive.size < 100:
        return "display", "too few non-zero pixels to tell; taken as display grey values"
    high = float(np.percentile(positive, 99.9))
    ratio = float(np.median(positive)) / high if high > 0 else 1.0
    if ratio < LINEAR_RATIO_THRESHOLD:
        return "linear", (
            f"float values with a heavy bright tail (median/99.9th percentile {ratio:.1e} < "
            f"{LINEAR_RATIO_THRESHOLD}): linear reflectivity, shown and segmented as x ** 0.25"
        )
    return "display", f"float values spread like display grey values (median/99.9th percentile {ratio:.2f})"


def resolve_reflectivity(choice: str, data: np.ndarray, declared: Reflectivity) -> tuple[Reflectivity, str]:
    """The reflectivity to use for ``data``: the user's choice, or ``auto``.

    ``auto`` keeps a format's own ``"linear"`` declaration (HEYEX ``.vol``) and otherwise detects it
    with :func:`detect_reflectivity`.

    Raises
    ------
    InputError
        If ``choice`` is not one of ``auto``, ``linear``, ``display``.
    """
    if choice not in REFLECTIVITY_CHOICES:
        raise InputError(f"reflectivity must be one of {', '.join(REFLECTIVITY_CHOICES)}; got {choice!r}")
    if choice == "linear":
        return "linear", "linear reflectivity (as requested)"
    if choice == "display":
        return "display", "display grey values (as requested)"
    if declared == "linear":
        return "linear", "linear reflectivity (declared by the file format)"
    return detect_reflectivity(data)

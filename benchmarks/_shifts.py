"""Controlled acquisition shifts of Duke B-scans, shared by the robustness and quality benchmarks.

Each shift turns Duke images (display grey values, uint8-like 0..255) and their ground-truth labels into
what another device or setting would have produced, and returns the pixel spacing that goes with it:

* ``axial x0.75`` / ``axial x2``: the B-scan resampled to 0.75 / 2 times as many rows (axial spacing
  3.87 µm -> 5.16 / 1.94 µm), as a device with another axial sampling would record the same retina;
* ``lateral x0.4`` / ``lateral x2``: the same along the A-scans (about 11.3 µm -> 28 / 5.7 µm);
* ``speckle 1..3``: single-frame-like speckle: the display values are taken back to linear reflectivity
  (``(v / 255) ** 4``, the inverse of the HEYEX ``x ** 0.25``), multiplied by unit-mean gamma noise with
  16, 4 and 1 looks, and compressed again (Duke frames are averaged over many frames; one look is a
  single frame);
* ``gamma 0.5`` / ``gamma 2``: ``255 * (v / 255) ** g``;
* ``equalised``: OpenCV histogram equalisation (what some viewers export).

Images are resampled with OpenCV (area when shrinking, linear when enlarging), labels with nearest
neighbour. Everything is deterministic for a given ``seed``.

Usage::

    from _shifts import SHIFTS, apply_shift
    images2, labels2, scale2 = apply_shift("speckle 2", images, labels, (0.0, 3.87, 11.3), seed=0)
"""

from __future__ import annotations

import cv2
import numpy as np

#: Duke DME pixel spacing (Chiu 2015): B-scan (not contiguous, so 0), axial, lateral in µm.
DUKE_SCALE_UM: tuple[float, float, float] = (0.0, 3.87, 11.3)

#: name -> (kind, parameter), in the order benchmark tables list them.
SHIFTS: dict[str, tuple[str, float]] = {
    "none": ("none", 0.0),
    "axial x0.75": ("axial", 0.75),
    "axial x2": ("axial", 2.0),
    "lateral x0.4": ("lateral", 0.4),
    "lateral x2": ("lateral", 2.0),
    "speckle 1": ("speckle", 16.0),
    "speckle 2": ("speckle", 4.0),
    "speckle 3": ("speckle", 1.0),
    "gamma 0.5": ("gamma", 0.5),
    "gamma 2": ("gamma", 2.0),
    "equalised": ("equalise", 0.0),
}


def _resize(image: np.ndarray, rows: int, cols: int, nearest: bool) -> np.ndarray:
    h, w = image.shape
    if nearest:
        method = cv2.INTER_NEAREST
    else:
        method = cv2.INTER_AREA if rows * cols < h * w else cv2.INTER_LINEAR
    return cv2.resize(image, (cols, rows), interpolation=method)


def apply_shift(
    name: str,
    images: np.ndarray,
    labels: np.ndarray | None,
    scale_um: tuple[float, float, float] = DUKE_SCALE_UM,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray | None, tuple[float, float, float]]:
    """Apply the shift ``name`` (a key of :data:`SHIFTS`) to B-scans and their labels.

    Parameters
    ----------
    images
        Display grey values (n, depth, width), 0..255 (any real dtype).
    labels
        uint8 (n, depth, width) ground truth, or ``None``.
    scale_um
        (B-scan, depth, A-scan) spacing of the input in µm.
    seed
        Seeds the speckle.

    Returns
    -------
    images
        float32 (n, depth', width') display values 0..255.
    labels
        uint8 (n, depth', width') (or ``None``).
    scale_um
        The spacing of the shifted B-scans.
    """
    if name not in SHIFTS:
        raise KeyError(f"unknown shift {name!r}; known: {', '.join(SHIFTS)}")
    kind, p = SHIFTS[name]
    x = np.asarray(images, dtype=np.float32)
    lab = None if labels is None else np.asarray(labels, dtype=np.uint8)
    z, dy, dx = scale_um
    if kind in ("axial", "lateral"):
        n, h, w = x.shape
        rows, cols = (int(round(h * p)), w) if kind == "axial" else (h, int(round(w * p)))
        x = np.stack([_resize(b, rows, cols, nearest=False) for b in x])
        if lab is not None:
            lab = np.stack([_resize(b, rows, cols, nearest=True) for b in lab])
        scale = (z, dy * h / rows, dx) if kind == "axial" else (z, dy, dx * w / cols)
        return x.astype(np.float32), lab, scale
    if kind == "speckle":
        rng = np.random.default_rng(seed)
        linear = (np.clip(x, 0, 255) / 255.0) ** 4
        noise = rng.gamma(shape=p, scale=1.0 / p, size=x.shape).astype(np.float32)
        x = 255.0 * np.clip(linear * noise, 0.0, 1.0) ** 0.25
    elif kind == "gamma":
        x = 255.0 * (np.clip(x, 0, 255) / 255.0) ** p
    elif kind == "equalise":
        x = np.stack([cv2.equalizeHist(np.clip(b, 0, 255).astype(np.uint8)) for b in x]).astype(np.float32)
    return x.astype(np.float32), lab, scale_um


__all__ = ["DUKE_SCALE_UM", "SHIFTS", "apply_shift"]

"""Controlled acquisition shifts of Duke B-scans: one implementation for the robustness and quality benchmarks.

Each shift turns a Duke B-scan (display grey values, uint8 0..255) and its ground-truth labels into what another
device, setting or export would have produced, and returns the pixel spacing that goes with it:

* ``axial x0.75`` / ``axial x2``: the B-scan resampled to 0.75 / 2 times as many rows (axial spacing
  3.87 µm -> 5.16 / 1.94 µm), as a device with another axial sampling would record the same retina;
* ``lateral x0.4`` / ``lateral x2``: the same along the A-scans (11.3 µm -> 28 / 5.7 µm);
* ``speckle 10 frames`` / ``3 frames`` / ``1 frame``: the speckle of averaging fewer frames: the grey values are
  taken back to linear reflectivity (``v ** 4``, the inverse of the HEYEX ``x ** 0.25``), multiplied by unit-mean
  gamma noise with 10, 3 or 1 looks, compressed again and scaled so the 99.9th percentile is white (Duke frames
  are averaged over many frames; one look is a single frame);
* ``gamma 0.5`` / ``gamma 2``: ``v ** g`` on grey values in [0, 1];
* ``hist. equalised``: OpenCV histogram equalisation (what some viewers export).

Images are resampled with OpenCV (area when shrinking, linear when enlarging), labels with nearest neighbour.
Everything is deterministic for a given ``seed``.

Usage::

    from _shifts import SHIFTS, apply_shift, shift_volume
    x, lab, (axial_um, lateral_um) = apply_shift(image, labels, "speckle 3 frames", seed=0)  # one B-scan
    xs, labs, scale_um = shift_volume("gamma 2", images, labels, seed=7)  # (n, depth, width)
"""

from __future__ import annotations

import cv2
import numpy as np

#: Duke DME pixel spacing (Chiu 2015): B-scan (not contiguous, so 0), axial, lateral in µm.
DUKE_SCALE_UM: tuple[float, float, float] = (0.0, 3.87, 11.3)
DUKE_SPACING: tuple[float, float] = (DUKE_SCALE_UM[1], DUKE_SCALE_UM[2])

#: The shifts, in the order benchmark tables list them ("clean" = the B-scan as it is).
SHIFTS: tuple[str, ...] = (
    "clean",
    "axial x0.75",
    "axial x2",
    "lateral x0.4",
    "lateral x2",
    "speckle 10 frames",
    "speckle 3 frames",
    "speckle 1 frame",
    "gamma 0.5",
    "gamma 2",
    "hist. equalised",
)


def apply_shift(
    image: np.ndarray,
    labels: np.ndarray,
    shift: str,
    seed: int = 0,
    spacing_um: tuple[float, float] = DUKE_SPACING,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Shift one B-scan (display grey values 0..255) and its labels.

    Parameters
    ----------
    image
        (depth, width) display grey values 0..255 (uint8, or any real dtype).
    labels
        uint8 (depth, width) grader labels.
    shift
        One of :data:`SHIFTS`.
    seed
        Seeds the speckle.
    spacing_um
        (axial, lateral) µm per pixel of the input.

    Returns
    -------
    image
        float32 (depth', width') display grey values in [0, 1].
    labels
        uint8 (depth', width') grader labels on the shifted grid.
    spacing
        (axial, lateral) µm per pixel of the shifted B-scan.
    """
    if shift not in SHIFTS:
        raise ValueError(f"unknown shift {shift!r}; known: {', '.join(SHIFTS)}")
    image8 = np.clip(np.asarray(image), 0, 255).astype(np.uint8) if image.dtype != np.uint8 else image
    x = np.clip(np.asarray(image, dtype=np.float32), 0, 255) / 255.0
    lab = np.asarray(labels, dtype=np.uint8)
    ay, ax = spacing_um
    h, w = x.shape
    rng = np.random.default_rng(seed)
    if shift.startswith("axial") or shift.startswith("lateral"):
        f = float(shift.split(" x")[1])
        size = (w, round(h * f)) if shift.startswith("axial") else (round(w * f), h)
        interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
        x = np.asarray(cv2.resize(x, size, interpolation=interp), dtype=np.float32)
        lab = np.asarray(cv2.resize(lab, size, interpolation=cv2.INTER_NEAREST), dtype=np.uint8)
        if shift.startswith("axial"):
            ay = ay * h / size[1]
        else:
            ax = ax * w / size[0]
    elif shift.startswith("speckle"):
        n = float(shift.split()[1])
        lin = x.astype(np.float64) ** 4 * rng.gamma(n, 1.0 / n, size=x.shape)
        x = (lin**0.25).astype(np.float32)
        x /= max(float(np.percentile(x, 99.9)), 1e-6)
        x = np.clip(x, 0, 1)
    elif shift.startswith("gamma"):
        x = x ** float(shift.split()[1])
    elif shift == "hist. equalised":
        x = cv2.equalizeHist(image8).astype(np.float32) / 255.0
    return x.astype(np.float32), lab.astype(np.uint8), (ay, ax)


def shift_volume(
    shift: str,
    images: np.ndarray,
    labels: np.ndarray,
    scale_um: tuple[float, float, float] = DUKE_SCALE_UM,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """:func:`apply_shift` on every B-scan of a volume (B-scan ``i`` seeded with ``1000 * i + seed``).

    Parameters
    ----------
    images, labels
        (n, depth, width) display grey values 0..255 and uint8 labels.
    scale_um
        (B-scan, depth, A-scan) µm per pixel of the input.

    Returns
    -------
    images
        float32 (n, depth', width') in [0, 1].
    labels
        uint8 (n, depth', width').
    scale_um
        (B-scan, depth', A-scan) µm per pixel of the shifted volume.
    """
    pairs = [
        apply_shift(images[i], labels[i], shift, 1000 * i + seed, (scale_um[1], scale_um[2]))
        for i in range(len(images))
    ]
    ay, ax = pairs[0][2] if pairs else (scale_um[1], scale_um[2])
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), (scale_um[0], ay, ax)


__all__ = ["DUKE_SCALE_UM", "DUKE_SPACING", "SHIFTS", "apply_shift", "shift_volume"]

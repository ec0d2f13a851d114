"""Augmentation suited to OCT B-scans, applied to one (image, labels) crop at a time.

Geometry: horizontal flip (a left eye mirrors a right one), a small rotation and shear (head tilt,
scan tilt); labels follow with nearest-neighbour sampling and pixels coming from outside the image
get the ignore label. Intensity: gamma and contrast/brightness jitter (device and gain differences),
multiplicative speckle noise (coherent imaging) and occasional slight blur. Everything works on
normalised float32 images in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .losses import IGNORE_INDEX


@dataclass
class AugmentConfig:
    """Ranges of the random transforms (0 disables a transform)."""

    flip_p: float = 0.5
    rotate_deg: float = 6.0
    shear: float = 0.08
    scale: float = 0.1
    geometric_p: float = 0.7
    gamma: float = 0.35
    contrast: float = 0.2
    brightness: float = 0.08
    speckle_sigma: float = 0.12
    speckle_p: float = 0.5
    blur_p: float = 0.15


def sample_crop(
    image: np.ndarray,
    labels: np.ndarray,
    crop: tuple[int, int],
    rng: np.random.Generator,
    aug: AugmentConfig | None,
    focus: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a ``crop``-sized window out of (image, labels), with random geometry when ``aug`` is given.

    Parameters
    ----------
    image
        (H, W) float32 normalised B-scan.
    labels
        (H, W) uint8 classes.
    crop
        (height, width) of the output, in pixels.
    focus
        Optional (K, 2) row/column coordinates of interesting pixels (e.g. retina); the window is
        placed to contain one of them, chosen at random, so crops rarely show only background.

    Returns
    -------
    (crop_h, crop_w) float32 image and uint8 labels; pixels from outside the image are 0 and
    ``IGNORE_INDEX``.
    """
    h, w = image.shape
    ch, cw = crop
    if focus is not None and len(focus):
        r, c = focus[rng.integers(len(focus))]
        cy = int(np.clip(r + rng.integers(-ch // 2 + 8, ch // 2 - 8 + 1), ch // 2, max(ch // 2, h - ch // 2)))
        cx = int(np.clip(c + rng.integers(-cw // 2 + 8, cw // 2 - 8 + 1), cw // 2, max(cw // 2, w - cw // 2)))
    else:
        cy = int(rng.integers(ch // 2, max(ch // 2, h - ch // 2) + 1))
        cx = int(rng.integers(cw // 2, max(cw // 2, w - cw // 2) + 1))
    # Output pixel (i, j) samples input at M @ ((i, j) - centre_out) + centre_in: one affine map
    # does crop, rotation, shear and scale in a single interpolation pass.
    m = np.eye(2)
    if aug is not None and rng.random() < aug.geometric_p:
        a = np.deg2rad(rng.uniform(-aug.rotate_deg, aug.rotate_deg))
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        sh = np.array([[1.0, rng.uniform(-aug.shear, aug.shear)], [0.0, 1.0]])
        s = np.exp(rng.uniform(-aug.scale, aug.scale))
        m = rot @ sh * s
    if aug is not None and rng.random() < aug.flip_p:
        m = m @ np.diag([1.0, -1.0])
    centre_out = np.array([(ch - 1) / 2, (cw - 1) / 2])
    offset = np.array([cy, cx], dtype=float) - m @ centre_out
    if np.allclose(m, np.eye(2)):
        img, lab = _plain_crop(image, labels, int(round(offset[0])), int(round(offset[1])), ch, cw)
        return img, lab
    img = ndimage.affine_transform(image, m, offset=offset, output_shape=crop, order=1, mode="constant", cval=0.0)
    lab = ndimage.affine_transform(
        labels, m, offset=offset, output_shape=crop, order=0, mode="constant", cval=IGNORE_INDEX
    )
    return img.astype(np.float32, copy=False), lab.astype(np.uint8, copy=False)


def _plain_crop(image: np.ndarray, labels: np.ndarray, y0: int, x0: int, ch: int, cw: int):
    img = np.zeros((ch, cw), np.float32)
    lab = np.full((ch, cw), IGNORE_INDEX, np.uint8)
    h, w = image.shape
    ys, xs = max(y0, 0), max(x0, 0)
    ye, xe = min(y0 + ch, h), min(x0 + cw, w)
    if ye > ys and xe > xs:
        img[ys - y0 : ye - y0, xs - x0 : xe - x0] = image[ys:ye, xs:xe]
        lab[ys - y0 : ye - y0, xs - x0 : xe - x0] = labels[ys:ye, xs:xe]
    return img, lab


def jitter_intensity(image: np.ndarray, rng: np.random.Generator, aug: AugmentConfig) -> np.ndarray:
    """Random gamma, contrast, brightness, speckle and blur of a [0, 1] float32 image (a new array)."""
    x = np.clip(image, 0.0, 1.0)
    if aug.gamma:
        x = x ** np.exp(rng.uniform(-aug.gamma, aug.gamma))
    if aug.contrast or aug.brightness:
        x = (
            (x - 0.5) * (1 + rng.uniform(-aug.contrast, aug.contrast))
            + 0.5
            + rng.uniform(-aug.brightness, aug.brightness)
        )
    if aug.speckle_sigma and rng.random() < aug.speckle_p:
        # Speckle is multiplicative: fully developed speckle intensity is gamma distributed.
        k = 1.0 / (aug.speckle_sigma * rng.uniform(0.2, 1.0)) ** 2
        x = x * rng.gamma(k, 1.0 / k, size=x.shape)
    if aug.blur_p and rng.random() < aug.blur_p:
        x = ndimage.gaussian_filter(x, sigma=rng.uniform(0.3, 1.0))
    return np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)

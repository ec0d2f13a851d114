"""Augmentation suited to OCT B-scans, applied to one (image, labels) crop at a time.

Geometry: horizontal flip (a left eye mirrors a right one), a small rotation and shear (head tilt,
scan tilt); labels follow with nearest-neighbour sampling and pixels coming from outside the image
get the ignore label. Intensity: gamma and contrast/brightness jitter (device and gain differences),
multiplicative speckle noise (coherent imaging) and occasional slight blur. Everything works on
normalised float32 images in [0, 1].

:meth:`AugmentConfig.device_spanning` adds what other devices and scan types do to a B-scan once it is
resampled to the training pixel spacing (see ``inference.segment``): coarser axial / lateral sampling
(1.9-5.6 µm axial, 5-30 µm lateral: lost resolution after resampling), single-frame speckle through
heavy frame averaging (simulated in the linear-reflectivity domain), blur, gamma / contrast and histogram
equalisation, tilt and curvature (circle scans, myopia) and vessel shadows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    blur_sigma: tuple[float, float] = (0.3, 1.0)
    #: Probability of simulating another device's sampling: a (axial, lateral) pixel-spacing factor
    #: drawn log-uniformly from the ranges below relative to the training spacing; factors above 1
    #: mean coarser sampling, i.e. the B-scan is down-sampled and brought back (resolution lost).
    resample_p: float = 0.0
    axial_factor: tuple[float, float] = (0.5, 1.45)
    lateral_factor: tuple[float, float] = (0.45, 2.7)
    #: Probability of re-rendering speckle with N averaged frames, N log-uniform in ``frames``.
    frames_p: float = 0.0
    frames: tuple[float, float] = (1.0, 40.0)
    #: Probability of histogram equalisation (some devices and exports equalise).
    equalize_p: float = 0.0
    #: Probability of a column-wise vertical shift ``slope * x + curvature * x**2`` (x centred, px).
    tilt_p: float = 0.0
    slope: float = 0.35
    curvature: float = 0.004
    #: Probability of 1-3 vessel shadows (darker vertical bands).
    shadow_p: float = 0.0

    @classmethod
    def device_spanning(cls) -> AugmentConfig:
        """The recipe of the bundled model: the defaults plus other devices' sampling and noise."""
        return replace(
            cls(),
            resample_p=0.5,
            frames_p=0.4,
            equalize_p=0.1,
            tilt_p=0.4,
            shadow_p=0.3,
            blur_p=0.25,
            blur_sigma=(0.3, 1.5),
            gamma=0.5,
        )


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
        x = ndimage.gaussian_filter(x, sigma=rng.uniform(*aug.blur_sigma))
    return np.clip(x, 0.0, 1.0).astype(np.float32, copy=False)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def device_jitter(
    image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, aug: AugmentConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Simulate another device / scan type on a normalised crop (applied before :func:`jitter_intensity`).

    Parameters
    ----------
    image
        (h, w) float32 normalised B-scan crop in [0, 1], at the training pixel spacing.
    labels
        (h, w) uint8 classes (``IGNORE_INDEX`` where unknown); moved with the image by tilt/curvature.

    Returns
    -------
    New (h, w) float32 image and uint8 labels.
    """
    import cv2  # lazily: opencv ships its own Qt plugins, keep it away from napari's start-up

    x = np.clip(image, 0.0, 1.0).astype(np.float32, copy=True)
    h, w = x.shape
    if aug.tilt_p and rng.random() < aug.tilt_p:
        cols = np.arange(w, dtype=np.float32) - (w - 1) / 2
        shift = rng.uniform(-aug.slope, aug.slope) * cols + rng.uniform(-aug.curvature, aug.curvature) * cols**2
        shift -= shift.mean()
        map_x = np.broadcast_to(np.arange(w, dtype=np.float32), (h, w)).copy()
        map_y = (np.arange(h, dtype=np.float32)[:, None] - shift[None, :]).astype(np.float32)
        x = cv2.remap(x, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        labels = cv2.remap(
            labels, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE_INDEX
        )
    if aug.resample_p and rng.random() < aug.resample_p:
        fy = _log_uniform(rng, *aug.axial_factor)
        fx = _log_uniform(rng, *aug.lateral_factor)
        if fy > 1.05 or fx > 1.05:
            # A coarser device: fewer samples (area-averaged or point-sampled), then the inference
            # resampling back to the training grid (linear).
            sh, sw = max(4, round(h / max(fy, 1.0))), max(4, round(w / max(fx, 1.0)))
            interp = cv2.INTER_AREA if rng.random() < 0.5 else cv2.INTER_LINEAR
            small = cv2.resize(x, (sw, sh), interpolation=interp)
            x = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    if aug.frames_p and rng.random() < aug.frames_p:
        # Display grey values are about reflectivity ** 0.25: re-draw speckle in the linear domain as
        # the mean of N exponential frames (gamma(N, 1/N)), N = 1 being a single unaveraged frame.
        n = _log_uniform(rng, *aug.frames)
        lin = x.astype(np.float64) ** 4
        lin *= rng.gamma(n, 1.0 / n, size=x.shape)
        x = (lin**0.25).astype(np.float32)
        x = np.clip(x / max(float(np.percentile(x, 99.9)), 1e-6), 0.0, 1.0)
    if aug.shadow_p and rng.random() < aug.shadow_p:
        gain = np.ones(w, np.float32)
        for _ in range(int(rng.integers(1, 4))):
            c, half = rng.uniform(0, w), rng.uniform(1.5, 7.0)
            depth = rng.uniform(0.2, 0.7)
            gain *= 1.0 - depth * np.exp(-0.5 * ((np.arange(w) - c) / half) ** 2).astype(np.float32)
        x = x * gain[None, :]
    if aug.equalize_p and rng.random() < aug.equalize_p:
        x = cv2.equalizeHist((np.clip(x, 0, 1) * 255).astype(np.uint8)).astype(np.float32) / 255.0
    return x.astype(np.float32, copy=False), labels.astype(np.uint8, copy=False)

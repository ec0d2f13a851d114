"""Toy layered B-scans shared by the tests (fine-tuning: learning, CLI and dock; the retina window)."""

from __future__ import annotations

import numpy as np

from napari_octseg.core.volume import OctVolume

_BOUNDS = np.array([10, 16, 22, 28, 34, 40, 46, 52])


def toy_volume(
    n: int = 4, h: int = 64, w: int = 64, seed: int = 0, bounds: np.ndarray = _BOUNDS
) -> tuple[OctVolume, np.ndarray]:
    """Flat layered B-scans whose grey value encodes the class (plus noise): learnable in seconds."""
    rng = np.random.default_rng(seed)
    rows = np.arange(h)
    column = np.searchsorted(bounds, rows, side="right").astype(np.uint8)
    labels = np.broadcast_to(column[None, :, None], (n, h, w)).copy()
    image = labels.astype(np.float32) * 20.0 + rng.normal(0.0, 4.0, labels.shape).astype(np.float32)
    return OctVolume(data=image, scale_um=(100.0, 4.0, 10.0)), labels


def grey_level_bscan(ilm_row: int, height: int, width: int, layer: int = 4, tilt: int = 0) -> np.ndarray:
    """Vitreous (0), the seven layers (grey c / 8 for class c), choroid (1.0) to the bottom, (height, width).

    The ILM is at ``ilm_row`` in the first column and slopes down by ``tilt`` rows across the B-scan; each
    layer is ``layer`` rows thick. A network that reads the class from the grey value (class c at c / 8)
    labels it exactly (the retina-window tests).
    """
    img = np.zeros((height, width), np.float32)
    for col in range(width):
        top = ilm_row + (tilt * col) // width
        for c in range(1, 8):
            img[top + (c - 1) * layer : top + c * layer, col] = c / 8
        img[top + 7 * layer :, col] = 1.0
    return img

"""Toy layered B-scans shared by the fine-tuning tests (learning, CLI and dock)."""

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

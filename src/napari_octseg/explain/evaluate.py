"""How well Grad-CAM heatmaps localise: the share of each class's heatmap mass near its region.

Pure numpy/scipy (no torch), used by ``benchmarks/bench_gradcam.py`` and the tests.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def mass_near_region(
    heatmaps: np.ndarray, labels: np.ndarray, classes: Sequence[int], radius_px: float = 5.0
) -> np.ndarray:
    """Fraction of each class's heatmap mass within ``radius_px`` of that class's region.

    Parameters
    ----------
    heatmaps
        (n_classes_selected, n_bscans, depth, width), non-negative.
    labels
        (n_bscans, depth, width) label values (predicted or ground truth).
    classes
        Class value of each heatmap.
    radius_px
        Euclidean distance in pixels, within each B-scan, from the nearest pixel of the class.

    Returns
    -------
    float64 (n_classes_selected,): mass near the region / total mass; NaN for a class with no mass
    (an all-zero map) and 0 where the class is absent but the map is not.
    """
    from scipy.ndimage import distance_transform_edt

    out = np.full(len(classes), np.nan)
    for k, c in enumerate(classes):
        near_mass = total_mass = 0.0
        for b in range(labels.shape[0]):
            h = heatmaps[k, b].astype(np.float64)
            mass = h.sum()
            if mass <= 0:
                continue
            region = labels[b] == c
            if region.any():
                near = distance_transform_edt(~region) <= radius_px
                near_mass += h[near].sum()
            total_mass += mass
        if total_mass > 0:
            out[k] = near_mass / total_mass
    return out

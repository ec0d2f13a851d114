"""How faithful a saliency map is: deletion curves and the model-randomisation check.

Deletion (Petsiuk et al. 2018, "RISE"; Samek et al. 2017): remove the pixels a map calls most important
first (replace them by a blurred copy of the B-scan, so no sharp edge is added) and track the explained
class score. A map that finds what the score depends on makes it fall fast: a small area under the curve.
Random order and the class-score map itself (what Grad-CAM is at the paper's layers) are the baselines.

Model randomisation (Adebayo et al. 2018, "Sanity checks for saliency maps"): the maps of a network with
re-initialised weights must differ from the trained network's; a map that survives it shows the image,
not the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

#: Fractions of the B-scan's pixels removed at the steps of a deletion curve (0 is implied).
DELETION_FRACTIONS: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)


def blurred(image: np.ndarray, sigma_px: float = 8.0) -> np.ndarray:
    """A Gaussian-blurred copy of a B-scan (depth, width), float32: what removed pixels are replaced by."""
    import cv2

    img = np.ascontiguousarray(image, dtype=np.float32)
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma_px, sigmaY=sigma_px, borderType=cv2.BORDER_REFLECT)


def deletion_order(saliency: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flat pixel indices, most salient first; ties (e.g. the zeros of a rectified map) in random order."""
    flat = np.asarray(saliency, dtype=np.float64).ravel()
    jitter = rng.permutation(flat.size)
    return np.lexsort((jitter, -flat))


def class_scores(
    net: nn.Module, images: np.ndarray, classes: Sequence[int], weights: np.ndarray, device: torch.device
) -> np.ndarray:
    """Explained score of each class for each image.

    Parameters
    ----------
    net
        Network in eval mode on ``device`` (e.g. ``inference.inference_network``).
    images
        float32 (n_images, depth, width), normalised as the network expects.
    classes
        Class value of each row of ``weights``.
    weights
        float32 (len(classes), depth, width): d(score)/d(logit) of each class (e.g. 1/count on the pixels
        predicted as the class in the intact B-scan: the mean logit there).

    Returns
    -------
    float64 (n_images, len(classes)).
    """
    idx = torch.as_tensor(list(classes), device=device)
    w = torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32)).to(device)
    with torch.inference_mode():
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)[:, None]).to(device)
        logits = net(x)[:, idx].float()
        return (logits * w[None]).sum((-2, -1)).double().cpu().numpy()


def deletion_curves(
    net: nn.Module,
    image: np.ndarray,
    classes: Sequence[int],
    weights: np.ndarray,
    orders: np.ndarray,
    fill: np.ndarray,
    device: torch.device,
    fractions: Sequence[float] = DELETION_FRACTIONS,
) -> np.ndarray:
    """Deletion curve of each class: its score, relative to the intact B-scan, as pixels are removed.

    Parameters
    ----------
    image, fill
        float32 (depth, width): the normalised B-scan and what removed pixels become (:func:`blurred`).
    classes, weights
        As in :func:`class_scores`.
    orders
        int (len(classes), depth * width): each class's removal order (:func:`deletion_order`); one row
        (1, depth * width) is shared by all classes (e.g. random order: one forward pass per step).

    Returns
    -------
    float64 (len(classes), 1 + len(fractions)): ``1 + (score - intact) / |intact|`` (the score relative
    to the intact one when that is positive; 1 at fraction 0); NaN for a class whose intact score is 0.
    """
    k = len(classes)
    n_pix = image.size
    base = class_scores(net, image[None], classes, weights, device)[0]
    out = np.full((k, 1 + len(fractions)), np.nan)
    shared = orders.shape[0] == 1
    rows = range(1) if shared else range(k)
    for row in rows:
        batch = np.empty((len(fractions), *image.shape), dtype=np.float32)
        for s, f in enumerate(fractions):
            removed = orders[row, : round(f * n_pix)]
            x = image.ravel().copy()
            x[removed] = fill.ravel()[removed]
            batch[s] = x.reshape(image.shape)
        if shared:
            scores = class_scores(net, batch, classes, weights, device)  # (steps, k)
            for c in range(k):
                out[c, 1:] = scores[:, c]
                out[c, 0] = base[c]
        else:
            scores = class_scores(net, batch, [classes[row]], weights[row : row + 1], device)[:, 0]
            out[row, 1:] = scores
            out[row, 0] = base[row]
    # 1 + change / |intact score|: the score relative to the intact one for a positive score, and a
    # fall (below 1) whenever the score falls, whatever its sign
    nonzero = base != 0
    out[nonzero] = 1.0 + (out[nonzero] - base[nonzero, None]) / np.abs(base[nonzero, None])
    out[~nonzero] = np.nan
    return out


def curve_area(curve: np.ndarray, fractions: Sequence[float] = DELETION_FRACTIONS) -> np.ndarray:
    """Area under deletion curves (..., 1 + len(fractions)) over the removed fraction, divided by the
    largest fraction (1.0: the score never fell; lower: the map found what the score depends on)."""
    x = np.concatenate([[0.0], np.asarray(fractions, dtype=np.float64)])
    y = np.asarray(curve, dtype=np.float64)
    return ((y[..., 1:] + y[..., :-1]) / 2 * np.diff(x)).sum(-1) / x[-1]


def rank_correlation(a: np.ndarray, b: np.ndarray, size: int = 64) -> float:
    """Spearman rank correlation of two maps (depth, width), each block-averaged to about ``size`` rows
    (Adebayo et al. compare maps this way; averaging keeps bilinear upsampling from adding ties)."""
    from scipy.stats import spearmanr

    def small(m: np.ndarray) -> np.ndarray:
        f = max(1, m.shape[0] // size)
        h, w = (m.shape[0] // f) * f, (m.shape[1] // f) * f
        return m[:h, :w].reshape(h // f, f, w // f, f).mean((1, 3)).ravel()

    x, y = small(np.asarray(a, np.float64)), small(np.asarray(b, np.float64))
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


__all__ = [
    "DELETION_FRACTIONS",
    "blurred",
    "class_scores",
    "curve_area",
    "deletion_curves",
    "deletion_order",
    "rank_correlation",
]

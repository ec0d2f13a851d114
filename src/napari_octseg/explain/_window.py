"""Grad-CAM of a batch on the retina window: the pass that segmentation makes, explained.

:func:`napari_octseg.inference.segment` runs the network only on a window of rows around the retina
(:mod:`napari_octseg.core.retina_window`). Grad-CAM of a volume does the same, with the same rules, so
that it costs what the segmentation costs and explains the pass that produced the labels: the network
sees the window's rows; the rows above are vitreous (class 0), those below choroid (class 8), by rule,
and their heatmaps are zero (no pixel outside the window can have raised any score: the network never
saw it). A windowed B-scan whose predicted retina comes near the window's edge (or is not in it) is
computed again at full height (:func:`~napari_octseg.core.retina_window.accepted`), and so is one whose
region question has pixels outside the window's rows.

Scale: Grad-CAM's channel weight is the gradient of the score averaged over the layer's positions. A
window is treated as part of its full-height B-scan, whose positions outside the window have a zero
gradient (the score does not depend on them), so the average is over the full B-scan's positions: the
windowed weights and maps are multiplied by ``window rows / padded B-scan rows``. Windowed and
full-height B-scans of one volume are then on one scale (the paper's layers give exactly the full pass's
``ReLU(logit - bias)`` there), and their maps can share the per-class normalisation over the volume.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..core.classes import BACKGROUND_CLASSES
from ..core.retina_window import RowWindow, accepted, rows_inside, surfaces_from_labels
from ._batch import BatchGradCam, Reduction, Target, gradcam_batch


class WindowedGradCam(NamedTuple):
    """:func:`gradcam_window` of one batch: the full-height maps and how the window was used."""

    #: :class:`~napari_octseg.explain._batch.BatchGradCam` on the full B-scans' rows (zeros and 0 / 8
    #: labels outside an accepted window).
    result: BatchGradCam
    #: B-scans whose windowed result was kept.
    windowed: int
    #: B-scans whose windowed result was refused and computed again at full height.
    reruns: int


def gradcam_window(
    net: nn.Module,
    layer: str,
    x: torch.Tensor,
    classes: Sequence[int],
    window: RowWindow | None,
    *,
    target: Target = "predicted",
    reduction: Reduction = "mean",
    region: torch.Tensor | None = None,
) -> WindowedGradCam:
    """Grad-CAM of a batch of full-height B-scans, the network run on ``window``'s rows where it can.

    Parameters
    ----------
    net, layer, classes, target, reduction
        As for :func:`~napari_octseg.explain._batch.gradcam_batch` (``net`` a 10-class Duke-scheme model).
    x
        float32 (batch, 1, depth, width), normalised, every row of each B-scan (model grid).
    window
        Rows to run the network on (``window.image_height == depth``), or ``None`` for full height.
    region
        bool (batch, depth, width) or ``None``: a B-scan whose region has pixels outside the window's rows
        is run at full height (not counted as refused).

    Returns
    -------
    WindowedGradCam
        Maps (len(classes), batch, depth, width) and labels (batch, depth, width) on every row, weights
        (len(classes), batch, channels), and the counts of windowed and refused B-scans.
    """
    if window is None:
        full = gradcam_batch(net, layer, x, classes, target=target, reduction=reduction, region=region)
        return WindowedGradCam(full, 0, 0)
    n, height, width = int(x.shape[0]), int(x.shape[-2]), int(x.shape[-1])
    if window.image_height != height:
        raise ValueError(f"window of a {window.image_height}-row B-scan for B-scans of {height} rows")
    inside = np.ones(n, dtype=bool) if region is None else rows_inside(window, region.cpu().numpy())
    ok = np.zeros(n, dtype=bool)
    cams = torch.zeros((len(classes), n, height, width), dtype=torch.float32, device=x.device)
    pred = torch.full((n, height, width), BACKGROUND_CLASSES[0], dtype=torch.int64, device=x.device)
    weights: torch.Tensor | None = None
    sel = np.flatnonzero(inside)
    if sel.size:
        rows = slice(window.top, window.bottom)
        at = torch.as_tensor(sel, device=x.device)
        part = gradcam_batch(
            net,
            layer,
            x[at, :, rows],
            classes,
            target=target,
            reduction=reduction,
            region=region[at.to(region.device), rows] if region is not None else None,
        )
        ok[sel] = accepted(window, *surfaces_from_labels(part.pred.cpu().numpy(), top=window.top))
        # averaged over the full B-scan's layer positions (zero gradient outside the window): see the module notes
        multiple = 2 ** int(getattr(net, "depth", 0))
        scale = window.height / float(height + (-height) % multiple)
        weights = torch.zeros((len(classes), n, part.weights.shape[-1]), dtype=torch.float32, device=x.device)
        kept = torch.as_tensor(np.flatnonzero(ok[sel]), device=x.device)
        into = at[kept]
        cams[:, into, rows] = part.cams[:, kept].float() * scale
        weights[:, into] = part.weights[:, kept].float() * scale
        pred[into, rows] = part.pred[kept]
        pred[into, window.bottom :] = BACKGROUND_CLASSES[1]
    redo = np.flatnonzero(~ok)
    if redo.size:
        at = torch.as_tensor(redo, device=x.device)
        full = gradcam_batch(
            net,
            layer,
            x[at],
            classes,
            target=target,
            reduction=reduction,
            region=region[at.to(region.device)] if region is not None else None,
        )
        if redo.size == n:  # nothing windowed was kept
            return WindowedGradCam(full, 0, int((inside & ~ok).sum()))
        if weights is None:
            weights = torch.zeros((len(classes), n, full.weights.shape[-1]), dtype=torch.float32, device=x.device)
        cams[:, at] = full.cams.float()
        weights[:, at] = full.weights.float()
        pred[at] = full.pred
    assert weights is not None  # some B-scan was computed
    return WindowedGradCam(BatchGradCam(cams, pred, weights), int(ok.sum()), int((inside & ~ok).sum()))


__all__ = ["WindowedGradCam", "gradcam_window"]

"""Labels in anatomical order, by construction.

The network's per-pixel argmax can put "choroid" islands in the vitreous noise, NFL below the RPE or
fluid above the ILM (7 % of A-scans on unseen Duke subjects). The retina is a stack: in every A-scan
the layer classes 0 (vitreous) ... 8 (choroid) follow each other top to bottom, and fluid (9) lies only
inside the retina. So each of the 8 boundaries is placed where it best splits the column's class
probabilities, and the boundaries are then kept in order:

* the ILM is placed first between vitreous and retina, "choroid" abstaining, and choroid probability
  above it is read as vitreous (a choroid-like blob in the vitreous noise is the commonest order violation);
* boundary k (the first row of class >= k) minimises, in every A-scan, the expected number of pixels on
  the wrong side: ``sum_{y < t} P(class >= k) + sum_{y >= t} P(class < k)``, computed for all t at once
  with cumulative sums;
* fluid votes "retina" for the ILM (k = 1) and BM (k = 8) boundaries and abstains for the inner ones
  (it can sit in any inner layer);
* each edge is refined to a fraction of a pixel where the column's evidence for and against the
  boundary crosses (linear interpolation between the two row centres around the integer split; this
  rasterises to the same labels) and, when the checkpoint carries a boundary calibration, shifted by that
  boundary's offset (model-grid rows; see :func:`napari_octseg.models.checkpoint.LoadedModel.boundary_offsets_px`);
* the boundaries are made non-decreasing (a running maximum from the ILM down);
* a pixel is fluid where fluid is its most probable class and it lies between ILM and BM.

The decision uses the probabilities of whole columns, so it also removes isolated misclassified
pixels; measured on Subject_07-08 it costs no Dice (``benchmarks/bench_robustness.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: Layer classes in top-to-bottom order (vitreous .. choroid) and the fluid class of the Duke scheme.
N_ORDERED = 9
FLUID = 9


def ordered_edges(probs: torch.Tensor, offsets_px: Sequence[float] | None = None) -> torch.Tensor:
    """Boundary positions of every A-scan from class probabilities.

    Parameters
    ----------
    probs
        (batch, 10, depth, width) softmax probabilities in the Duke scheme (classes 0-8 ordered top to
        bottom, 9 fluid).
    offsets_px
        Optional 8 signed shifts (rows of this grid; + = deeper), one per boundary ILM .. BM, added to the
        sub-pixel edges before they are put in order: a calibration that removes a measured systematic
        lean of the network.

    Returns
    -------
    (batch, 8, width) float32 tensor: boundary k + 1 (ILM, ..., BM) lies at the pixel edge
    ``edges[:, k]`` (row index of the first pixel below it, 0 .. depth), non-decreasing in k.
    """
    return in_order(raw_edges(probs), probs.shape[2], offsets_px)


def in_order(edges: torch.Tensor, depth: int, offsets_px: Sequence[float] | None = None) -> torch.Tensor:
    """Shift raw per-boundary edges by ``offsets_px`` (if given), clamp to 0 .. ``depth`` and put them in order.

    ``edges`` (batch, 8, width) float32 sub-pixel edges as split column by column; returns the same shape,
    non-decreasing from the ILM down (a running maximum). :func:`ordered_edges` ends with this step;
    calibration code that tries many offsets on the same probabilities calls it directly.
    """
    if offsets_px is not None:
        if len(offsets_px) != edges.shape[1]:
            raise ValueError(f"need {edges.shape[1]} boundary offsets; got {len(offsets_px)}")
        shift = torch.as_tensor([float(v) for v in offsets_px], dtype=edges.dtype, device=edges.device)
        edges = (edges + shift[None, :, None]).clamp_(0.0, float(depth))
    return torch.cummax(edges, dim=1).values


def raw_edges(probs: torch.Tensor) -> torch.Tensor:
    """Every boundary's best sub-pixel split, column by column, before offsets and ordering.

    ``probs`` as in :func:`ordered_edges`; returns (batch, 8, width) float32 edges, not yet ordered.

    With ``C_k = P(class < k)`` among the layer classes (choroid above the ILM counted as vitreous) and
    ``f`` the fluid probability, boundary k's evidence per row is ``d_k = P(below k) - P(above k)``
    ``= (1 - f) - 2 C_k``, with fluid counted as retina for the ILM (``+ f``) and the BM (``- f``): one
    cumulative sum over the classes gives all eight, without separate "above" and "below" tensors.
    """
    probs = probs.float()
    fluid = probs[:, FLUID]
    # 1. The ILM first, between vitreous and retina with "choroid" abstaining: a choroid-like blob in the
    #    vitreous noise (the commonest order violation) must not pull every boundary up to it.
    vitreous = probs[:, 0]
    choroid = probs[:, N_ORDERED - 1]
    retina = 1.0 - vitreous - choroid  # layers 1-7 and fluid
    ilm = _best_split((retina - vitreous)[:, None], subpixel=False)[:, 0]
    # 2. Above the ILM, choroid probability is vitreous; then every boundary from the cumulative classes.
    rows = torch.arange(probs.shape[2], device=probs.device, dtype=probs.dtype)[None, :, None]
    vitreous_side = (rows < ilm[:, None, :]).to(probs.dtype)
    cum = torch.cumsum(probs[:, : N_ORDERED - 1], dim=1)  # P(class < k), k = 1..8, before the choroid move
    cum += (choroid * vitreous_side)[:, None]
    d = torch.sub((1.0 - fluid)[:, None], cum, alpha=2.0)
    d[:, 0] += fluid  # fluid is retina: below the ILM ...
    d[:, N_ORDERED - 2] -= fluid  # ... and above the BM
    return _best_split(d, subpixel=True)


def _best_split(d: torch.Tensor, *, subpixel: bool) -> torch.Tensor:
    """Per column, the edge t (0 .. depth) minimising ``cost(t) = sum_{y<t} d(y)``.

    ``d``: (batch, k, depth, width) per-row evidence ``P(row lies below the boundary) - P(above)``: placing
    the edge at t costs the expected misclassified pixels ``sum_{y<t} P(below) + sum_{y>=t} P(above)``,
    which is ``sum_y P(above) + cost(t)``. cost(0) = 0 (nothing above); the first minimum over t is taken.
    Returns (batch, k, width) float32.

    With ``subpixel``, an inner minimum t is refined to where ``d`` crosses zero between the row centres
    t - 1/2 (where ``d < 0``, or t - 1 would be the first minimum) and t + 1/2 (``d >= 0``), by linear
    interpolation: the refined edge lies in (t - 1/2, t + 1/2], so it rasterises (pixel centre >= edge) to
    the same labels, and carries the fraction a calibration offset or a thickness needs.
    """
    cost = torch.cumsum(d, dim=2)  # cost(t) for t = 1 .. depth
    low, at = cost.min(dim=2)
    t = torch.where(low < 0, at + 1, torch.zeros_like(at))
    edges = t.to(torch.float32)
    if not subpixel:
        return edges
    depth = d.shape[2]
    inner = (t > 0) & (t < depth)
    d0 = torch.gather(d, 2, (t - 1).clamp(0, depth - 1)[:, :, None]).squeeze(2).float()
    d1 = torch.gather(d, 2, t.clamp(0, depth - 1)[:, :, None]).squeeze(2).float()
    step = d1 - d0
    frac = torch.where(step > 0, -d0 / step.clamp_min(1e-12), torch.ones_like(step)).clamp(0.0, 1.0)
    return torch.where(inner, edges - 0.5 + frac, edges)


def labels_from_edges(edges: np.ndarray, depth: int) -> np.ndarray:
    """Rasterise ordered boundary edges into layer labels 0-8.

    Parameters
    ----------
    edges
        (8, width) float edges in rows (boundary k + 1 at the pixel edge ``edges[k]``), non-decreasing.
    depth
        Number of rows of the output.

    Returns
    -------
    uint8 (depth, width): the number of boundaries above each pixel centre, so labels never decrease
    down an A-scan.
    """
    centres = np.arange(depth, dtype=np.float32)[:, None] + 0.5
    out = np.zeros((depth, edges.shape[1]), np.uint8)
    for k in range(edges.shape[0]):
        out += centres >= edges[k][None, :]
    return out


def paint_fluid(labels: np.ndarray, fluid: np.ndarray) -> np.ndarray:
    """Set ``labels`` to the fluid class where ``fluid`` is set and the pixel lies inside the retina.

    Parameters
    ----------
    labels
        uint8 (depth, width) layer labels 0-8 (modified in place and returned).
    fluid
        bool (depth, width): fluid is the most probable class.
    """
    inside = (labels >= 1) & (labels <= 7) & fluid
    labels[inside] = FLUID
    return labels

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
* the boundaries are made non-decreasing (a running maximum from the ILM down);
* a pixel is fluid where fluid is its most probable class and it lies between ILM and BM.

The decision uses the probabilities of whole columns, so it also removes isolated misclassified
pixels; measured on Subject_07-08 it costs no Dice (``benchmarks/bench_robustness.py``).
"""

from __future__ import annotations

import numpy as np
import torch

#: Layer classes in top-to-bottom order (vitreous .. choroid) and the fluid class of the Duke scheme.
N_ORDERED = 9
FLUID = 9


def ordered_edges(probs: torch.Tensor) -> torch.Tensor:
    """Boundary positions of every A-scan from class probabilities.

    Parameters
    ----------
    probs
        (batch, 10, depth, width) softmax probabilities in the Duke scheme (classes 0-8 ordered top to
        bottom, 9 fluid).

    Returns
    -------
    (batch, 8, width) float32 tensor: boundary k + 1 (ILM, ..., BM) lies at the pixel edge
    ``edges[:, k]`` (row index of the first pixel below it, 0 .. depth), non-decreasing in k.
    """
    layers = probs[:, :N_ORDERED]
    fluid = probs[:, FLUID]
    # 1. The ILM first, between vitreous and retina with "choroid" abstaining: a choroid-like blob in the
    #    vitreous noise (the commonest order violation) must not pull every boundary up to it.
    retina = layers[:, 1 : N_ORDERED - 1].sum(dim=1) + fluid
    ilm = _best_split(retina[:, None], layers[:, :1])[:, 0]
    # 2. Above the ILM, choroid probability is vitreous; then every boundary from the cumulative classes.
    rows = torch.arange(probs.shape[2], device=probs.device, dtype=torch.float32)[None, :, None]
    vitreous_side = (rows < ilm[:, None, :]).to(probs.dtype)
    layers = layers.clone()
    layers[:, 0] += layers[:, N_ORDERED - 1] * vitreous_side
    layers[:, N_ORDERED - 1] *= 1 - vitreous_side
    below = torch.cumsum(layers, dim=1)[:, : N_ORDERED - 1]  # P(class < k), k = 1..8: (b, 8, h, w)
    total = layers.sum(dim=1, keepdim=True)
    above = total - below  # P(class >= k) among classes 0-8
    above = above.clone()
    above[:, 0] += fluid  # fluid is retina: below the ILM ...
    below = below.clone()
    below[:, N_ORDERED - 2] += fluid  # ... and above the BM
    edges = _best_split(above, below)
    return torch.cummax(edges, dim=1).values


def _best_split(above: torch.Tensor, below: torch.Tensor) -> torch.Tensor:
    """Per column, the edge t (0 .. depth) minimising ``sum_{y<t} above + sum_{y>=t} below``.

    ``above``, ``below``: (batch, k, depth, width) probabilities of lying below / above each boundary.
    cost(t) = sum_y below + sum_{y<t} (above - below): one cumulative sum of the difference, with t = 0
    (nothing above) as a leading zero, and its argmin over t. Returns (batch, k, width) float32.
    """
    diff = torch.cumsum(above - below, dim=2)
    diff = torch.cat([torch.zeros_like(diff[:, :, :1]), diff], dim=2)
    return torch.argmin(diff, dim=2).to(torch.float32)


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

"""One batch of model-grid B-scans -> labels, probabilities and uncertainty on the image's own grid.

The network runs on every row, or on a retina window (:mod:`napari_octseg.core.retina_window`) whose
result is checked and run again at full height where refused; then the anatomical decoding
(:mod:`napari_octseg.ordering`) and the mapping back to the native grid (:mod:`napari_octseg.grid`).
:func:`napari_octseg.inference.segment` drives it batch by batch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .core.classes import N_CLASSES
from .core.retina_window import RowWindow, accepted
from .grid import GridMap, surfaces_to_native, to_native_grid
from .ordering import FLUID, N_ORDERED, labels_from_edges, ordered_edges, paint_fluid


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Mixed precision on CUDA only (bf16 where supported, else fp16); full precision elsewhere."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def _probabilities(net: nn.Module, x: np.ndarray, device: torch.device) -> torch.Tensor:
    """Softmax (n, C, h, w) of the network on model-grid B-scans ``x`` (n, h, w) (any h, w)."""
    memory_format = torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format
    rows, cols = x.shape[-2:]
    multiple = 2 ** int(getattr(net, "depth", 0))
    if multiple > 1 and (rows % multiple or cols % multiple):
        # SegNet pads to this multiple itself (replicate), but torch's 1-channel channels-last
        # replication pad is slow; numpy's edge pad is the same operation at a fraction of the cost.
        x = np.pad(x, ((0, 0), (0, -rows % multiple), (0, -cols % multiple)), mode="edge")
    with _autocast(device):
        batch = torch.from_numpy(np.ascontiguousarray(x[:, None])).to(device)
        logits = net(batch.contiguous(memory_format=memory_format))[..., :rows, :cols].float()
    return torch.softmax(logits, dim=1)


@dataclass
class _Part:
    """B-scans ``index`` of a batch whose network output covers model-grid rows ``top : top + probs.shape[2]``.

    Above those rows the decoding gives vitreous, below them choroid (the retina window's rule).
    ``edges`` (len(index), 8, w) are on the full B-scan's rows, ``None`` unless decoded in order; ``rerun``:
    a refused window's B-scans, run again on every row; ``windowed``: accepted windowed B-scans.
    """

    index: np.ndarray
    probs: torch.Tensor
    top: int
    edges: np.ndarray | None
    rerun: bool = False
    windowed: bool = False


def _window_checked(
    net: nn.Module,
    x: np.ndarray,
    device: torch.device,
    window: RowWindow | None,
    offsets_px: tuple[float, ...] | None,
    ordered: bool,
) -> list[_Part]:
    """The network's output for a batch, on ``window``'s rows where that is trustworthy, else every row.

    A windowed B-scan is kept only if its ILM and BM lie inside the window, clear of its edges
    (:func:`napari_octseg.core.retina_window.accepted`); the others are run again on every row, so a
    window can cost time but never cut the retina off. Decoding on the window's rows alone gives the
    same edges as on the whole B-scan with vitreous above and choroid below (every split outside the
    window is worse), at a fraction of the cost.
    """
    everything = np.arange(x.shape[0])
    probs = _probabilities(net, x if window is None else x[:, window.top : window.bottom], device)
    if not ordered or probs.shape[1] != N_CLASSES:
        if window is None:
            return [_Part(everything, probs, 0, None)]
        return [_Part(everything, _probabilities(net, x, device), 0, None)]
    edges = ordered_edges(probs, offsets_px).cpu().numpy()
    if window is None:
        return [_Part(everything, probs, 0, edges)]
    edges += window.top
    ok = accepted(window, edges[:, 0], edges[:, -1])
    parts = (
        [_Part(everything[ok], probs[torch.from_numpy(ok)], window.top, edges[ok], windowed=True)] if ok.any() else []
    )
    redo = everything[~ok]
    if redo.size:
        full = _probabilities(net, x[redo], device)
        parts.append(_Part(redo, full, 0, ordered_edges(full, offsets_px).cpu().numpy(), rerun=True))
    return parts


def _full_height(part: _Part, height: int) -> torch.Tensor:
    """A part's probabilities on every model-grid row: 1 for vitreous above its rows, choroid below."""
    p = part.probs
    if part.top == 0 and p.shape[2] == height:
        return p
    full = torch.zeros((p.shape[0], p.shape[1], height, p.shape[3]), dtype=p.dtype, device=p.device)
    full[:, 0, : part.top] = 1.0
    full[:, N_ORDERED - 1, part.top + p.shape[2] :] = 1.0
    full[:, :, part.top : part.top + p.shape[2]] = p
    return full


def forward_batch(
    net: nn.Module,
    x: np.ndarray,
    device: torch.device,
    gm: GridMap,
    *,
    ordered: bool,
    want_probabilities: bool,
    want_uncertainty: bool = False,
    offsets_px: tuple[float, ...] | None = None,
    window: RowWindow | None = None,
) -> BatchOutput:
    """Labels (and float16 probabilities, uncertainty) on the native grid of model-grid B-scans ``x`` (n, h, w).

    The uncertainty is one minus the margin between the two likeliest classes' probabilities
    (:func:`napari_octseg.quality.pixel_uncertainty` ``kind="margin"``), from the same softmax; it is 0
    (certain) outside a retina window. ``window`` (ordered 10-class decoding only) runs the network on
    those rows (:func:`_window_checked`).

    Grad mode is switched off only inside this call, never across the generator's yields (which
    would leak into the caller's thread).
    """
    depth, n_cols = gm.native_shape
    n, height, width = x.shape
    labels = np.empty((n, depth, n_cols), np.uint8)
    probs = np.empty((n, N_CLASSES, depth, n_cols), np.float16) if want_probabilities else None
    unc = np.zeros((n, depth, n_cols), np.float16) if want_uncertainty else None
    edges_all: np.ndarray | None = None
    with torch.inference_mode():
        parts = _window_checked(net, x, device, window, offsets_px, ordered)
        n_out = int(parts[0].probs.shape[1])
        if want_probabilities and n_out != N_CLASSES:
            probs = np.empty((n, n_out, depth, n_cols), np.float16)
        for part in parts:
            p, idx, top = part.probs, part.index, part.top
            if part.edges is not None:
                if edges_all is None:
                    edges_all = np.empty((n, *part.edges.shape[1:]), np.float32)
                edges_all[idx] = part.edges
                # fluid wins where it beats every other class (argmax's first-index rule gives ties to the
                # others); a max over the classes is several times faster than argmax over the channels on a CPU
                fluid = np.zeros((len(idx), height, width), np.uint8)
                wins = p[:, FLUID] > p[:, :FLUID].amax(dim=1)
                fluid[:, top : top + p.shape[2]] = wins.to("cpu", torch.uint8).numpy()
                for k, i in enumerate(idx):
                    labels[i] = labels_from_edges(surfaces_to_native(part.edges[k], gm), depth)
                    paint_fluid(labels[i], to_native_grid(fluid[k], gm, nearest=True).astype(bool))
            else:
                labels[idx] = to_native_grid(p.argmax(dim=1).to("cpu", torch.uint8).numpy(), gm, nearest=True)
            if probs is not None:
                probs[idx] = to_native_grid(_full_height(part, height).cpu().numpy(), gm).astype(np.float16)
            if unc is not None and n_out > 1:
                u = np.zeros((len(idx), height, width), np.float32)
                u[:, top : top + p.shape[2]] = margin_uncertainty(p).cpu().numpy()
                unc[idx] = to_native_grid(u, gm).astype(np.float16)
    reruns = sum(len(part.index) for part in parts if part.rerun)
    windowed = sum(len(part.index) for part in parts if part.windowed)
    return BatchOutput(labels, probs, n_out, unc, edges_all, reruns, windowed)


@dataclass
class BatchOutput:
    """One batch's results from :func:`forward_batch`; ``edges`` are model-grid rows (n, 8, w) when ordered;
    ``reruns`` / ``windowed``: B-scans whose window was refused / kept."""

    labels: np.ndarray
    probabilities: np.ndarray | None
    n_out: int
    uncertainty: np.ndarray | None
    edges: np.ndarray | None
    reruns: int
    windowed: int


def margin_uncertainty(probs: torch.Tensor) -> torch.Tensor:
    """``1 - (p_first - p_second)`` over the classes (dim 1) of (n, C, h, w) probabilities, in [0, 1].

    A running (first, second) maximum over the few classes: the same values as ``topk(2, dim=1)`` at a fifth
    of its CPU time (topk over a non-last dimension dominated the cost of the uncertainty).
    """
    first, second = probs[:, 0].clone(), torch.zeros_like(probs[:, 0])
    for c in range(1, probs.shape[1]):
        pc = probs[:, c]
        second = torch.maximum(second, torch.minimum(first, pc))
        first = torch.maximum(first, pc)
    return (1.0 - (first - second)).clamp_(0.0, 1.0)


__all__ = ["BatchOutput", "forward_batch", "margin_uncertainty"]

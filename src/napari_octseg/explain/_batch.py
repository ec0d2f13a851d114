"""Grad-CAM maps of one batch of B-scans, for all selected classes from one forward pass.

A forward hook records the chosen layer's output ``A``. For ``"decoder"`` and ``"final"`` nothing but the
1x1 classifier follows, so ``logits[p] = M @ A[p] + b`` (``SegNet.pointwise_head``) and the gradient of a
class score is known in closed form: ``d score_c / d A_k[p] = weights_c[p] * M[c, k]``; no backward pass
is needed (at these layers Grad-CAM is a rescaled class-score map: ``ReLU(logit_c - b_c)``).

For any other layer the hook hands the rest of the network a detached copy of ``A`` that requires grad,
so autograd records only the part of the network after the chosen layer; each backward pass is seeded
with a class's d(score)/d(logits): its pixel weights in its own logit channel. (Plain passes, not
``is_grads_batched``: vmap cannot run every conv backward.)

Classes share a backward pass when they can: the gradient of logits at pixels ``P`` reaches only the layer
positions within the network's footprint of ``P`` (``SegNet.gradcam_footprint``). Scoring each class
on the pixels predicted as it (the default), classes whose footprints do not overlap (the retinal layers
two apart, vitreous and choroid, ...) are seeded together, and each layer position's gradient is credited
to the one class whose footprint holds it: the same channel weights as one pass per class (the tests
check), at a fraction of the cost.

At ``decoder.<i>`` (0 < i < depth) and ``bottleneck`` of a SegNet none of this autograd machinery runs:
the forward pass is made without gradients and :mod:`._bands` differentiates the decoder levels after the
layer by hand, on each class's band of rows only (the same weights; several times cheaper). Autograd
stays for other networks, training mode and checking (``row_bands=False``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import InputError
from ._bands import band_channel_grads, band_plan

Target = Literal["predicted", "image"]
Reduction = Literal["mean", "sum"]
TARGETS: tuple[str, ...] = ("predicted", "image")
REDUCTIONS: tuple[str, ...] = ("mean", "sum")


@runtime_checkable
class NamesGradCamLayers(Protocol):
    """A network that names its Grad-CAM layers (e.g. :class:`~napari_octseg.models.segnet.SegNet`)."""

    def gradcam_layers(self) -> dict[str, nn.Module]: ...


@runtime_checkable
class HasPointwiseHead(Protocol):
    """A network that says when only a 1x1 classifier follows a layer (closed-form gradients)."""

    def pointwise_head(self, layer: str) -> torch.Tensor | None: ...


@runtime_checkable
class HasGradCamFootprint(Protocol):
    """A network that says how far a class score's gradient reaches into a layer (shared passes)."""

    def gradcam_footprint(self, layer: str) -> tuple[int, int] | None: ...


def layer_module(net: nn.Module, layer: str) -> nn.Module:
    """The conv module called ``layer`` in ``net.gradcam_layers()``; InputError naming the choices."""
    if not isinstance(net, NamesGradCamLayers):
        raise InputError(f"{type(net).__name__} does not name Grad-CAM layers")
    layers = net.gradcam_layers()
    if layer not in layers:
        raise InputError(f"unknown Grad-CAM layer {layer!r}; choose one of {', '.join(layers)}")
    return layers[layer]


class BatchGradCam(NamedTuple):
    """Grad-CAM of one batch: ``cams, pred, weights = gradcam_batch(...)``."""

    #: float32 (len(classes), batch, depth, width), >= 0.
    cams: torch.Tensor
    #: int64 (batch, depth, width): predicted classes.
    pred: torch.Tensor
    #: float32 (len(classes), batch, channels): each channel's Grad-CAM weight.
    weights: torch.Tensor


def gradcam_batch(
    net: nn.Module,
    layer: str,
    x: torch.Tensor,
    classes: Sequence[int],
    *,
    target: Target = "predicted",
    reduction: Reduction = "mean",
    region: torch.Tensor | None = None,
    share_passes: bool = True,
    row_bands: bool = True,
) -> BatchGradCam:
    """Raw Grad-CAM maps of a batch of normalised B-scans (float32, before any normalisation), and the
    channel weights (the paper's feature-importance weights) they were formed with.

    Parameters
    ----------
    net
        The segmentation network (on ``x``'s device); it is used in eval mode and left in the mode,
        and with the hooks and ``requires_grad`` flags, it had.
    layer
        Key of ``net.gradcam_layers()``.
    x
        float32 (batch, 1, depth, width), normalised as the network expects.
    classes
        Class values to explain.
    target, reduction
        Pixels whose logits make a class's score (``"predicted"``: those predicted as the class;
        ``"image"``: all) and how they are combined (``"mean"`` or ``"sum"``). A class absent from a
        B-scan's prediction has score 0 there, and so an all-zero map.
    region
        bool (batch, depth, width) or ``None``: when given, every class's score is its logit over these
        pixels (Seg-Grad-CAM's question "why this class here?"), and ``target`` is ignored.
    share_passes
        Seed classes with disjoint footprints together (exact; see the module notes). ``False``: one
        seed per class (for checking).
    row_bands
        Differentiate a SegNet decoder by hand on each class's row band (:mod:`._bands`; exact, several
        times cheaper). ``False``, or a network it does not fit: autograd.

    Returns
    -------
    BatchGradCam
        ``cams`` float32 (len(classes), batch, depth, width), >= 0; ``pred`` int64 (batch, depth, width),
        the predicted classes; ``weights`` float32 (len(classes), batch, channels), Grad-CAM's weight of
        each channel of the layer (the gradient of the class score averaged over the layer's pixels).
    """
    module = layer_module(net, layer)
    height, width = x.shape[-2:]
    head = net.pointwise_head(layer) if isinstance(net, HasPointwiseHead) else None
    captured: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        captured["A"] = output.detach()
        if head is not None or plan is not None:
            return None
        # a leaf the rest of the network starts from: its gradient is the gradient with respect to A
        leaf = output.detach().contiguous().requires_grad_(True)
        captured["leaf"] = leaf
        return leaf

    def top_hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        captured["top"] = output

    was_training = net.training
    grad_flags = [p.requires_grad for p in net.parameters()]
    handle = module.register_forward_hook(hook)
    handles = [handle]
    try:
        net.eval()
        # The classifier's input (the paper's "decoder" layer): when only the 1x1 classifier follows it,
        # the backward passes start there, seeded through the classifier in closed form.
        top = net.pointwise_head("decoder") if head is None and isinstance(net, HasPointwiseHead) else None
        # hand-written backward passes on each class's row band where the network allows (exact)
        plan = band_plan(net, layer) if row_bands and top is not None else None
        if plan is not None:
            handles += plan.hooks()
        elif top is not None:
            handles.append(layer_module(net, "decoder").register_forward_hook(top_hook))
        for p in net.parameters():
            p.requires_grad_(False)
        with torch.inference_mode(False), torch.set_grad_enabled(head is None and plan is None):
            logits = net(x)
            pred = logits.detach().argmax(1)
            weights = pixel_weights(pred, classes, target, reduction, logits.dtype, region)
            activation = captured["A"]
            if plan is not None and top is not None:
                grads = band_channel_grads(plan, top, classes, weights, _padded_size(net, height, width))
            elif head is None:
                footprint = None
                if share_passes and isinstance(net, HasGradCamFootprint):
                    footprint = net.gradcam_footprint(layer)
                start = captured.get("top")
                if top is not None and start is not None and start.requires_grad:
                    grads = _channel_grads(logits, captured["leaf"], classes, weights, footprint, (start, top))
                else:
                    grads = _channel_grads(logits, captured["leaf"], classes, weights, footprint)
            else:
                # d score_k / d A[p] = weights_k[p] * head[class_k] at every pixel: the backward pass
                # would only sum this over the pixels, which the pixel weights' sums give directly.
                idx = torch.as_tensor(list(classes), device=x.device)
                grads = weights.sum((-2, -1)).transpose(0, 1)[..., None] * head.to(logits.dtype)[idx][:, None, :]
        del logits
        captured.pop("top", None)
        # Sum over the layer's pixels / pixel count = Grad-CAM's global average of the gradients.
        w = grads / float(activation.shape[-2] * activation.shape[-1])
        cams = F.relu(torch.einsum("kbc,bchw->kbhw", w, activation.float()))
        padded = _padded_size(net, height, width)
        if tuple(cams.shape[-2:]) != padded:
            cams = F.interpolate(cams, size=padded, mode="bilinear", align_corners=False)
        return BatchGradCam(cams[..., :height, :width].contiguous(), pred, w.float())
    finally:
        for h in handles:
            h.remove()
        for p, flag in zip(net.parameters(), grad_flags, strict=True):
            p.requires_grad_(flag)
        net.train(was_training)


def pixel_weights(
    pred: torch.Tensor,
    classes: Sequence[int],
    target: str,
    reduction: str,
    dtype: torch.dtype,
    region: torch.Tensor | None = None,
) -> torch.Tensor:
    """d score / d logit of each class at each pixel: (batch, len(classes), depth, width)."""
    if region is not None:
        weights = region.to(device=pred.device, dtype=dtype)[:, None].expand(-1, len(classes), -1, -1).clone()
    elif target == "predicted":
        idx = torch.as_tensor(list(classes), device=pred.device)
        weights = (pred[:, None] == idx[None, :, None, None]).to(dtype)
    else:
        weights = torch.ones((pred.shape[0], len(classes), *pred.shape[-2:]), dtype=dtype, device=pred.device)
    if reduction == "mean":
        weights = weights / weights.sum((-2, -1), keepdim=True).clamp(min=1.0)
    return weights


def _footprints(weights: torch.Tensor, footprint: tuple[int, int], layer_shape: tuple[int, int]) -> torch.Tensor:
    """bool (n_classes, batch, h, w): the layer positions each class's seed can reach."""
    stride, radius = footprint
    support = (weights != 0).transpose(0, 1).float()  # (k, b, H, W)
    k, b, height, width = support.shape
    flat = support.reshape(k * b, 1, height, width)
    h, w = layer_shape
    flat = F.pad(flat, (0, w * stride - width, 0, h * stride - height))
    if stride > 1:
        flat = F.max_pool2d(flat, stride, stride)  # layer positions whose block holds a seed
    # blocks within `radius` px of a seeded block are at most ceil(radius / stride) positions away (a
    # superset of the exact reach, which keeps the split exact)
    steps = -(-radius // stride)
    if steps > 0:
        flat = F.max_pool2d(flat, 2 * steps + 1, stride=1, padding=steps)
    return flat.reshape(k, b, h, w) > 0


def _groups(reach: torch.Tensor | None, k: int) -> list[list[int]]:
    """Greedy colouring: groups of class positions whose reaches do not overlap (empty ones left out)."""
    if reach is None:
        return [[i] for i in range(k)]
    flat = reach.reshape(k, -1).float()
    overlap = (flat @ flat.T) > 0
    groups: list[list[int]] = []
    for i in range(k):
        if not overlap[i, i]:
            continue  # reaches nothing: its gradient is zero
        for g in groups:
            if not any(bool(overlap[i, j]) for j in g):
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def _channel_grads(
    logits: torch.Tensor,
    leaf: torch.Tensor,
    classes: Sequence[int],
    weights: torch.Tensor,
    footprint: tuple[int, int] | None,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Gradients of every class score with respect to ``leaf`` (the layer's output), summed over its
    pixels: (len(classes), batch, channels). One backward pass per group of classes with disjoint
    footprints, seeded with each class's d(score)/d(logits): its pixel weights in its own channel.

    ``start``: ``(top, M)``, the classifier's input (batch, channels, padded depth, padded width) and its
    1x1 weights (n_classes, channels), when ``logits = (M @ top + b)`` cropped to the image: the passes then
    start at ``top``, seeded with ``M^T`` of each class's pixel weights (the same gradient, without the
    classifier's backward)."""
    idx = torch.as_tensor(list(classes), device=logits.device)
    layer_shape = (int(leaf.shape[-2]), int(leaf.shape[-1]))
    reach = _footprints(weights, footprint, layer_shape) if footprint is not None else None
    groups = _groups(reach, len(classes))
    out = torch.zeros((len(classes), *leaf.shape[:2]), dtype=leaf.dtype, device=leaf.device)
    height, width = logits.shape[-2:]
    for n, group in enumerate(groups):
        if start is None:
            out_tensor, seed = logits, torch.zeros_like(logits)
            for i in group:
                seed[:, idx[i]] = weights[:, i]
        else:
            out_tensor, matrix = start
            seed = torch.zeros_like(out_tensor)
            rows = matrix.to(seed.dtype)[idx[group]]  # (len(group), channels)
            seed[..., :height, :width] = torch.einsum("bkhw,kc->bchw", weights[:, group].to(seed.dtype), rows)
        (g,) = torch.autograd.grad(out_tensor, leaf, grad_outputs=seed, retain_graph=n + 1 < len(groups))
        if len(group) == 1:
            out[group[0]] = g.sum((-2, -1))
        else:
            assert reach is not None  # groups of several classes come from their reaches
            for i in group:
                out[i] = (g * reach[i][:, None]).sum((-2, -1))
        del seed, g
    return out


def _padded_size(net: nn.Module, height: int, width: int) -> tuple[int, int]:
    """Input size after the network's own padding to a multiple of ``2 ** depth``."""
    m = 2 ** int(getattr(net, "depth", 0))
    return height + (-height) % m, width + (-width) % m

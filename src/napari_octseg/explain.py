"""Grad-CAM for segmentation: one heatmap per class, all classes from one forward pass.

For a B-scan, the score of class ``c`` is the class-``c`` logit **averaged** (default) or summed over
the pixels the network predicts as ``c`` (``target="predicted"``), or over the whole image
(``target="image"``). Grad-CAM takes the gradient of that score with respect to the activation ``A``
(channels ``k``) of a chosen conv layer, averages it over the layer's pixels to get one weight per
channel, and forms ``ReLU(sum_k w_k A_k)``, upsampled bilinearly to the B-scan.

Why the average is the default: with a sum, a thick layer (many pixels) gets a score, and so raw
heatmap values, hundreds of times larger than a thin one; with the average every class's score is a
mean logit, so the raw max/mean heatmap intensities of the classes (the paper's Table 3) can be
compared with each other (within one layer and B-scan size: Grad-CAM's channel weights are averages
over the layer's pixels).

How all classes come from one forward pass: a forward hook records the layer's output ``A``. For the
default layers (``"decoder"``: the rectified feature maps of the last decoder refinement conv, and
``"final"``: the logits) nothing but the 1x1 classifier follows, so ``logits[p] = M @ A[p] + b`` at every
pixel (``SegNet.pointwise_head``) and the gradient of a score is known in closed form:
``d score_c / d A_k[p] = weights_c[p] * M[c, k]``; its average over the pixels is the channel weight,
with no backward pass at all (the result equals captum's ``LayerGradCam``, which the tests check).
For any other layer the hook adds a zero tensor ``delta`` of shape (batch, channels, 1, 1) to ``A``:
the gradient of a score with respect to ``delta`` is the gradient with respect to ``A`` summed over
the layer's pixels, i.e. exactly the Grad-CAM channel weights times the pixel count. It is computed for
a chunk of classes at once by one vectorised backward pass from the logits
(``torch.autograd.grad(..., is_grads_batched=True)``), seeded with each class's d(score)/d(logits): its
pixel weights in its own channel. Parameters are frozen during the pass so autograd records only the
part of the network after the chosen layer.

Memory: one float32 normalised copy of the volume, the float16 heatmaps (2 bytes per pixel per class:
250 MB for 10 classes of 49 B-scans of 496 x 512) and, per batch, the backward's tensors (bounded by
``BACKWARD_BUDGET_BYTES``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .core.classes import CLASS_NAMES
from .core.errors import Cancelled, InputError
from .core.progress import Progress
from .core.volume import OctVolume
from .explain_eval import mass_near_region
from .models.checkpoint import LoadedModel
from .models.device import select_device
from .models.normalization import normalize_bscans
from .models.runtime import inference_network, release_cached

Target = Literal["predicted", "image"]
Reduction = Literal["mean", "sum"]
TARGETS: tuple[str, ...] = ("predicted", "image")
REDUCTIONS: tuple[str, ...] = ("mean", "sum")

#: Memory allowed for the intermediate tensors of one vectorised backward pass; classes are
#: processed in chunks that fit (all classes of the light model at 496 x 512 in one pass).
BACKWARD_BUDGET_BYTES: int = 1 << 30

CancelSpec = Callable[[], bool] | threading.Event | None


@dataclass
class GradCamResult:
    """Per-class Grad-CAM heatmaps of a volume.

    Attributes
    ----------
    heatmaps
        float16 (n_classes_selected, n_bscans, depth, width), in [0, 1]: each class's raw map divided
        by that class's maximum over the whole volume (so B-scans of one class stay comparable).
    classes
        Class values (label indices) of the heatmaps, in order.
    class_names
        Their names.
    layer
        Name of the conv layer the maps were computed at (see ``SegNet.gradcam_layers``).
    stats
        Class value -> ``{"max", "mean"}`` of the raw (un-normalised) Grad-CAM over all pixels of the
        volume (comparable between classes of one run), and ``"mean_normalized"``: the mean of the
        [0, 1] heatmap (how widespread the evidence is).
    labels
        uint8 (n_bscans, depth, width): the classes predicted in the same forward pass.
    """

    heatmaps: np.ndarray
    classes: tuple[int, ...]
    class_names: tuple[str, ...]
    layer: str
    stats: dict[int, dict[str, float]]
    labels: np.ndarray
    target: str = "predicted"
    reduction: str = "mean"
    device: str = "cpu"
    seconds: float = 0.0
    model_source: str = field(default="<memory>")

    def heatmap(self, cls: int | str) -> np.ndarray:
        """The heatmap (n_bscans, depth, width) of a class, by value or name."""
        key = self.class_names.index(cls) if isinstance(cls, str) else self.classes.index(int(cls))
        return self.heatmaps[key]

    def stats_rows(self) -> list[dict[str, float | int | str]]:
        """One row per class: ``class``, ``name``, ``max``, ``mean``, ``mean_normalized``."""
        return [{"class": c, "name": n, **self.stats[c]} for c, n in zip(self.classes, self.class_names, strict=True)]


def resolve_classes(classes: Sequence[int | str] | None, class_names: Sequence[str]) -> tuple[int, ...]:
    """Class values from values and/or names (``None``: every class of the model), validated.

    Raises
    ------
    InputError
        For an unknown name, a value outside ``0 .. n_classes - 1``, a repeat or an empty selection.
    """
    if classes is None:
        return tuple(range(len(class_names)))
    lowered = {n.lower(): i for i, n in enumerate(class_names)}
    out: list[int] = []
    for c in classes:
        if isinstance(c, str) and not c.strip().lstrip("-").isdigit():
            if c.strip().lower() not in lowered:
                raise InputError(f"unknown class {c!r}; known: {', '.join(class_names)}")
            value = lowered[c.strip().lower()]
        else:
            value = int(c)
            if not 0 <= value < len(class_names):
                raise InputError(f"class {value} is outside 0..{len(class_names) - 1}")
        if value in out:
            raise InputError(f"class {class_names[value]!r} is selected twice")
        out.append(value)
    if not out:
        raise InputError("no class selected for Grad-CAM")
    return tuple(out)


def layer_module(net: nn.Module, layer: str) -> nn.Module:
    """The conv module called ``layer`` in ``net.gradcam_layers()``; InputError naming the choices."""
    if not hasattr(net, "gradcam_layers"):
        raise InputError(f"{type(net).__name__} does not name Grad-CAM layers")
    layers = net.gradcam_layers()
    if layer not in layers:
        raise InputError(f"unknown Grad-CAM layer {layer!r}; choose one of {', '.join(layers)}")
    return layers[layer]


def _class_chunk(net: nn.Module, batch: int, height: int, width: int, n_classes: int) -> int:
    """How many classes one backward pass may carry within ``BACKWARD_BUDGET_BYTES`` (measured:
    about 2 full-resolution base-width tensors plus the logits per class and B-scan)."""
    widths = getattr(getattr(net, "config", None), "widths", (64,))
    per_class = 4 * batch * height * width * (2 * int(widths[0]) + 2 * n_classes + 16)
    return max(1, BACKWARD_BUDGET_BYTES // max(per_class, 1))


def gradcam_batch(
    net: nn.Module,
    layer: str,
    x: torch.Tensor,
    classes: Sequence[int],
    *,
    target: Target = "predicted",
    reduction: Reduction = "mean",
    class_chunk: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw Grad-CAM maps of a batch of normalised B-scans (float32, before any normalisation).

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
    class_chunk
        Classes per vectorised backward pass (default: as many as fit ``BACKWARD_BUDGET_BYTES``).

    Returns
    -------
    cams
        float32 (len(classes), batch, depth, width), >= 0.
    pred
        int64 (batch, depth, width): predicted classes.
    """
    module = layer_module(net, layer)
    height, width = x.shape[-2:]
    head = _pointwise_head(net, layer)
    captured: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        captured["A"] = output.detach()
        if head is not None:
            return None
        delta = torch.zeros(output.shape[:2] + (1, 1), dtype=output.dtype, device=output.device, requires_grad=True)
        captured["delta"] = delta
        return output + delta

    was_training = net.training
    grad_flags = [p.requires_grad for p in net.parameters()]
    handle = module.register_forward_hook(hook)
    try:
        net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        with torch.inference_mode(False), torch.set_grad_enabled(head is None):
            logits = net(x)
            pred = logits.detach().argmax(1)
            weights = _pixel_weights(pred, classes, target, reduction, logits.dtype)
            activation = captured["A"]
            if head is None:
                grads = _channel_grads(net, logits, captured["delta"], classes, weights, class_chunk)
            else:
                # d score_k / d A[p] = weights_k[p] * head[class_k] at every pixel: the backward pass
                # would only sum this over the pixels, which the pixel weights' sums give directly.
                idx = torch.as_tensor(list(classes), device=x.device)
                grads = weights.sum((-2, -1)).transpose(0, 1)[..., None] * head.to(logits.dtype)[idx][:, None, :]
        del logits
        # Sum over the layer's pixels / pixel count = Grad-CAM's global average of the gradients.
        w = grads / float(activation.shape[-2] * activation.shape[-1])
        cams = F.relu(torch.einsum("kbc,bchw->kbhw", w, activation.float()))
        padded = _padded_size(net, height, width)
        if tuple(cams.shape[-2:]) != padded:
            cams = F.interpolate(cams, size=padded, mode="bilinear", align_corners=False)
        return cams[..., :height, :width].contiguous(), pred
    finally:
        handle.remove()
        for p, flag in zip(net.parameters(), grad_flags, strict=True):
            p.requires_grad_(flag)
        net.train(was_training)


def _pointwise_head(net: nn.Module, layer: str) -> torch.Tensor | None:
    """``net.pointwise_head(layer)`` (see ``SegNet.pointwise_head``), or ``None`` for networks without it."""
    return net.pointwise_head(layer) if hasattr(net, "pointwise_head") else None


def _pixel_weights(
    pred: torch.Tensor, classes: Sequence[int], target: str, reduction: str, dtype: torch.dtype
) -> torch.Tensor:
    """d score / d logit of each class at each pixel: (batch, len(classes), depth, width)."""
    if target == "predicted":
        idx = torch.as_tensor(list(classes), device=pred.device)
        weights = (pred[:, None] == idx[None, :, None, None]).to(dtype)
    else:
        weights = torch.ones((pred.shape[0], len(classes), *pred.shape[-2:]), dtype=dtype, device=pred.device)
    if reduction == "mean":
        weights = weights / weights.sum((-2, -1), keepdim=True).clamp(min=1.0)
    return weights


def _channel_grads(
    net: nn.Module,
    logits: torch.Tensor,
    delta: torch.Tensor,
    classes: Sequence[int],
    weights: torch.Tensor,
    class_chunk: int | None,
) -> torch.Tensor:
    """Gradients of every class score with respect to ``delta``: (len(classes), batch, channels).

    One vectorised backward pass per chunk of classes, seeded with each class's d(score)/d(logits):
    its pixel weights in its own channel (which skips building the scores themselves).
    """
    idx = torch.as_tensor(list(classes), device=logits.device)
    k = len(classes)
    chunk = class_chunk or _class_chunk(net, logits.shape[0], *logits.shape[-2:], k)
    out = []
    for start in range(0, k, chunk):
        stop = min(start + chunk, k)
        seed = torch.zeros((stop - start, *logits.shape), dtype=logits.dtype, device=logits.device)
        rows = torch.arange(stop - start, device=logits.device)
        seed[rows, :, idx[start:stop]] = weights[:, start:stop].transpose(0, 1)
        (g,) = torch.autograd.grad(logits, delta, grad_outputs=seed, is_grads_batched=True, retain_graph=stop < k)
        out.append(g[..., 0, 0])
        del seed
    return torch.cat(out)


def _padded_size(net: nn.Module, height: int, width: int) -> tuple[int, int]:
    """Input size after the network's own padding to a multiple of ``2 ** depth``."""
    m = 2 ** int(getattr(net, "depth", 0))
    return height + (-height) % m, width + (-width) % m


def _cancelled(cancel: CancelSpec) -> bool:
    if cancel is None:
        return False
    if isinstance(cancel, threading.Event):
        return cancel.is_set()
    return bool(cancel())


def gradcam(
    volume: OctVolume | np.ndarray,
    model: LoadedModel | nn.Module,
    classes: Sequence[int | str] | None = None,
    layer: str = "decoder",
    *,
    target: Target = "predicted",
    reduction: Reduction = "mean",
    batch_size: int = 1,
    device: str | torch.device = "auto",
    cancel: CancelSpec = None,
) -> Generator[Progress, None, GradCamResult]:
    """Grad-CAM heatmaps of every selected class for every B-scan of a volume.

    Preprocessing is the segmentation's: ``volume.display_data()`` then ``normalize_bscans`` with the
    model's normalisation. Each batch of ``batch_size`` B-scans takes one forward pass and, for layers
    other than ``"decoder"`` and ``"final"``, one vectorised backward pass per chunk of classes.

    Parameters
    ----------
    volume
        An :class:`OctVolume`, or display grey values (n_bscans, depth, width) or (depth, width).
    model
        A :class:`LoadedModel` (or a bare network, with the default class names and normalisation).
    classes
        Class values or names to explain; ``None``: all classes of the model.
    layer
        ``"decoder"`` (rectified output of the last decoder conv, full resolution; default), ``"final"``
        (the 1x1 classifier, as in the paper) or ``"decoder.<i>"`` (coarser levels; upsampled bilinearly).
    target, reduction
        See :func:`gradcam_batch`.
    batch_size
        B-scans per forward pass (memory grows with it and with the number of classes).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``; the network is returned to its own device after.
    cancel
        A callable returning True, or a ``threading.Event``, checked before every batch.

    Yields
    ------
    Progress
        B-scans done out of the total.

    Returns
    -------
    GradCamResult

    Raises
    ------
    InputError
        NaN/infinite input, empty volume, unknown class, layer, target or device.
    Cancelled
        When ``cancel`` fires; nothing is returned.
    """
    started = time.perf_counter()
    loaded = model if isinstance(model, LoadedModel) else _wrap(model)
    net = loaded.model
    try:
        vol = volume if isinstance(volume, OctVolume) else OctVolume(data=np.asarray(volume, dtype=np.float32))
    except (TypeError, ValueError) as exc:
        raise InputError(f"not a greyscale B-scan or volume: {exc}") from None
    if vol.n_bscans == 0 or 0 in vol.shape:
        raise InputError("the volume is empty")
    if target not in TARGETS:
        raise InputError(f"unknown Grad-CAM target {target!r}; choose one of {', '.join(TARGETS)}")
    if reduction not in REDUCTIONS:
        raise InputError(f"unknown score reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    selected = resolve_classes(classes, loaded.class_names)
    layer_module(net, layer)
    dev = select_device(device)
    images = normalize_bscans(vol.display_data(), loaded.normalization)

    n, height, width = images.shape
    heat = np.zeros((len(selected), n, height, width), dtype=np.float16)
    labels = np.zeros((n, height, width), dtype=np.uint8)
    scan_max = np.zeros((len(selected), n), dtype=np.float64)
    total = np.zeros(len(selected), dtype=np.float64)
    yield Progress(0, n, "Grad-CAM", {"layer": layer})
    # An eval-mode copy with BatchNorm folded into the convs (the same feature maps, faster); the
    # caller's network keeps its device, mode and hooks.
    fast = inference_network(net, dev)
    if _pointwise_head(fast, layer) is None:
        fast = fast.to(memory_format=torch.contiguous_format)  # the vectorised backward needs NCHW
    try:
        for start in range(0, n, batch_size):
            if _cancelled(cancel):
                raise Cancelled("Grad-CAM cancelled")
            stop = min(start + batch_size, n)
            x = torch.from_numpy(images[start:stop, None]).to(dev)
            cams, pred = gradcam_batch(fast, layer, x, selected, target=target, reduction=reduction)
            cams_np = cams.float().cpu().numpy()
            labels[start:stop] = pred.cpu().numpy().astype(np.uint8)
            peak = cams_np.max(axis=(2, 3))
            scan_max[:, start:stop] = peak
            total += cams_np.sum(axis=(1, 2, 3), dtype=np.float64)
            # Stored relative to each B-scan's own peak (float16-safe whatever the raw scale);
            # rescaled to the class's volume-wide peak below.
            heat[:, start:stop] = cams_np / np.where(peak > 0, peak, 1.0)[..., None, None]
            yield Progress(stop, n, "Grad-CAM", {"layer": layer})
    finally:
        del fast
        release_cached(dev)
    class_max = scan_max.max(axis=1)
    for k in range(len(selected)):
        if class_max[k] <= 0:
            continue
        for b in range(n):
            factor = scan_max[k, b] / class_max[k]
            if factor != 1.0:
                heat[k, b] = (heat[k, b].astype(np.float32) * factor).astype(np.float16)
    mean = total / float(n * height * width)
    stats = {
        c: {
            "max": float(class_max[k]),
            "mean": float(mean[k]),
            "mean_normalized": float(mean[k] / class_max[k]) if class_max[k] > 0 else 0.0,
        }
        for k, c in enumerate(selected)
    }
    return GradCamResult(
        heatmaps=heat,
        classes=selected,
        class_names=tuple(loaded.class_names[c] for c in selected),
        layer=layer,
        stats=stats,
        labels=labels,
        target=target,
        reduction=reduction,
        device=str(dev),
        seconds=time.perf_counter() - started,
        model_source=loaded.source,
    )


def _wrap(net: nn.Module) -> LoadedModel:
    n = int(getattr(getattr(net, "config", None), "n_classes", len(CLASS_NAMES)))
    names = CLASS_NAMES if n == len(CLASS_NAMES) else tuple(f"class {i}" for i in range(n))
    return LoadedModel(model=net, class_names=names)  # type: ignore[arg-type]


__all__ = ["GradCamResult", "gradcam", "gradcam_batch", "layer_module", "mass_near_region", "resolve_classes"]

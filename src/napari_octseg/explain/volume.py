"""Grad-CAM for segmentation: one heatmap per class, all classes from one forward pass.

For a B-scan, the score of class ``c`` is the class-``c`` logit **averaged** (default) or summed over
the pixels the network predicts as ``c`` (``target="predicted"``), over the whole image
(``target="image"``), or over a user's region (``region=``; Seg-Grad-CAM: "why is this region class
``c``?"). Grad-CAM takes the gradient of that score with respect to the activation ``A`` (channels ``k``)
of a chosen conv layer, averages it over the layer's pixels to get one weight per channel, and forms
``ReLU(sum_k w_k A_k)``, upsampled bilinearly to the B-scan.

Layers (``SegNet.gradcam_layers``): ``DEFAULT_LAYER`` (a coarse decoder level whose maps carry context,
chosen by the deletion-curve benchmark ``benchmarks/bench_gradcam.py``); the paper's two layers,
``"decoder"`` (the rectified last 3x3 decoder conv, its Conv2d_19) and ``"final"`` (the 1x1 classifier,
its Conv2d_20), kept so that its Figure 6 / Table 3 can be reproduced. At those two layers only the 1x1
classifier follows, so the gradient is constant over the pixels and the map is a rescaled class-score map
(``ReLU(logit_c - bias_c)`` at ``"decoder"``, the logits at ``"final"``): it does not depend on the
question asked (target or region) and says nothing the segmentation did not.

Why the average is the default: with a sum, a thick layer (many pixels) gets a score, and so raw
heatmap values, hundreds of times larger than a thin one; with the average every class's score is a
mean logit, so the raw max/mean heatmap intensities of the classes (the paper's Table 3) can be
compared with each other (within one layer and B-scan size).

How the gradients are computed (closed form at the paper's layers, by hand on each class's band of rows
at the other decoder levels and the bottleneck, autograd passes shared by classes whose footprints do not
overlap for other networks): see :mod:`napari_octseg.explain._batch` and :mod:`napari_octseg.explain._bands`.

Memory: one float32 normalised copy of the volume, the float16 heatmaps (2 bytes per pixel per class:
250 MB for 10 classes of 49 B-scans of 496 x 512) and, per batch, one forward pass's tensors.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..core.classes import CLASS_NAMES, N_CLASSES
from ..core.errors import InputError
from ..core.progress import CancelCheck, Progress, check_cancel
from ..core.retina_window import WindowTracker, surfaces_from_labels
from ..core.volume import OctVolume
from ..grid import to_model_grid, to_native_grid, volume_grid
from ..models.checkpoint import LoadedModel
from ..models.device import select_device
from ..models.normalization import normalize_bscans
from ..models.runtime import inference_network, release_cached
from ._bands import band_plan
from ._batch import (
    REDUCTIONS,
    TARGETS,
    HasPointwiseHead,
    Reduction,
    Target,
    layer_module,
)
from ._window import gradcam_window
from .layers import DEFAULT_LAYER, SCORE_MAP_LAYERS
from .region import check_region


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
        B-scans explained, every row of them (the zeros outside a retina window count as zeros; comparable
        between classes of one run), ``"mean_normalized"``: the mean of the
        [0, 1] heatmap (how widespread the evidence is), and the paper's feature-importance weights
        summarised: ``"weight_sum"`` (sum over the layer's channels of the Grad-CAM channel weights,
        averaged over the B-scans) and ``"weight_max"`` (the largest of them).
    channel_weights
        float32 (n_classes_selected, channels): Grad-CAM channel weights averaged over the B-scans.
    labels
        uint8 (n_bscans, depth, width): the classes predicted in the same forward pass (zero in B-scans
        not explained).
    target
        ``"predicted"``, ``"image"`` or ``"region"`` (a user's region was the question).
    bscans
        The B-scans explained (all, or those holding the region); maps of the others are zero.
    window_bscans, window_reruns
        How many B-scans were explained on the rows around the retina only (``window=True``), and how many
        windowed results were refused and computed again at full height.
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
    bscans: tuple[int, ...] = ()
    channel_weights: np.ndarray | None = None
    window_bscans: int = 0
    window_reruns: int = 0

    def heatmap(self, cls: int | str) -> np.ndarray:
        """The heatmap (n_bscans, depth, width) of a class, by value or name."""
        key = self.class_names.index(cls) if isinstance(cls, str) else self.classes.index(int(cls))
        return self.heatmaps[key]

    def stats_rows(self) -> list[dict[str, float | int | str]]:
        """One row per class: ``class``, ``name``, ``layer``, ``target`` and the ``stats`` entries."""
        return [
            {"class": c, "name": n, "layer": self.layer, "target": self.target, **self.stats[c]}
            for c, n in zip(self.classes, self.class_names, strict=True)
        ]


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


def gradcam(
    volume: OctVolume | np.ndarray,
    model: LoadedModel | nn.Module,
    classes: Sequence[int | str] | None = None,
    layer: str = DEFAULT_LAYER,
    *,
    target: Target = "predicted",
    reduction: Reduction = "mean",
    region: np.ndarray | None = None,
    batch_size: int = 1,
    device: str | torch.device = "auto",
    cancel: CancelCheck | None = None,
    window: bool = True,
) -> Generator[Progress, None, GradCamResult]:
    """Grad-CAM heatmaps of every selected class for every B-scan of a volume.

    Preprocessing is the segmentation's: ``volume.display_data()`` then ``normalize_bscans`` with the
    model's normalisation. Each batch of ``batch_size`` B-scans takes one forward pass and, for layers
    other than ``"decoder"`` and ``"final"``, a backward pass per group of classes.

    Like the segmentation, the network sees only the rows around the retina (``window``): the first
    B-scan is explained at full height, each later batch on the window around the retina its previous
    batch predicted (:mod:`napari_octseg.core.retina_window`, the same margins and checks as
    :func:`napari_octseg.inference.segment`). Outside the window the maps are zero and the labels
    vitreous (0) above, choroid (8) below; see :mod:`napari_octseg.explain._window` for the rules.

    Parameters
    ----------
    volume
        An :class:`OctVolume`, or display grey values (n_bscans, depth, width) or (depth, width).
    model
        A :class:`LoadedModel` (or a bare network, with the default class names and normalisation).
    classes
        Class values or names to explain; ``None``: all classes of the model.
    layer
        ``DEFAULT_LAYER``; ``"decoder.<i>"`` (decoder level ``i``, 1/2**i resolution, upsampled
        bilinearly) or ``"bottleneck"``; or the paper's ``"decoder"`` (rectified last decoder conv) and
        ``"final"`` (the 1x1 classifier), where the map is a rescaled class-score map.
    target, reduction
        See :func:`gradcam_batch`.
    region
        bool (n_bscans, depth, width) (or (depth, width) for one B-scan), e.g. from
        :mod:`napari_octseg.explain.region`: explain each class's logit over these pixels instead of
        ``target``. Only the B-scans holding region pixels are computed.
    batch_size
        B-scans per forward pass (memory grows with it and with the number of classes).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``; the network is returned to its own device after.
    cancel
        Polled before every batch (a thread passes ``event.is_set``); returning ``True`` raises
        :class:`~napari_octseg.core.errors.Cancelled`.
    window
        Run the network on the retina window (10-class Duke-scheme models only, and never for
        ``target="image"``, whose question is every pixel of the B-scan). A windowed B-scan whose predicted
        retina nears the window's edge, or whose region has pixels outside the window's rows, is computed at
        full height. ``False``: every row of every B-scan.

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
        NaN/infinite input, empty volume, unknown class, layer, target or device; an empty region or one
        whose shape is not the volume's.
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
    mask = check_region(region, vol.shape) if region is not None else None
    # The segmentation's preprocessing: display grey values on the model's pixel grid (the spacing the
    # checkpoint was trained at, from the volume's scale), normalised; heatmaps go back to the image's grid.
    gm = volume_grid(vol.shape, vol.scale_um, loaded.pixel_spacing_um)
    images = normalize_bscans(to_model_grid(vol.display_data(), gm), loaded.normalization)
    todo = [int(b) for b in np.flatnonzero(mask.any(axis=(1, 2)))] if mask is not None else list(range(vol.n_bscans))
    if mask is not None:
        mask = to_model_grid(mask.astype(np.uint8), gm, nearest=True).astype(bool)

    n, height, width = images.shape
    heat = np.zeros((len(selected), n, height, width), dtype=np.float16)
    labels = np.zeros((n, height, width), dtype=np.uint8)
    scan_max = np.zeros((len(selected), n), dtype=np.float64)
    total = np.zeros(len(selected), dtype=np.float64)
    weight_sum: np.ndarray | None = None
    yield Progress(0, len(todo), "Grad-CAM", {"layer": layer})
    # An eval-mode copy with BatchNorm folded into the convs (the same feature maps, faster); the
    # caller's network keeps its device, mode and hooks.
    fast = inference_network(net, dev)
    if (not isinstance(fast, HasPointwiseHead) or fast.pointwise_head(layer) is None) and band_plan(
        fast, layer
    ) is None:
        # autograd's backward passes run in NCHW (Module.to takes memory_format at run time; torch's stubs
        # omit it); the hand-written row-band passes (explain._bands) keep the segmentation's format
        # (the decoder's SplitInputConv convolves the encoder skips apart, so autograd never differentiates them)
        fast = fast.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    # "image" asks about every pixel of the B-scan: the window would shrink the question to its rows
    use_window = window and len(loaded.class_names) == N_CLASSES and (target != "image" or mask is not None)
    tracker = WindowTracker(use_window, 2 ** int(getattr(net, "depth", 0)))
    try:
        done = 0
        while done < len(todo):
            check_cancel(cancel, "Grad-CAM cancelled")
            idx = todo[done : tracker.batch_stop(done, batch_size, len(todo))]
            x = torch.from_numpy(images[idx, None]).to(dev)
            reg = torch.from_numpy(mask[idx]).to(dev) if mask is not None else None
            part = gradcam_window(
                fast, layer, x, selected, tracker.window, target=target, reduction=reduction, region=reg
            )
            cams, pred, w = part.result
            w_sum = w.sum(1).double().cpu().numpy()
            weight_sum = w_sum if weight_sum is None else weight_sum + w_sum
            cams_np = cams.float().cpu().numpy()
            labels[idx] = pred.cpu().numpy().astype(np.uint8)
            peak = cams_np.max(axis=(2, 3))
            scan_max[:, idx] = peak
            total += cams_np.sum(axis=(1, 2, 3), dtype=np.float64)
            # Stored relative to each B-scan's own peak (float16-safe whatever the raw scale);
            # rescaled to the class's volume-wide peak below.
            heat[:, idx] = cams_np / np.where(peak > 0, peak, 1.0)[..., None, None]
            surfaces = surfaces_from_labels(labels[idx]) if tracker.enabled else None
            tracker.record(part.windowed, part.reruns, surfaces, height)
            done += len(idx)
            yield Progress(done, len(todo), "Grad-CAM", {"layer": layer})
    finally:
        del fast
        release_cached(dev)
    class_max = scan_max.max(axis=1)
    for k in range(len(selected)):
        if class_max[k] <= 0:
            continue
        for b in todo:
            factor = scan_max[k, b] / class_max[k]
            if factor != 1.0:
                heat[k, b] = (heat[k, b].astype(np.float32) * factor).astype(np.float16)
    mean = total / float(len(todo) * height * width)
    channel_weights = (weight_sum / len(todo)).astype(np.float32) if weight_sum is not None else None
    stats = {
        c: {
            "max": float(class_max[k]),
            "mean": float(mean[k]),
            "mean_normalized": float(mean[k] / class_max[k]) if class_max[k] > 0 else 0.0,
            "weight_sum": float(channel_weights[k].sum()) if channel_weights is not None else 0.0,
            "weight_max": float(channel_weights[k].max()) if channel_weights is not None else 0.0,
        }
        for k, c in enumerate(selected)
    }
    heat = to_native_grid(heat, gm)
    labels = to_native_grid(labels, gm, nearest=True)
    return GradCamResult(
        heatmaps=heat,
        classes=selected,
        class_names=tuple(loaded.class_names[c] for c in selected),
        layer=layer,
        stats=stats,
        labels=labels,
        target="region" if mask is not None else target,
        reduction=reduction,
        device=str(dev),
        seconds=time.perf_counter() - started,
        model_source=loaded.source,
        bscans=tuple(todo),
        channel_weights=channel_weights,
        window_bscans=tracker.windowed,
        window_reruns=tracker.reruns,
    )


def _wrap(net: nn.Module) -> LoadedModel:
    n = int(getattr(getattr(net, "config", None), "n_classes", len(CLASS_NAMES)))
    names = CLASS_NAMES if n == len(CLASS_NAMES) else tuple(f"class {i}" for i in range(n))
    return LoadedModel(model=net, class_names=names)  # type: ignore[arg-type]


__all__ = ["DEFAULT_LAYER", "SCORE_MAP_LAYERS", "GradCamResult", "gradcam", "resolve_classes"]

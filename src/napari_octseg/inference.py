"""Volume -> labels: batched, streamed, device-aware segmentation with progress and cancel.

:func:`segment` is a generator: it yields :class:`~napari_octseg.core.progress.Progress` once per batch
of B-scans and *returns* a :class:`SegmentationResult`. The napari widget runs it in a worker thread,
the CLI drains it with :func:`~napari_octseg.core.progress.tqdm_drain`.

Memory: B-scans are converted to display grey values and normalised one batch at a time, so the only
whole-volume arrays are the input itself, the uint8 labels and (on request) the float16 probabilities.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .core.classes import N_CLASSES
from .core.errors import Cancelled, CheckpointError, InputError
from .core.intensity import resolve_reflectivity
from .core.progress import Progress
from .core.retina_window import WindowTracker
from .core.volume import OctVolume
from .forward import forward_batch
from .grid import GridMap, check_spacing, grid_map, to_model_grid
from .io.labels import labels_sidecar  # re-exported: the labels file format lives in io.labels
from .io.provenance import bscan_hashes, edited_bscans  # re-exported: the edit record lives in io.provenance
from .models.checkpoint import LoadedModel
from .models.device import select_device
from .models.normalization import normalize_bscans
from .models.runtime import inference_network, release_cached
from .quality.score import QualityAccumulator, QualityReport

#: How many B-scans the finiteness check looks at at once (bounds its temporary boolean array).
_CHECK_CHUNK = 8


@dataclass
class SegmentationResult:
    """What :func:`segment` returns.

    Attributes
    ----------
    labels
        uint8 (n_bscans, depth, width): class index per pixel, at the input's own resolution. With the
        Duke scheme, every A-scan is in anatomical order (see :mod:`napari_octseg.ordering`).
    probabilities
        float16 (n_bscans, n_classes, depth, width) softmax probabilities on the input's grid, or
        ``None`` unless requested.
    device
        The torch device that ran the network (``"cpu"``, ``"cuda"``, ``"mps"``...).
    seconds
        Wall-clock time of the whole segmentation.
    batch_size
        The batch size finally used (smaller than requested after an out-of-memory back-off).
    class_names
        Name of each label value, from the checkpoint.
    reflectivity
        How the grey values were read (``"linear"`` or ``"display"``) and ``reflectivity_reason`` why.
    native_spacing_um, model_spacing_um
        (axial, lateral) µm per pixel of the input (``None`` if unknown) and of the model's grid
        (``None`` if the checkpoint does not record it); ``model_shape`` is a B-scan's (depth, width)
        on the model's grid.
    notes
        Sentences for the user about what was assumed (unknown scale, detected reflectivity...).
    uncertainty
        float16 (n_bscans, depth, width) per-pixel uncertainty in [0, 1] on the input's grid: one minus the
        softmax margin between the two likeliest classes (:func:`napari_octseg.quality.pixel_uncertainty`), or
        ``None`` unless requested.
    quality
        Per-B-scan quality with reasons (:class:`~napari_octseg.quality.QualityReport`), or ``None`` unless
        the uncertainty was requested.
    boundary_offsets_px
        The checkpoint's boundary calibration the decoding applied (model-grid rows ILM .. BM, + = deeper),
        or ``None``.
    window_bscans, window_reruns
        How many B-scans the network saw only on the rows around the retina (``window=True``), and how
        many windowed results were refused and run again at full height.
    """

    labels: np.ndarray
    probabilities: np.ndarray | None
    device: str
    seconds: float
    batch_size: int
    class_names: tuple[str, ...] = ()
    reflectivity: str = "display"
    reflectivity_reason: str = ""
    native_spacing_um: tuple[float, float] | None = None
    model_spacing_um: tuple[float, float] | None = None
    model_shape: tuple[int, int] | None = None
    notes: list[str] = field(default_factory=list)
    uncertainty: np.ndarray | None = None
    quality: QualityReport | None = None
    boundary_offsets_px: tuple[float, ...] | None = None
    window_bscans: int = 0
    window_reruns: int = 0

    def provenance(self) -> dict[str, Any]:
        """JSON-serialisable record of the preprocessing decisions (for the labels sidecar)."""
        return {
            "reflectivity": self.reflectivity,
            "reflectivity_reason": self.reflectivity_reason,
            "native_spacing_um": list(self.native_spacing_um) if self.native_spacing_um else None,
            "model_spacing_um": list(self.model_spacing_um) if self.model_spacing_um else None,
            "model_shape": list(self.model_shape) if self.model_shape else None,
            "notes": list(self.notes),
            "boundary_offsets_px": list(self.boundary_offsets_px) if self.boundary_offsets_px else None,
            "retina_window": {"bscans": self.window_bscans, "rerun_full_height": self.window_reruns},
        }


def _as_source(volume: OctVolume | np.ndarray) -> tuple[np.ndarray, str, tuple[float, float, float] | None]:
    """The raw (n, depth, width) array, its declared reflectivity and scale, without copying the data."""
    if isinstance(volume, OctVolume):
        return volume.data, volume.reflectivity, volume.scale_um
    data = np.asarray(volume)
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise InputError(f"expected a B-scan (depth, width) or a volume (n, depth, width); got shape {data.shape}")
    return data, "display", None


def _validate(data: np.ndarray) -> None:
    """Reject input that cannot be segmented, before any work starts (one-line messages)."""
    if data.dtype.kind not in "biuf":
        raise InputError(f"image dtype {data.dtype} is not a real-valued grey image")
    if min(data.shape) == 0:
        raise InputError(f"image is empty (shape {data.shape})")
    if data.dtype.kind != "f":
        return
    bad: list[int] = []
    for start in range(0, data.shape[0], _CHECK_CHUNK):
        finite = np.isfinite(data[start : start + _CHECK_CHUNK]).all(axis=(1, 2))
        bad.extend(start + int(i) for i in np.flatnonzero(~finite))
    if bad:
        where = "all B-scans" if len(bad) == data.shape[0] else f"{len(bad)} B-scan(s), first #{bad[0]}"
        raise InputError(f"image holds NaN or infinite values ({where}); fix or mask them before segmenting")


def _display_batch(data: np.ndarray, reflectivity: str, start: int, stop: int) -> np.ndarray:
    """Display grey values of B-scans ``start:stop`` (float32), computed for this batch only."""
    return OctVolume(data=data[start:stop], reflectivity=reflectivity).display_data()  # type: ignore[arg-type]


def _is_oom(exc: BaseException) -> bool:
    """GPU (``torch.OutOfMemoryError``, older "CUDA out of memory") or host allocation failure."""
    oom_type = getattr(torch, "OutOfMemoryError", None)
    if (oom_type is not None and isinstance(exc, oom_type)) or isinstance(exc, MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _plan(
    data: np.ndarray,
    declared_reflectivity: str,
    declared_scale: tuple[float, float, float] | None,
    model: LoadedModel,
    scale_um: tuple[float, ...] | None,
    reflectivity: str,
) -> tuple[GridMap, str, str, list[str]]:
    """Decide the grid and the intensity handling before any work, with notes for the user."""
    notes: list[str] = []
    kind, reason = resolve_reflectivity(reflectivity, data[: min(len(data), 4)], declared_reflectivity)  # type: ignore[arg-type]
    if kind == "linear" and declared_reflectivity != "linear":
        notes.append(f"grey values read as linear reflectivity ({reason}); pass --reflectivity display if not")
    if scale_um is not None:
        scale = check_spacing(scale_um, "scale")
        if len(scale) != 3:
            raise InputError(f"scale must be three sizes in µm (B-scan, depth, A-scan); got {len(scale)}")
        declared_scale = (scale[0], scale[1], scale[2])
    native = (declared_scale[1], declared_scale[2]) if declared_scale is not None else None
    model_spacing = model.pixel_spacing_um
    if native is None and model_spacing is not None:
        notes.append(
            f"the image's pixel size is unknown: assumed the model's training spacing "
            f"({model_spacing[0]:g} µm axial x {model_spacing[1]:g} µm lateral); give --scale for other devices"
        )
    gm = grid_map(data.shape[1:], native, model_spacing)
    return gm, kind, reason, notes


def segment(
    volume: OctVolume | np.ndarray,
    model: LoadedModel,
    *,
    batch_size: int = 4,
    device: str | torch.device = "auto",
    return_probabilities: bool = False,
    return_uncertainty: bool = False,
    cancel: Callable[[], bool] | None = None,
    scale_um: tuple[float, ...] | None = None,
    reflectivity: str = "auto",
    ordered: bool = True,
    window: bool = True,
    mirror_check: bool = False,
) -> Generator[Progress, None, SegmentationResult]:
    """Segment every B-scan of ``volume`` into the checkpoint's classes.

    Each batch of B-scans is (1) turned into display grey values, (2) resampled to the pixel spacing
    the checkpoint was trained at (when both are known), (3) normalised and run through the network,
    and (4) decoded into labels in anatomical order on the image's own grid.

    Parameters
    ----------
    volume
        An :class:`OctVolume`, or an array (n_bscans, depth, width) / (depth, width) of grey values
        (a 2-D array is one B-scan; its scale is unknown unless ``scale_um`` is given).
    model
        A loaded checkpoint; its intensity normalisation and pixel spacing are applied. An eval-mode
        copy of its network runs on ``device``; the checkpoint's own network is left as it was.
    batch_size
        B-scans per forward pass; halved and retried on out-of-memory.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"mps"`` or a torch device.
    return_probabilities
        Also return float16 softmax probabilities (n_bscans, n_classes, depth, width); this costs
        ``2 * n_classes`` bytes per voxel.
    return_uncertainty
        Also return the float16 per-pixel uncertainty (n_bscans, depth, width) (2 bytes per voxel) and the
        per-B-scan quality (:mod:`napari_octseg.quality`), both computed batch by batch in the same pass.
        The labels are the same either way.
    cancel
        Polled before each batch; when it returns ``True``, :class:`Cancelled` is raised.
    scale_um
        (B-scan, depth, A-scan) µm per pixel, overriding the volume's own scale.
    reflectivity
        ``"auto"`` (the format's declaration, else detected from the values), ``"linear"`` (compressed
        with ``x ** 0.25``) or ``"display"``.
    ordered
        Decode labels in anatomical order (Duke scheme, 10 classes); ``False`` gives the raw argmax.
    window
        Run the network only on the rows around the retina found in the previous B-scans
        (:mod:`napari_octseg.core.retina_window`; ordered 10-class decoding only). A B-scan whose retina
        nears the window's edge is run again at full height. ``False`` runs every row of every B-scan.
    mirror_check
        With ``return_uncertainty``: also segment every B-scan mirrored left-right and measure how much its
        labels change (``mirror_disagreement`` in the quality; a confident error often depends on where a
        structure sits in the image). Twice the network time; the labels are those of the unmirrored pass.

    Yields
    ------
    Progress
        ``done`` B-scans out of ``total``, stage ``"segmenting"``, ``info`` with the batch size and device.

    Returns
    -------
    SegmentationResult

    Raises
    ------
    InputError
        Non-finite, empty or non-numeric input, a bad scale or reflectivity (raised before any work),
        an absent device, or out-of-memory even at batch size 1.
    CheckpointError
        If the network's outputs do not match the checkpoint's class names.
    Cancelled
        If ``cancel()`` returned ``True``.
    """
    if batch_size < 1:
        raise InputError(f"batch size must be at least 1; got {batch_size}")
    data, declared_reflectivity, declared_scale = _as_source(volume)
    _validate(data)
    gm, kind, reason, notes = _plan(data, declared_reflectivity, declared_scale, model, scale_um, reflectivity)
    dev = select_device(device)
    net = inference_network(model.model, dev)
    n, height, width = data.shape
    n_classes = len(model.class_names)
    labels = np.empty((n, height, width), dtype=np.uint8)
    probabilities = np.empty((n, n_classes, height, width), dtype=np.float16) if return_probabilities else None
    uncertainty = np.empty((n, height, width), dtype=np.float16) if return_uncertainty else None
    accumulator = (
        QualityAccumulator.for_grid(gm.native_spacing_um, gm.model_spacing_um, model.pixel_spacing_um)
        if return_uncertainty
        else None
    )

    t0 = time.perf_counter()
    done = 0
    tracker = WindowTracker(window and ordered and n_classes == N_CLASSES, 2 ** int(getattr(net, "depth", 0)))
    yield Progress(0, n, "segmenting", {"batch_size": batch_size, "device": str(dev)})
    while done < n:
        if cancel is not None and cancel():
            raise Cancelled("segmentation cancelled; nothing was written")
        stop = tracker.batch_stop(done, batch_size, n)
        x = normalize_bscans(to_model_grid(_display_batch(data, kind, done, stop), gm), model.normalization)
        out_of_memory = False
        mirrored: np.ndarray | None = None
        try:
            batch = forward_batch(
                net,
                x,
                dev,
                gm,
                ordered=ordered,
                want_probabilities=probabilities is not None,
                want_uncertainty=return_uncertainty,
                offsets_px=model.boundary_offsets_px,
                window=tracker.window,
            )
            if mirror_check and accumulator is not None:
                flipped = forward_batch(
                    net,
                    np.ascontiguousarray(x[:, :, ::-1]),
                    dev,
                    gm,
                    ordered=ordered,
                    want_probabilities=False,
                    offsets_px=model.boundary_offsets_px,
                    window=tracker.window,
                )
                mirrored = flipped.labels[:, :, ::-1]
        except Exception as exc:
            if not _is_oom(exc):
                raise
            out_of_memory = True
        if out_of_memory:
            # Outside the except block, so the failed pass's frames (and tensors) are gone.
            release_cached(dev)
            if batch_size == 1:
                raise InputError(
                    f"out of memory on {dev} even with batch size 1 at {height} x {width}; try the CPU"
                ) from None
            batch_size //= 2
            continue
        if batch.n_out != n_classes:
            raise CheckpointError(
                f"{model.source}: network outputs {batch.n_out} classes but the checkpoint names {n_classes}"
            )
        labels[done:stop] = batch.labels
        if probabilities is not None:
            probabilities[done:stop] = batch.probabilities
        if uncertainty is not None and accumulator is not None and batch.uncertainty is not None:
            uncertainty[done:stop] = batch.uncertainty
            accumulator.add(x, batch.labels, batch.uncertainty, mirrored)
        edges = batch.edges
        tracker.record(batch.windowed, batch.reruns, None if edges is None else (edges[:, 0], edges[:, -1]), x.shape[1])
        done = stop
        yield Progress(done, n, "segmenting", {"batch_size": batch_size, "device": str(dev)})
    return SegmentationResult(
        labels=labels,
        probabilities=probabilities,
        device=str(dev),
        seconds=time.perf_counter() - t0,
        batch_size=batch_size,
        class_names=tuple(model.class_names),
        reflectivity=kind,
        reflectivity_reason=reason,
        native_spacing_um=gm.native_spacing_um,
        model_spacing_um=gm.model_spacing_um,
        model_shape=gm.model_shape,
        notes=notes,
        uncertainty=uncertainty,
        quality=accumulator.report() if accumulator is not None else None,
        boundary_offsets_px=model.boundary_offsets_px if ordered and n_classes == N_CLASSES else None,
        window_bscans=tracker.windowed,
        window_reruns=tracker.reruns,
    )


__all__ = [
    "SegmentationResult",
    "bscan_hashes",
    "edited_bscans",
    "inference_network",
    "labels_sidecar",
    "release_cached",
    "segment",
]

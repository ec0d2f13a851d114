"""Memory a network job will need, checked against the memory available before the job starts.

On the CPU, Linux overcommits: a volume too large for the machine is not an out-of-memory exception
that a smaller batch could recover from, but a process killed by the kernel part-way, with no message.
So segmentation, Grad-CAM and fine-tuning estimate their peak from the volume's shape, the batch size
and the network's widths, and refuse up front with one line that says what to change.

The constants come from ``benchmarks/bench_memory_model.py`` (results in
``benchmarks/results/memory_model.txt``): the extra peak resident memory of a job, fitted as
``per_voxel * n * H * W + per_batch_pixel * batch * H * W`` for the bundled network, rounded up
(measured: segmentation 4.5 B/voxel + 463 B per batch pixel, 438-540 B/pixel at batch 1; Grad-CAM
43 B/voxel + 487 B per batch pixel; 2 cores, torch 2.13 CPU). The
batch term scales with the network's activations (widths per level, each level a quarter of the
pixels of the one above).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..core.errors import InputError
from ..core.resources import format_bytes, require_memory

#: Bytes per voxel of the volume-sized arrays (input, normalised copy, labels, results), per job.
PER_VOXEL: dict[str, float] = {"segment": 16.0, "gradcam": 24.0, "finetune": 24.0}
#: Bytes per pixel of one batch in the bundled network (widths 12, 24, 48, 96, 96), per job.
PER_BATCH_PIXEL: dict[str, float] = {"segment": 560.0, "gradcam": 600.0, "finetune": 560.0}
#: Activation measure of the bundled network's widths (see :func:`_activation_units`).
_REFERENCE_WIDTHS: tuple[int, ...] = (12, 24, 48, 96, 96)


def _activation_units(widths: Sequence[int]) -> float:
    """Channels summed over the levels, each weighted by its share of the pixels (1, 1/4, 1/16...)."""
    return sum(w / 4.0**level for level, w in enumerate(widths))


def estimate_memory(
    shape: Sequence[int],
    batch_size: int,
    n_classes: int = 10,
    widths: Sequence[int] = _REFERENCE_WIDTHS,
    job: str = "segment",
    include_network: bool = True,
) -> int:
    """Estimated extra peak bytes of a network job on the CPU.

    Parameters
    ----------
    shape
        The volume (n_bscans, depth, width) in pixels, or one B-scan (depth, width).
    batch_size
        B-scans per forward pass.
    n_classes
        The network's outputs (Grad-CAM keeps one heatmap per class and voxel).
    widths
        Channels per level of the network.
    job
        ``"segment"``, ``"gradcam"`` or ``"finetune"``.
    include_network
        Count the network's activations (``False`` when they live on an accelerator).
    """
    dims = [int(d) for d in shape]
    if len(dims) == 2:
        dims = [1, *dims]
    n, h, w = dims[-3:]
    scale = max(1.0, _activation_units(widths) / _activation_units(_REFERENCE_WIDTHS))
    per_voxel = PER_VOXEL[job] + (4.0 * n_classes if job == "gradcam" else 0.0)
    batch = min(max(1, int(batch_size)), max(1, n))
    network = PER_BATCH_PIXEL[job] * scale * batch * h * w if include_network else 0.0
    return int(per_voxel * n * h * w + network)


def check_memory(
    shape: Sequence[int],
    batch_size: int,
    n_classes: int = 10,
    widths: Sequence[int] = _REFERENCE_WIDTHS,
    job: str = "segment",
    device: str = "cpu",
) -> int:
    """Refuse a job that would need more memory than this machine has; return the estimate (bytes).

    On CUDA/MPS the network's activations live on the accelerator (where out-of-memory is an exception
    the batch back-off handles), so only the volume-sized host arrays are counted there.

    Raises
    ------
    InputError
        One line: the estimate, what is available, and what to change (batch size, cropping).
    """
    on_cpu = str(device).startswith("cpu") or str(device) == "auto"
    needed = estimate_memory(shape, batch_size, n_classes, widths, job, include_network=on_cpu)
    dims = " x ".join(str(int(d)) for d in shape)
    hint = "crop the volume or process fewer B-scans at a time"
    if batch_size > 1:
        hint = f"use a smaller batch size (--batch-size 1) or {hint}"
    verb = {"segment": "segmenting", "gradcam": "Grad-CAM of", "finetune": "fine-tuning on"}[job]
    require_memory(needed, f"{verb} {dims} at batch size {batch_size}", hint, error=InputError)
    return needed


def check_model_memory(
    shape: Sequence[int], model: object, batch_size: int, device: object, job: str = "segment"
) -> int:
    """:func:`check_memory` for a loaded checkpoint (its classes and widths) on ``device``."""
    config = getattr(model, "config", None)
    widths = tuple(getattr(config, "widths", _REFERENCE_WIDTHS))
    n_classes = int(getattr(config, "n_classes", 10))
    return check_memory(shape, batch_size, n_classes, widths, job, device=str(device))


__all__ = ["PER_BATCH_PIXEL", "PER_VOXEL", "check_memory", "check_model_memory", "estimate_memory", "format_bytes"]

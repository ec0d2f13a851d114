"""After fine-tuning: segment the B-scans the model did not learn from, keeping the corrected ones.

The Fine-tune dock's "Segment the rest with the new model" (and any script) calls :func:`segment_rest`:
the B-scans left to segment form a sub-volume that the new model segments; the result is merged with the
kept corrected B-scans into a full label volume, with the edit record (:mod:`napari_octseg.io.provenance`)
that later tells which B-scans the user edits next.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ..core.errors import InputError, LabelError
from ..core.progress import CancelCheck, Progress
from ..core.volume import OctVolume
from ..inference import segment
from ..io.provenance import edit_record
from ..models.checkpoint import LoadedModel


@dataclass
class Resegmentation:
    """What :func:`segment_rest` returns.

    Attributes
    ----------
    labels
        uint8 (n_bscans, depth, width): the new model's labels, and the kept B-scans' own labels.
    segmented, kept
        0-based B-scans segmented by the new model, and those whose labels were kept.
    record
        The edit record of ``labels`` (method + per-B-scan digests).
    """

    labels: npt.NDArray[np.uint8]
    segmented: list[int]
    kept: list[int]
    record: dict[str, Any]


def bscans_to_segment(n_bscans: int, learned: Sequence[int], keep: bool) -> list[int]:
    """The B-scans :func:`segment_rest` segments: all, or (``keep``) those not in ``learned``."""
    skip = {int(i) for i in learned} if keep else set()
    return [i for i in range(n_bscans) if i not in skip]


def segment_rest(
    volume: OctVolume,
    model: LoadedModel,
    labels: np.ndarray | None,
    learned: Sequence[int],
    *,
    device: str = "auto",
    cancel: CancelCheck | None = None,
) -> Generator[Progress, None, Resegmentation]:
    """Segment the B-scans of ``volume`` not in ``learned`` with ``model``; keep the learned ones' ``labels``.

    Parameters
    ----------
    volume
        The image (n_bscans, depth, width).
    model
        The fine-tuned model.
    labels
        The corrected labels (same number of voxels as ``volume``), whose ``learned`` B-scans are kept; or
        ``None`` to segment every B-scan.
    learned
        0-based B-scans the model learned from.
    device, cancel
        As for :func:`napari_octseg.inference.segment` (``cancel`` raises ``Cancelled``; nothing is returned).

    Raises
    ------
    LabelError
        ``labels`` do not match the volume.
    InputError
        Nothing is left to segment (every B-scan was learned from and is kept).
    """
    shape = volume.shape
    keep = labels is not None
    if labels is not None and np.size(labels) != np.prod(shape):
        raise LabelError(f"labels have {np.size(labels)} voxels; the image has {shape} (B-scans, depth, width)")
    rest = bscans_to_segment(shape[0], learned, keep)
    if not rest:
        raise InputError("every B-scan was learned from; nothing left to segment")
    merged = (
        np.array(labels, dtype=np.uint8, copy=True).reshape(shape) if labels is not None else np.zeros(shape, np.uint8)
    )
    sub = OctVolume(data=volume.data[rest], scale_um=volume.scale_um, reflectivity=volume.reflectivity)
    result = yield from segment(sub, model, device=device, cancel=cancel)
    merged[rest] = result.labels
    kept = [i for i in range(shape[0]) if i not in set(rest)]
    return Resegmentation(merged, rest, kept, edit_record(merged))

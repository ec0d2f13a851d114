"""Data for fine-tuning: which B-scans a user corrected, and replay B-scans against forgetting.

Pure numpy (no torch), shared by the fine-tune widget, the CLI and :mod:`.finetune`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.classes import N_CLASSES
from ..core.errors import InputError, LabelError
from ..io.duke import load_npz_arrays
from ..io.provenance import edited_bscans

# Here, not in finetune.py, so that ``octseg finetune --help`` can show them without importing torch.
#: Defaults chosen with benchmarks/bench_finetune.py (2 corrected B-scans, Duke subjects 07-08).
DEFAULT_EPOCHS = 12
DEFAULT_LR = 1e-4
DEFAULT_FREEZE_ENCODER_EPOCHS = 4
#: Uncorrected B-scans of the volume (evenly spaced) that the base model labels for self-replay.
DEFAULT_SELF_REPLAY_BSCANS = 16


def parse_bscans(text: str, n_bscans: int) -> list[int]:
    """Parse a B-scan list such as ``"0, 5, 9"`` or ``"3-6, 10"`` (0-based, ranges inclusive).

    Returns the sorted unique indices.

    Raises
    ------
    InputError
        If the text is not such a list, or an index is outside ``0 .. n_bscans - 1``.
    """
    out: set[int] = set()
    for part in filter(None, (p.strip() for p in re.split(r"[,\s;]+", text or ""))):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if m is None:
            raise InputError(f"B-scan list: {part!r} is not an index or a range like 3-6")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise InputError(f"B-scan list: range {part!r} runs backwards")
        if hi >= n_bscans:
            raise InputError(
                f"B-scan list: index {hi} is out of range (the volume has {n_bscans} B-scans, 0-{n_bscans - 1})"
            )
        out.update(range(lo, hi + 1))
    return sorted(out)


def format_bscans(indices: Sequence[int]) -> str:
    """The inverse of :func:`parse_bscans`: ``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    parts: list[str] = []
    idx = sorted(set(int(i) for i in indices))
    k = 0
    while k < len(idx):
        j = k
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        parts.append(str(idx[k]) if j == k else f"{idx[k]}-{idx[j]}")
        k = j + 1
    return ", ".join(parts)


def changed_bscans(labels: np.ndarray, auto_labels: np.ndarray | None) -> list[int]:
    """Indices of the B-scans whose labels differ from the automatic segmentation.

    Parameters
    ----------
    labels
        Current (corrected) labels, (n_bscans, depth, width) or (depth, width).
    auto_labels
        The last automatic result of the same shape, or ``None`` (then nothing is known to be
        corrected and the list is empty).
    """
    if auto_labels is None:
        return []
    a = np.asarray(labels)
    b = np.asarray(auto_labels)
    a = a[None] if a.ndim == 2 else a
    b = b[None] if b.ndim == 2 else b
    if a.shape != b.shape:
        return []
    return edited_bscans(a, b)


def self_replay_bscans(candidates: Sequence[int], limit: int) -> list[int]:
    """Up to ``limit`` of the B-scan indices ``candidates`` (sorted), evenly spaced through them."""
    others = sorted(int(i) for i in candidates)
    if limit <= 0 or not others:
        return []
    if len(others) <= limit:
        return others
    return [others[int(round(k))] for k in np.linspace(0, len(others) - 1, limit)]


@dataclass
class ReplaySet:
    """B-scans of the base model's training data, mixed into fine-tuning to limit forgetting.

    Parameters
    ----------
    images
        Display grey values, one (depth, width) float array per B-scan (sizes may differ).
    labels
        uint8 class labels, one array per B-scan of its image's shape.
    source
        Where they came from (written into the new checkpoint's training record).
    """

    images: list[np.ndarray]
    labels: list[np.ndarray]
    source: str = "<memory>"

    def __post_init__(self) -> None:
        if len(self.images) != len(self.labels) or not self.images:
            raise InputError("replay set needs as many label arrays as images, and at least one")
        for img, lab in zip(self.images, self.labels):
            if np.shape(img) != np.shape(lab):
                raise LabelError(f"replay set: image shape {np.shape(img)} != label shape {np.shape(lab)}")


def load_replay(paths: Sequence[str | os.PathLike], per_file: int | None = None, seed: int = 0) -> ReplaySet:
    """Read replay B-scans from Duke-style ``.npz`` files (``images``, ``labels``: (n, depth, width) uint8).

    Parameters
    ----------
    paths
        The files (e.g. the base model's training subjects).
    per_file
        Keep at most this many B-scans per file, chosen at random with ``seed`` (``None``: all).
    """
    rng = np.random.default_rng(seed)
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for path in paths:
        arrays = load_npz_arrays(path, ("images", "labels"), error=InputError)
        imgs, labs = arrays["images"], arrays["labels"]
        if labs.dtype.kind not in "ui" or (labs.size and (labs.min() < 0 or labs.max() >= N_CLASSES)):
            raise LabelError(f"{path}: replay labels must be integers 0..{N_CLASSES - 1}")
        if imgs.shape != labs.shape or imgs.ndim != 3:
            raise LabelError(f"{path}: images {imgs.shape} and labels {labs.shape} must be equal (n, depth, width)")
        keep = np.arange(len(imgs))
        if per_file is not None and per_file < len(keep):
            keep = np.sort(rng.choice(keep, per_file, replace=False))
        images.extend(imgs[k].astype(np.float32) for k in keep)
        labels.extend(labs[k].astype(np.uint8) for k in keep)
    return ReplaySet(images, labels, source=", ".join(str(p) for p in paths))

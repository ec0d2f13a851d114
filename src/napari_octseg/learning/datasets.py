"""Training data: normalised B-scans with their label masks, cropped and augmented on the fly.

Every B-scan is its own 2-D sample (Duke's 11 annotated B-scans per subject are not contiguous).
B-scans may have different widths (Duke: 500-548 columns).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..core.classes import N_CLASSES, SCORED_CLASSES
from ..core.errors import InputError, LabelError
from ..models.normalization import DEFAULT_NORMALIZATION, normalize_bscans
from .augment import AugmentConfig, device_jitter, jitter_intensity, sample_crop
from .losses import IGNORE_INDEX


def validate_pairs(
    images: Sequence[np.ndarray] | np.ndarray,
    labels: Sequence[np.ndarray] | np.ndarray,
    n_classes: int = N_CLASSES,
    what: str = "training set",
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Check B-scans and label masks before any work; return them as float32 / uint8 lists.

    Parameters
    ----------
    images
        Sequence (or (n, H, W) array) of normalised (H, W) B-scans.
    labels
        Matching sequence (or array) of (H, W) integer masks with classes ``0 .. n_classes - 1``.

    Raises
    ------
    InputError
        Empty set, different counts, a B-scan that is not 2-D, or one holding NaN/inf.
    LabelError
        A mask whose shape differs from its B-scan, or with a class outside the scheme.
    """
    images = list(images) if not isinstance(images, np.ndarray) or images.ndim == 3 else [images]
    labels = list(labels) if not isinstance(labels, np.ndarray) or labels.ndim == 3 else [labels]
    if not images:
        raise InputError(f"{what} is empty: at least one labelled B-scan is needed")
    if len(images) != len(labels):
        raise LabelError(f"{what}: {len(images)} B-scans but {len(labels)} label masks")
    out_i, out_l = [], []
    for k, (img, lab) in enumerate(zip(images, labels)):
        img = np.asarray(img)
        lab = np.asarray(lab)
        if img.ndim != 2:
            raise InputError(f"{what}: B-scan {k} has shape {img.shape}, expected (height, width)")
        if lab.shape != img.shape:
            raise LabelError(f"{what}: label mask {k} has shape {lab.shape} but its B-scan has {img.shape}")
        if not np.issubdtype(lab.dtype, np.integer):
            raise LabelError(f"{what}: label mask {k} has dtype {lab.dtype}; integer classes are needed")
        if lab.size and (lab.min() < 0 or lab.max() >= n_classes):
            bad = int(lab.max() if lab.max() >= n_classes else lab.min())
            raise LabelError(f"{what}: label mask {k} holds class {bad}, outside the scheme 0..{n_classes - 1}")
        img = img.astype(np.float32, copy=False)
        if not np.isfinite(img).all():
            raise InputError(f"{what}: B-scan {k} holds NaN or infinite values")
        out_i.append(img)
        out_l.append(lab.astype(np.uint8, copy=False))
    return out_i, out_l


class SegDataset(Dataset):
    """(image, labels) samples for :func:`napari_octseg.learning.fit`.

    Parameters
    ----------
    images
        Normalised float32 (H, W) B-scans (values about [0, 1]); widths may differ.
    labels
        uint8 (H, W) masks, classes ``0 .. n_classes - 1``.
    augment
        ``True`` for the default :class:`AugmentConfig`, an ``AugmentConfig``, or ``False``.
    crop
        (height, width) random crops (training), or ``None`` for whole B-scans (validation;
        batch them with :func:`pad_collate`).
    repeats
        Samples per B-scan per epoch (each a new random crop).
    focus_p
        With crops, the probability that a crop is placed on a retina or fluid pixel.

    Items are ``(image (1, h, w) float32 tensor, labels (h, w) int64 tensor)``; pixels without
    ground truth carry :data:`IGNORE_INDEX`.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        augment: bool | AugmentConfig = False,
        crop: tuple[int, int] | None = None,
        n_classes: int = N_CLASSES,
        repeats: int = 1,
        focus_p: float = 0.8,
    ) -> None:
        self.images, self.labels = validate_pairs(images, labels, n_classes)
        self.n_classes = n_classes
        self.augment = AugmentConfig() if augment is True else (augment or None)
        self.crop = (int(crop[0]), int(crop[1])) if crop is not None else None
        self.repeats = max(1, int(repeats))
        self.focus_p = focus_p
        #: retina/fluid pixels of each B-scan, where crops are centred (only with crops)
        self._focus = [self._focus_points(lab) for lab in self.labels] if self.crop else []
        self._rng: np.random.Generator | None = None
        self._rng_key: tuple[int, int] | None = None

    @staticmethod
    def _focus_points(lab: np.ndarray, max_points: int = 4096) -> np.ndarray:
        pts = np.argwhere(np.isin(lab, SCORED_CLASSES))
        if len(pts) > max_points:
            pts = pts[np.linspace(0, len(pts) - 1, max_points).astype(int)]
        return pts

    def _generator(self) -> np.random.Generator:
        # One stream per process and DataLoader worker, derived from torch's seed (which fit() sets).
        key = (os.getpid(), torch.initial_seed())
        if self._rng is None or self._rng_key != key:
            self._rng = np.random.default_rng(torch.initial_seed() % (2**63))
            self._rng_key = key
        return self._rng

    def __len__(self) -> int:
        return len(self.images) * self.repeats

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        i = index % len(self.images)
        image, labels = self.images[i], self.labels[i]
        if self.crop is None and self.augment is None:
            return torch.from_numpy(image[None].copy()), torch.from_numpy(labels.astype(np.int64))
        rng = self._generator()
        if self.crop is not None:
            focus = self._focus[i] if rng.random() < self.focus_p else None
            image, labels = sample_crop(image, labels, self.crop, rng, self.augment, focus)
        elif self.augment is not None:
            image, labels = sample_crop(image, labels, (image.shape[0], image.shape[1]), rng, self.augment)
        if self.augment is not None:
            image, labels = device_jitter(image, labels, rng, self.augment)
            image = jitter_intensity(image, rng, self.augment)
        return torch.from_numpy(np.ascontiguousarray(image)[None]), torch.from_numpy(labels.astype(np.int64))


def pad_collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack samples of different sizes, padding at the bottom/right (image 0, labels ignored)."""
    h = max(x.shape[-2] for x, _ in batch)
    w = max(x.shape[-1] for x, _ in batch)
    images = torch.zeros(len(batch), batch[0][0].shape[0], h, w, dtype=batch[0][0].dtype)
    labels = torch.full((len(batch), h, w), IGNORE_INDEX, dtype=torch.int64)
    for k, (x, y) in enumerate(batch):
        images[k, :, : x.shape[-2], : x.shape[-1]] = x
        labels[k, : y.shape[-2], : y.shape[-1]] = y
    return images, labels


def load_duke_npz(
    paths: Sequence[str | os.PathLike],
    normalization: dict | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Read Duke DME ``Subject_NN.npz`` files (``images``/``labels`` uint8 (11, 496, W)).

    Returns
    -------
    images
        Normalised float32 (496, W) B-scans (see :func:`~napari_octseg.models.normalize_bscans`).
    labels
        uint8 (496, W) masks.
    subjects
        Subject id (e.g. ``"Subject_07"``) of each B-scan, for subject-wise splits.

    Raises
    ------
    InputError
        No paths, a missing file, or a file without both arrays.
    LabelError
        Label/image shape mismatch or classes outside the scheme.
    """
    if not paths:
        raise InputError("no Duke .npz files given")
    images: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    subjects: list[str] = []
    for p in paths:
        p = Path(p)
        if not p.is_file():
            raise InputError(f"{p}: no such file")
        try:
            with np.load(p, allow_pickle=False) as npz:
                img, lab = npz["images"], npz["labels"]
        except (KeyError, ValueError, OSError) as exc:
            raise InputError(f"{p}: not a Duke .npz with 'images' and 'labels' ({exc})") from None
        if img.shape != lab.shape or img.ndim != 3:
            raise LabelError(f"{p}: images {img.shape} and labels {lab.shape} must be equal (n, H, W) shapes")
        norm = normalize_bscans(img, normalization or DEFAULT_NORMALIZATION)
        validate_pairs(norm, lab, what=str(p))
        images.extend(norm)
        labels.extend(lab)
        subjects.extend([p.stem] * len(img))
    return images, labels, subjects


def duke_files(folder: str | os.PathLike, subjects: Sequence[int] | None = None) -> list[Path]:
    """``Subject_NN.npz`` files of ``folder`` (all, or the given subject numbers), sorted."""
    folder = Path(folder)
    found = sorted(folder.glob("Subject_*.npz"))
    if subjects is not None:
        wanted = set(int(s) for s in subjects)
        found = [f for f in found if int(re.findall(r"\d+", f.stem)[-1]) in wanted]
        missing = wanted - {int(re.findall(r"\d+", f.stem)[-1]) for f in found}
        if missing:
            raise InputError(f"{folder}: no Subject_NN.npz for subject(s) {sorted(missing)}")
    if not found:
        raise InputError(f"{folder}: no Subject_NN.npz files")
    return found


def class_weights_from_labels(
    labels: Sequence[np.ndarray],
    n_classes: int = N_CLASSES,
    power: float = 0.5,
    clip: tuple[float, float] = (0.1, 10.0),
) -> np.ndarray:
    """Median-frequency class weights ``(median_freq / freq) ** power``, clipped; (C,) float32.

    Rare classes (thin layers, fluid) get weights above 1, the large background classes below 1.
    A class absent from ``labels`` gets the upper clip value.
    """
    counts = np.zeros(n_classes, np.float64)
    for lab in labels:
        counts += np.bincount(np.asarray(lab).ravel(), minlength=n_classes)[:n_classes]
    freq = counts / max(counts.sum(), 1)
    present = freq > 0
    med = np.median(freq[present]) if present.any() else 1.0
    w = np.full(n_classes, clip[1])
    w[present] = (med / freq[present]) ** power
    return np.clip(w, *clip).astype(np.float32)

"""The torch-side pieces of the fine-tuning recipe (see :mod:`.finetune`).

The training set mixes the corrected B-scans with replay B-scans (:class:`Mixture`): the volume's own
uncorrected B-scans labelled by the base model (:func:`self_replay`) and, when given, B-scans from the base
model's training data. BatchNorm stays in inference mode while the rest trains (:func:`batchnorm_in_eval`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..core.errors import Cancelled
from ..core.progress import CancelCheck, run_generator
from ..core.volume import OctVolume
from ..grid import to_model_grid, volume_grid
from ..inference import segment
from ..models.checkpoint import LoadedModel
from ..models.normalization import normalize_bscans
from .datasets import SegDataset


class Mixture(Dataset):
    """Each epoch: ``n_user`` items cycling over the corrected B-scans, then ``n_replay`` random replay items."""

    def __init__(self, user: SegDataset, n_user: int, replay: SegDataset | None, n_replay: int, seed: int) -> None:
        self.user, self.n_user = user, n_user
        self.replay, self.n_replay = replay, n_replay if replay is not None else 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.n_user + self.n_replay

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if i < self.n_user or self.replay is None:
            return self.user[i % len(self.user)]
        return self.replay[int(self.rng.integers(len(self.replay)))]


@contextlib.contextmanager
def batchnorm_in_eval(model: nn.Module) -> Iterator[None]:
    """Keep every BatchNorm layer in inference mode while ``model`` trains.

    With a batch of 2-4 crops the batch statistics are noise; the base model's running statistics
    (from its large training set) are the better estimate, and keeping them fixed is part of what
    stops the network drifting away from what it knew. (A forward pre-hook puts each BatchNorm back in
    eval mode right before it runs, whatever ``model.train()`` set.)
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    handles = [m.register_forward_pre_hook(_to_eval) for m in norms]
    for m in norms:
        m.eval()
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _to_eval(module: nn.Module, _inputs: tuple[torch.Tensor, ...]) -> None:
    module.training = False


def self_replay(
    volume: OctVolume, base: LoadedModel, dev: torch.device, cancel: CancelCheck | None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Normalised images and the base model's labels of ``volume``'s B-scans (lists of (depth, width))."""
    try:
        result = run_generator(segment(volume, base, device=dev, cancel=cancel))
    except Cancelled:
        raise Cancelled("fine-tuning cancelled; no checkpoint was written") from None
    gm = volume_grid(volume.shape, volume.scale_um, base.pixel_spacing_um)
    images = normalize_bscans(to_model_grid(volume.display_data(), gm), base.normalization)
    return list(images), list(to_model_grid(result.labels, gm, nearest=True))

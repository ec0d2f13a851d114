"""Settings, result and output-path checks of :func:`napari_octseg.learning.finetune.finetune`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import InputError, OctsegError
from ..models.checkpoint import LoadedModel
from ..models.registry import WEIGHTS_DIR
from .finetune_data import DEFAULT_SELF_REPLAY_BSCANS


@dataclass
class FinetuneOptions:
    """The less common settings of :func:`finetune`.

    Attributes
    ----------
    batch_size
        Crops per optimisation step.
    samples_per_epoch
        Augmented crops drawn from the corrected B-scans per epoch, whatever their number.
    replay_fraction
        Fraction of each epoch's samples drawn from the replay B-scans, when there are any.
    self_replay_bscans
        At most this many uncorrected B-scans of the volume, evenly spaced, segmented by the base model
        and replayed with those labels (0: none).
    crop
        (rows, A-scans) of the random training crops (clipped to the B-scan), placed mostly on the
        retina, as the bundled model was trained.
    freeze_batchnorm
        Keep BatchNorm layers in inference mode with the base model's statistics: with batches of a
        few crops the batch statistics are noise, and fixed statistics limit drift.
    max_seconds
        Time budget: training stops after the epoch during which it is exceeded (best epoch kept).
    seed
        Seeds the crops, augmentation and replay draws.
    """

    batch_size: int = 4
    samples_per_epoch: int = 16
    replay_fraction: float = 0.5
    self_replay_bscans: int = DEFAULT_SELF_REPLAY_BSCANS
    crop: tuple[int, int] = (256, 256)
    freeze_batchnorm: bool = True
    max_seconds: float | None = None
    seed: int = 0

    def check(self) -> None:
        if self.batch_size < 1 or self.samples_per_epoch < 1 or min(self.crop) < 16:
            raise InputError("batch size and samples per epoch must be >= 1, crop sides >= 16")
        if self.self_replay_bscans < 0:
            raise InputError("self-replay B-scans must be >= 0")
        if not 0.0 <= self.replay_fraction < 1.0:
            raise InputError("replay fraction must lie in [0, 1)")


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns.

    ``model`` is the fine-tuned model (on the CPU), or the unchanged base model when training diverged;
    ``checkpoint_path`` is ``None`` exactly when no checkpoint was written.
    """

    model: LoadedModel
    checkpoint_path: Path | None
    stopped_reason: str
    bscans: list[int]
    best_epoch: int | None
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    message: str = ""


# --------------------------------------------------------------------------- guards


def check_out_path(out_path: str | os.PathLike, base: LoadedModel, overwrite: bool = False) -> Path:
    """Refuse output paths that would replace the bundled weights, the base model or an existing file.

    Raises
    ------
    InputError
        If ``out_path`` lies inside the package's bundled-weights folder or is the base model's file.
    OctsegError
        If ``out_path`` exists and ``overwrite`` is false.
    """
    out = Path(out_path).expanduser()
    resolved = out.resolve()
    weights = WEIGHTS_DIR.resolve()
    if resolved == weights or weights in resolved.parents:
        raise InputError(f"{out}: refusing to write inside the bundled weights folder; choose another path")
    base_file = Path(base.source).expanduser()
    if base_file.is_file() and base_file.resolve() == resolved:
        raise InputError(f"{out}: this is the base model's own file; fine-tuning writes a new checkpoint")
    if out.is_dir():
        raise InputError(f"{out}: is a folder; give a checkpoint file name such as finetuned.pt")
    if out.exists() and not overwrite:
        raise OctsegError(f"{out}: already exists (use --force to overwrite, or choose a new name)")
    return out

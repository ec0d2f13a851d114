"""Fine-tune a segmentation model on the B-scans a user corrected.

The user segments a volume, corrects a few B-scans with the label brush, and asks the network to learn
from exactly those corrections. :func:`finetune` builds a small training set from the listed B-scans
(normalised like inference), starts from a copy of the base model and runs the shared
:func:`~napari_octseg.learning.engine.fit` generator with a recipe suited to a handful of examples:
low learning rate, augmentation, BatchNorm kept in inference mode (batches are tiny), the encoder frozen
for the first epochs and replay mixed in to guard against forgetting: by default the volume's own
uncorrected B-scans labelled by the base model ("self-replay": always available, and it keeps the model
where the user made no correction), plus, when given, B-scans from the base model's training data.
The result is written to a NEW checkpoint whose training record names the base model and the data it
saw; the corrected labels and the bundled weights are never touched.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import os
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..core.errors import Cancelled, InputError, LabelError
from ..core.volume import OctVolume
from ..grid import to_model_grid, volume_grid
from ..models.checkpoint import LoadedModel, save_checkpoint
from ..models.device import select_device
from ..models.normalization import normalize_bscans
from .finetune_data import (
    DEFAULT_EPOCHS,
    DEFAULT_FREEZE_ENCODER_EPOCHS,
    DEFAULT_LR,
    DEFAULT_SELF_REPLAY_BSCANS,
    ReplaySet,
    changed_bscans,
    format_bscans,
    load_replay,
    parse_bscans,
    self_replay_bscans,
)
from .finetune_options import FinetuneOptions, FinetuneResult, check_out_path
from .finetune_recipe import Mixture, batchnorm_in_eval, self_replay
from .records import plain, plain_dict

#: Smallest B-scan side (pixels) fine-tuning accepts: its random crops need room to move.
MIN_BSCAN_SIDE = 16


def _validate(
    volume: OctVolume, labels: np.ndarray, bscans: Sequence[int], base: LoadedModel
) -> tuple[list[int], np.ndarray]:
    """Check inputs before any work; return the B-scan list and a private copy of their labels."""
    shape = volume.shape
    labels = np.asarray(labels)
    labels = labels[None] if labels.ndim == 2 else labels  # one B-scan: (depth, width) is fine too
    if labels.shape != shape:
        raise LabelError(f"labels have shape {labels.shape} but the image is {shape} (B-scans, depth, width)")
    if min(shape[1], shape[2]) < MIN_BSCAN_SIDE:
        raise InputError(
            f"B-scans of {shape[1]} x {shape[2]} pixels are too small to learn from "
            f"(fine-tuning crops need at least {MIN_BSCAN_SIDE} x {MIN_BSCAN_SIDE})"
        )
    raw = [int(i) for i in bscans]
    if not raw:
        raise InputError("no corrected B-scans given: mark at least one B-scan to learn from")
    bad = [i for i in raw if not 0 <= i < shape[0]]
    if bad:
        raise InputError(f"B-scan index {bad[0]} is out of range (the volume has {shape[0]} B-scans)")
    picked = sorted(set(raw))
    labs = labels[picked]
    if not np.issubdtype(labs.dtype, np.integer):
        if not np.isfinite(labs).all() or (labs != np.round(labs)).any():
            raise LabelError("labels must be whole class numbers (found fractions or NaN)")
    if labs.min() < 0 or labs.max() >= base.n_classes:
        raise LabelError(
            f"labels hold class {int(labs.max()) if labs.max() >= base.n_classes else int(labs.min())}; "
            f"the model knows classes 0-{base.n_classes - 1}"
        )
    if not np.isfinite(volume.data[picked]).all():
        raise InputError("the image holds NaN or infinite values in the corrected B-scans")
    return picked, labs.astype(np.uint8)  # astype copies: the caller's array is never touched


# --------------------------------------------------------------------------- data


def _base_summary(base: LoadedModel) -> dict[str, Any]:
    summary = {k: v for k, v in base.training.items() if k not in ("history",)}
    return {"source": base.source, "training": plain(summary)}


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- fine-tuning


def finetune(
    volume: OctVolume | np.ndarray,
    labels: np.ndarray,
    bscans: Sequence[int],
    base: LoadedModel,
    *,
    out_path: str | os.PathLike,
    epochs: int = DEFAULT_EPOCHS,
    lr: float = DEFAULT_LR,
    replay: ReplaySet | None = None,
    freeze_encoder_epochs: int = DEFAULT_FREEZE_ENCODER_EPOCHS,
    device: str | torch.device = "auto",
    cancel: Callable[[], bool] | None = None,
    options: FinetuneOptions | None = None,
    overwrite: bool = False,
    data_source: dict[str, Any] | None = None,
) -> Generator[Any, None, FinetuneResult]:
    """Fine-tune ``base`` on the corrected B-scans ``bscans`` of ``labels`` and save a new checkpoint.

    Inputs are validated when this function is called (before any work; nothing is written); the
    returned generator does the training: it yields the ``FitEvent`` s of
    :func:`napari_octseg.learning.engine.fit` and returns a :class:`FinetuneResult`.

    Parameters
    ----------
    volume
        The OCT volume (n_bscans, depth, width): an :class:`OctVolume`, or an array of display grey values.
    labels
        Corrected labels, integer (n_bscans, depth, width) of the volume's shape. Only read: the
        selected B-scans are copied before training.
    bscans
        0-based indices of the corrected B-scans; only these are learned from.
    base
        The model to start from; it is not modified (a copy is trained).
    out_path
        The new checkpoint. Refused inside the bundled weights folder, equal to the base model's
        file, or existing without ``overwrite``.
    epochs, lr
        Epochs (each ``options.samples_per_epoch`` augmented crops of the corrected B-scans, plus
        replay) and the Adam learning rate; the defaults suit 1-10 corrected B-scans. The loss on the
        whole corrected B-scans (without augmentation) picks the best epoch and stops early.
    replay
        B-scans from the base model's training data mixed into each epoch so the model keeps what
        it knew (:func:`load_replay`); ``None``: none. Self-replay (``options.self_replay_bscans``
        uncorrected B-scans of ``volume`` labelled by the base model) is mixed in as well.
    freeze_encoder_epochs
        Epochs at the start during which the encoder is frozen and only the decoder adapts.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"`` or a torch device.
    cancel
        Polled before every step; returning ``True`` stops training and raises :class:`Cancelled`.
    options
        Batch size, crops, replay share, BatchNorm handling, time budget, seed.
    data_source
        Where the image and labels came from (file paths, layer names), for the training record.

    Raises
    ------
    LabelError
        Labels of another shape than the volume, or classes the model does not know.
    InputError
        No B-scans, an index out of range, NaN/inf in the image, a forbidden ``out_path``, bad settings.
    """
    opts = options or FinetuneOptions()
    if not isinstance(volume, OctVolume):
        volume = OctVolume(data=np.asarray(volume))
    out = check_out_path(out_path, base, overwrite=overwrite)
    picked, picked_labels = _validate(volume, labels, bscans, base)
    if epochs < 1 or not lr > 0 or freeze_encoder_epochs < 0:
        raise InputError("epochs must be >= 1, the learning rate > 0 and frozen-encoder epochs >= 0")
    opts.check()
    if replay is not None and max(int(np.max(lab)) for lab in replay.labels) >= base.n_classes:
        raise LabelError(f"replay labels hold classes the model does not know (it has {base.n_classes})")
    dev = select_device(device)
    # Normalised exactly like inference: display grey values, then the checkpoint's own normalisation.
    # ... on the model's pixel grid (the spacing it was trained at), as inference resamples too.
    display = OctVolume(data=volume.data[picked], reflectivity=volume.reflectivity).display_data()
    gm = volume_grid(volume.shape, volume.scale_um, base.pixel_spacing_um)
    images = normalize_bscans(to_model_grid(display, gm), base.normalization)
    picked_labels = to_model_grid(np.asarray(picked_labels), gm, nearest=True)
    replay_images = [normalize_bscans(img, base.normalization) for img in replay.images] if replay else None
    # B-scans holding NaN (e.g. blank frames) are simply not replayed: only the corrected ones must be clean.
    uncorrected = [i for i in range(volume.n_bscans) if i not in picked and np.isfinite(volume.data[i]).all()]
    own = self_replay_bscans(uncorrected, opts.self_replay_bscans)
    own_volume = (
        OctVolume(data=volume.data[own], scale_um=volume.scale_um, reflectivity=volume.reflectivity) if own else None
    )
    config = dict(epochs=epochs, lr=lr, freeze_encoder_epochs=min(freeze_encoder_epochs, epochs))
    record = {
        "kind": "finetune",
        "base_model": _base_summary(base),
        "bscans": picked,
        "n_bscans_in_volume": volume.n_bscans,
        "data": plain(dict(data_source or {})),
        "replay": None if replay is None else {"source": replay.source, "n_bscans": len(replay.images)},
        "self_replay": {"bscans": own, "labels": "the base model's segmentation"} if own else None,
        **config,
        "options": plain(asdict(opts)),
        "device": str(dev),
        "package_version": __version__,
    }
    return _run(
        images,
        picked_labels,
        base,
        out,
        dev,
        replay,
        replay_images,
        own_volume,
        config,
        opts,
        cancel,
        record,
        overwrite,
    )


def _run(
    images: np.ndarray,
    labels: np.ndarray,
    base: LoadedModel,
    out: Path,
    dev: torch.device,
    replay: ReplaySet | None,
    replay_images: list[np.ndarray] | None,
    own_volume: OctVolume | None,
    config: dict[str, Any],
    opts: FinetuneOptions,
    cancel: Callable[[], bool] | None,
    record: dict[str, Any],
    overwrite: bool = True,
) -> Generator[Any, None, FinetuneResult]:
    from .datasets import SegDataset
    from .engine import FitConfig, fit

    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    crop = (min(images.shape[1], int(opts.crop[0])), min(images.shape[2], int(opts.crop[1])))
    user = SegDataset(list(images), list(labels), augment=True, crop=crop)
    replay_x = list(replay_images or [])
    replay_y = list(replay.labels) if replay is not None else []
    if own_volume is not None:
        own_x, own_y = self_replay(own_volume, base, dev, cancel)
        replay_x, replay_y = replay_x + own_x, replay_y + own_y
    replay_ds, n_replay = None, 0
    if replay_x:
        replay_ds = SegDataset(replay_x, replay_y, augment=True, crop=crop)
        n_replay = int(round(opts.samples_per_epoch * opts.replay_fraction / (1.0 - opts.replay_fraction)))
    train = Mixture(user, opts.samples_per_epoch, replay_ds, n_replay, opts.seed)
    val = SegDataset(list(images), list(labels), augment=False, crop=None)
    fit_config = FitConfig(
        **config,
        batch_size=min(opts.batch_size, len(train)),
        early_stop_patience=max(3, config["epochs"] // 3),
        max_seconds=opts.max_seconds,
        seed=opts.seed,
    )
    model = copy.deepcopy(base.model).cpu()
    fit_result = None
    picked = list(record["bscans"])
    try:
        with batchnorm_in_eval(model) if opts.freeze_batchnorm else contextlib.nullcontext():
            try:
                fit_result = yield from fit(model, train, val, fit_config, device=dev, cancel=cancel)
            except Cancelled:
                raise Cancelled("fine-tuning cancelled; no checkpoint was written") from None
        history = [plain_dict(row) for row in fit_result.history]
        seconds = time.perf_counter() - t0
        if fit_result.stopped_reason == "diverged" or fit_result.best_epoch < 1 or fit_result.model is None:
            return FinetuneResult(
                model=base,
                checkpoint_path=None,
                stopped_reason="diverged",
                bscans=picked,
                best_epoch=None,
                history=history,
                seconds=seconds,
                message="fine-tuning diverged (the loss became NaN): the base model is kept and nothing was "
                "written; try a lower learning rate",
            )
        trained = fit_result.model.cpu().eval()
        record.update(
            {
                "epochs_run": len(history),
                "best_epoch": fit_result.best_epoch,
                "best_loss_on_corrections": plain(fit_result.best_val_loss),
                "stopped_reason": fit_result.stopped_reason,
                "samples_per_epoch": len(train),
                "batch_size": fit_config.batch_size,
                "started_utc": started.isoformat(timespec="seconds"),
                "seconds": round(seconds, 1),
                "history": history,
            }
        )
        path = save_checkpoint(
            out,
            trained,
            class_names=base.class_names,
            normalization=base.normalization,
            training=record,
            overwrite=overwrite,
        )
        new = LoadedModel(
            model=trained,
            class_names=base.class_names,
            normalization=dict(base.normalization),
            training=record,
            source=str(path),
        )
        return FinetuneResult(
            model=new,
            checkpoint_path=path,
            stopped_reason=fit_result.stopped_reason,
            bscans=picked,
            best_epoch=fit_result.best_epoch,
            history=history,
            seconds=seconds,
            message=f"fine-tuned on {len(picked)} B-scan(s) in {seconds:.0f} s "
            f"(best epoch {fit_result.best_epoch} of {len(history)}); saved {path}",
        )
    finally:
        # Drop the training copies (and the GPU memory they and the optimiser held) whatever happened.
        del fit_result, model
        _release(dev)


__all__ = [
    "DEFAULT_EPOCHS",
    "DEFAULT_FREEZE_ENCODER_EPOCHS",
    "DEFAULT_LR",
    "DEFAULT_SELF_REPLAY_BSCANS",
    "FinetuneOptions",
    "FinetuneResult",
    "ReplaySet",
    "changed_bscans",
    "check_out_path",
    "finetune",
    "format_bscans",
    "load_replay",
    "parse_bscans",
    "self_replay_bscans",
]

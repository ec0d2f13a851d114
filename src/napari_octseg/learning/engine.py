"""The training engine: a generator that trains a SegNet and yields progress.

The same ``fit`` serves the paper-reproduction scripts in ``training/``, the bundled-weights run and
fine-tuning in napari. It runs on CUDA (with mixed precision), MPS or CPU, and unchanged under
``torchrun`` (DistributedDataParallel, gloo on CPU, nccl on GPU): ranks share the data through a
``DistributedSampler``, losses and confusion matrices are summed over ranks so every rank takes the
same decisions, and only rank 0 writes the checkpoint and the CSV log.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Generator, Sequence, Sized
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ..core.classes import CLASS_NAMES
from ..core.errors import Cancelled, InputError
from ..models.checkpoint import LoadedModel, save_checkpoint
from ..models.device import select_device
from ..models.normalization import DEFAULT_NORMALIZATION
from ..models.segnet import SegNet
from .datasets import SegDataset, pad_collate
from .losses import IGNORE_INDEX, HybridLoss
from .metrics import confusion_matrix, scores
from .records import history_row, training_record, write_history_csv

STOP_REASONS = ("completed", "early_stopping", "diverged", "time_limit")


@dataclass
class FitConfig:
    """Hyper-parameters of :func:`fit` (stored in the checkpoint's training record)."""

    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    dice_weight: float = 0.5
    class_weights: Sequence[float] | None = None
    lr_patience: int = 5
    lr_factor: float = 0.5
    min_lr: float = 1e-5
    early_stop_patience: int = 15
    freeze_encoder_epochs: int = 0
    seed: int = 0
    max_steps_per_epoch: int | None = None
    val_batch_size: int = 2
    grad_clip: float | None = 5.0
    amp: bool = True
    num_workers: int = 0
    #: Stop after the epoch during which this many seconds have passed (``time_limit``).
    max_seconds: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["class_weights"] is not None:
            d["class_weights"] = [float(w) for w in d["class_weights"]]
        return d


@dataclass
class FitEvent:
    """Progress of :func:`fit`: one per optimisation step (``'step'``) and per epoch (``'epoch'``)."""

    kind: str
    epoch: int
    n_epochs: int
    step: int
    n_steps: int
    train_loss: float
    val_loss: float | None = None
    val_metrics: dict | None = None
    lr: float = 0.0
    best: bool = False
    seconds: float = 0.0


@dataclass
class FitResult:
    """Outcome of :func:`fit`; ``model`` holds the best weights (lowest monitored loss)."""

    best_epoch: int
    best_val_loss: float
    history: list[dict] = field(default_factory=list)
    checkpoint_path: Path | None = None
    stopped_reason: str = "completed"
    model: SegNet | None = None


def _dist_env() -> tuple[int, int, int]:
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))


def _as_dataset(data: Any, train: bool, what: str) -> Dataset[Any] | None:
    if data is None:
        return None
    if isinstance(data, Dataset):
        if _length(data, what) == 0:
            raise InputError(f"{what} is empty")
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return SegDataset(data[0], data[1], augment=train)
    raise InputError(f"{what} must be a Dataset or an (images, labels) pair")


def _length(data: Dataset[Any], what: str = "a dataset") -> int:
    """Items in a map-style dataset (training needs their number)."""
    if not isinstance(data, Sized):
        raise InputError(f"{what} has no length: give a map-style Dataset (with __len__)")
    return len(data)


def _all_sum(values: list[float], device: torch.device, world: int) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def fit(
    model: SegNet | LoadedModel,
    train_data: Dataset | tuple,
    val_data: Dataset | tuple | None,
    config: FitConfig | None = None,
    *,
    checkpoint_path: str | os.PathLike | None = None,
    csv_log_path: str | os.PathLike | None = None,
    checkpoint_info: dict | None = None,
    device: str | torch.device = "auto",
    cancel: Callable[[], bool] | None = None,
) -> Generator[FitEvent, None, FitResult]:
    """Train ``model`` and yield :class:`FitEvent` s; return a :class:`FitResult`.

    Parameters
    ----------
    model
        A SegNet (or a :class:`LoadedModel`, whose class names and normalisation go into the checkpoint).
    train_data, val_data
        Datasets yielding (image (1, H, W) float32, labels (H, W) int64 with ``IGNORE_INDEX`` for
        unlabelled pixels), e.g. :class:`SegDataset`; or ``(images, labels)`` pairs. Without
        ``val_data`` the training loss is monitored instead.
    config
        Hyper-parameters (:class:`FitConfig`).
    checkpoint_path
        Where the best model is written (atomically) each time the monitored loss improves.
    csv_log_path
        Per-epoch CSV log (rewritten atomically after every epoch).
    checkpoint_info
        Extra entries for the checkpoint's ``training`` record (data, split, command, base model...).
    device
        ``'auto'`` (CUDA, MPS, CPU), ``'cpu'``, ``'cuda'``, ``'mps'``. Under torchrun each rank uses
        its ``LOCAL_RANK`` GPU.
    cancel
        Polled before every step; returning ``True`` stops training and raises :class:`Cancelled` (on
        every rank under torchrun). ``model`` is left with the best weights so far; checkpoints written
        before the cancel (better models) stay.

    Raises
    ------
    Cancelled
        When ``cancel`` fired.
    """
    config = config or FitConfig()
    if isinstance(model, LoadedModel):
        net, class_names, normalization = model.model, tuple(model.class_names), dict(model.normalization)
    else:
        net, class_names, normalization = model, CLASS_NAMES, dict(DEFAULT_NORMALIZATION)
    n_classes = net.config.n_classes
    train_ds = _as_dataset(train_data, True, "training data")
    val_ds = _as_dataset(val_data, False, "validation data")
    if train_ds is None:
        raise InputError("training data is empty")

    rank, world, local_rank = _dist_env()
    own_group = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() and device != "cpu" else "gloo")
        own_group = True
    dev = select_device(device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    torch.manual_seed(config.seed + rank)
    np.random.seed((config.seed + rank) % (2**32))

    net.to(dev)
    train_model: nn.Module = net
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
    sampler: DistributedSampler[Any] | None = (
        DistributedSampler(train_ds, world, rank, shuffle=True, seed=config.seed) if world > 1 else None
    )
    train_loader = DataLoader(
        train_ds,
        batch_size=config.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=config.num_workers,
        collate_fn=pad_collate,
        drop_last=_length(train_ds) // world > config.batch_size,
        persistent_workers=config.num_workers > 0,
    )
    val_loader = None
    if val_ds is not None:
        # Each rank scores its own share of the validation B-scans; sums are reduced afterwards.
        shard = Subset(val_ds, range(rank, _length(val_ds), world)) if world > 1 else val_ds
        val_loader = DataLoader(shard, batch_size=config.val_batch_size, shuffle=False, collate_fn=pad_collate)

    criterion = HybridLoss(n_classes, config.dice_weight, config.class_weights).to(dev)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_lr
    )
    use_amp = bool(config.amp and dev.type == "cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    n_steps = len(train_loader)
    if config.max_steps_per_epoch:
        n_steps = min(n_steps, config.max_steps_per_epoch)

    history: list[dict] = []
    best_loss, best_epoch, bad_epochs = math.inf, 0, 0
    best_state = copy.deepcopy(net.state_dict())
    stopped = "completed"
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    saved_path: Path | None = None
    t0 = time.perf_counter()
    try:
        for epoch in range(1, config.epochs + 1):
            frozen = epoch <= config.freeze_encoder_epochs
            _set_encoder_frozen(net, frozen)
            train_model.train()
            if frozen:
                net.encoder.eval()  # keep BN statistics of a frozen encoder fixed
            if sampler is not None:
                sampler.set_epoch(epoch)
            loss_sum, n_seen, step = 0.0, 0, 0
            for step, (x, y) in enumerate(train_loader, start=1):
                if step > n_steps:
                    break
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(dev.type, enabled=use_amp):
                    loss = criterion(train_model(x), y)
                flags = _all_sum(
                    [
                        float(loss.detach()) * len(x),
                        float(len(x)),
                        float(not torch.isfinite(loss)),
                        float(bool(cancel and cancel())),
                    ],
                    dev,
                    world,
                )
                if flags[2] > 0:
                    stopped = "diverged"
                    break
                if flags[3] > 0:
                    raise Cancelled(f"training cancelled in epoch {epoch} of {config.epochs}")
                scaler.scale(loss).backward()
                if config.grad_clip:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                loss_sum += flags[0]
                n_seen += int(flags[1])
                yield FitEvent(
                    "step",
                    epoch,
                    config.epochs,
                    step,
                    n_steps,
                    loss_sum / max(n_seen, 1),
                    lr=optimizer.param_groups[0]["lr"],
                    seconds=time.perf_counter() - t0,
                )
            if stopped == "diverged":
                break
            train_loss = loss_sum / max(n_seen, 1)
            val_loss, metrics = (None, None)
            if val_loader is not None:
                val_loss, metrics = _validate(net, val_loader, criterion, n_classes, dev, world, use_amp)
                if not math.isfinite(val_loss):
                    stopped = "diverged"
                    break
            monitored = val_loss if val_loss is not None else train_loss
            scheduler.step(monitored)
            improved = monitored < best_loss
            if improved:
                best_loss, best_epoch, bad_epochs = monitored, epoch, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                bad_epochs += 1
            row = history_row(
                epoch,
                train_loss,
                val_loss,
                metrics,
                optimizer.param_groups[0]["lr"],
                time.perf_counter() - t0,
                class_names,
            )
            history.append(row)
            if rank == 0:
                if improved and ckpt is not None:
                    record = training_record(
                        config.to_dict(), checkpoint_info, row, epoch, dev, world, time.perf_counter() - t0
                    )
                    saved_path = save_checkpoint(
                        ckpt, net, class_names=class_names, normalization=normalization, training=record
                    )
                if csv_log_path is not None:
                    write_history_csv(Path(csv_log_path), history)
            yield FitEvent(
                "epoch",
                epoch,
                config.epochs,
                n_steps,
                n_steps,
                train_loss,
                val_loss,
                metrics,
                optimizer.param_groups[0]["lr"],
                improved,
                time.perf_counter() - t0,
            )
            if bad_epochs >= config.early_stop_patience:
                stopped = "early_stopping"
                break
            if config.max_seconds is not None and time.perf_counter() - t0 >= config.max_seconds:
                stopped = "time_limit"
                break
    except Cancelled:
        net.load_state_dict(best_state)
        net.eval()
        raise
    finally:
        _set_encoder_frozen(net, False)
        if own_group:
            dist.destroy_process_group()
    net.load_state_dict(best_state)
    net.eval()
    return FitResult(best_epoch, best_loss, history, saved_path, stopped, net)


def _set_encoder_frozen(net: nn.Module, frozen: bool) -> None:
    encoder = getattr(net, "encoder", None)
    if encoder is not None:
        for p in encoder.parameters():
            p.requires_grad_(not frozen)


@torch.no_grad()
def _validate(net, loader, criterion, n_classes, dev, world, use_amp) -> tuple[float, dict]:
    net.eval()
    loss_sum, n = 0.0, 0
    cm = np.zeros((n_classes, n_classes), np.int64)
    for x, y in loader:
        x, y = x.to(dev), y.to(dev)
        with torch.autocast(dev.type, enabled=use_amp):
            logits = net(x)
        for k in range(len(x)):  # per image, so padding never changes a B-scan's loss
            loss_sum += float(criterion(logits[k : k + 1], y[k : k + 1]))
        n += len(x)
        cm += confusion_matrix(logits.argmax(1), y, n_classes, ignore_index=IGNORE_INDEX)
    if world > 1:
        t = torch.tensor(np.concatenate([[loss_sum, n], cm.ravel()]), dtype=torch.float64, device=dev)
        dist.all_reduce(t)
        loss_sum, n = float(t[0]), int(t[1])
        cm = t[2:].round().long().cpu().numpy().reshape(n_classes, n_classes)
    return loss_sum / max(n, 1), scores(cm)

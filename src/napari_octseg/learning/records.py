"""What training writes down: the per-epoch history row, the checkpoint's training record, the CSV log.

Checkpoints load with ``torch.load(..., weights_only=True)``, so everything here is turned into plain
Python containers and scalars (:func:`plain`) before it is saved.
"""

from __future__ import annotations

import csv
import io
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import torch

from ..core.atomic import atomic_write_text

#: A value that survives ``weights_only=True`` loading and JSON: plain containers and scalars.
Plain: TypeAlias = "None | bool | int | float | str | list[Plain] | dict[str, Plain]"


def plain(obj: object) -> Plain:
    """``obj`` as plain containers and scalars: numpy and 0-d torch values by value, anything else as text."""
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.ndarray):
        return plain(obj.tolist())
    if isinstance(obj, np.generic) or (isinstance(obj, torch.Tensor) and obj.ndim == 0):
        return plain(obj.item())
    return str(obj)


def plain_dict(obj: Mapping[str, object]) -> dict[str, Plain]:
    """:func:`plain` of a mapping, keys as text."""
    return {str(k): plain(v) for k, v in obj.items()}


def history_row(
    epoch: int,
    train_loss: float,
    val_loss: float | None,
    metrics: Mapping[str, Any] | None,
    lr: float,
    seconds: float,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """One epoch of the training history (the CSV log's row): losses, learning rate, validation Dice per class."""
    row: dict[str, Any] = {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": val_loss if val_loss is not None else float("nan"),
        "lr": lr,
        "seconds": round(seconds, 1),
    }
    if metrics is not None:
        row["val_pixel_accuracy"] = metrics["pixel_accuracy"]
        row["val_mean_dice_scored"] = metrics["mean_dice_scored"]
        row["val_mean_dice_layers"] = metrics["mean_dice_layers"]
        for c, d in enumerate(metrics["dice"]):
            row[f"val_dice_{c}_{class_names[c]}"] = float(d)
    return row


def training_record(
    fit_config: Mapping[str, Any],
    info: Mapping[str, Any] | None,
    row: Mapping[str, Any],
    epoch: int,
    dev: torch.device,
    world: int,
    seconds: float,
) -> dict[str, Plain]:
    """The checkpoint's ``training`` entry at ``epoch``: ``info`` (data, split, command...), the recipe, the
    epoch's validation metrics and the hardware it ran on."""
    record = dict(info or {})
    record.update(
        {
            "fit_config": dict(fit_config),
            "epoch": epoch,
            "val_metrics": {k: v for k, v in row.items() if k.startswith("val_")},
            "train_loss": row["train_loss"],
            "hardware": {
                "device": str(dev),
                "world_size": world,
                "platform": platform.platform(),
                "processor": platform.processor() or platform.machine(),
                "torch": str(torch.__version__),
                "torch_threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
            },
            "seconds_to_this_epoch": round(seconds, 1),
        }
    )
    return plain_dict(record)


def write_history_csv(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """The training history as CSV (columns of the last row), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[-1].keys()), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(path, buf.getvalue())

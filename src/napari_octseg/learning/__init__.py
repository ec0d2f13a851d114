"""Training engine: hybrid loss, metrics, datasets with OCT augmentation, and the ``fit`` generator.

The names below are loaded on first use (PEP 562): ``learning.metrics`` and ``learning.finetune_data``
are numpy-only, and importing them (``octseg evaluate``, ``octseg --help``) must not pull in torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_exports

if TYPE_CHECKING:
    from .augment import AugmentConfig
    from .datasets import (
        SegDataset,
        class_weights_from_labels,
        duke_files,
        load_duke_npz,
        pad_collate,
        validate_pairs,
    )
    from .engine import STOP_REASONS, FitConfig, FitEvent, FitResult, fit
    from .losses import IGNORE_INDEX, HybridLoss, soft_dice
    from .metrics import confusion_matrix, format_table, score_rows, scores

#: Public name -> the submodule defining it.
_EXPORTS = {
    "AugmentConfig": "augment",
    "SegDataset": "datasets",
    "class_weights_from_labels": "datasets",
    "duke_files": "datasets",
    "load_duke_npz": "datasets",
    "pad_collate": "datasets",
    "validate_pairs": "datasets",
    "STOP_REASONS": "engine",
    "FitConfig": "engine",
    "FitEvent": "engine",
    "FitResult": "engine",
    "fit": "engine",
    "IGNORE_INDEX": "losses",
    "HybridLoss": "losses",
    "soft_dice": "losses",
    "boundary_errors": "metrics",
    "confusion_matrix": "metrics",
    "format_table": "metrics",
    "score_rows": "metrics",
    "scores": "metrics",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)

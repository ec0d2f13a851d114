"""Training engine: hybrid loss, metrics, datasets with OCT augmentation, and the ``fit`` generator."""

from .augment import AugmentConfig
from .datasets import (
    SegDataset,
    class_weights_from_labels,
    duke_files,
    load_duke_npz,
    pad_collate,
    validate_pairs,
)
from .fit import STOP_REASONS, FitConfig, FitEvent, FitResult, fit
from .losses import IGNORE_INDEX, HybridLoss, soft_dice
from .metrics import confusion_matrix, format_table, score_rows, scores

__all__ = [
    "IGNORE_INDEX",
    "STOP_REASONS",
    "AugmentConfig",
    "FitConfig",
    "FitEvent",
    "FitResult",
    "HybridLoss",
    "SegDataset",
    "class_weights_from_labels",
    "confusion_matrix",
    "duke_files",
    "fit",
    "format_table",
    "load_duke_npz",
    "pad_collate",
    "score_rows",
    "scores",
    "soft_dice",
    "validate_pairs",
]

"""Bundled models: shipped inside the wheel, never downloaded at run time."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..core.errors import CheckpointError
from .checkpoint import LoadedModel, load_checkpoint

WEIGHTS_DIR = Path(__file__).parent / "weights"

#: Name -> file in ``models/weights`` (each with a model card ``<stem>.md``).
BUNDLED: dict[str, str] = {"default": "octseg_default.pt"}
DEFAULT_MODEL = "default"


def bundled_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of the bundled model ``name``."""
    if name not in BUNDLED:
        raise CheckpointError(f"unknown bundled model {name!r}; known: {', '.join(BUNDLED)}")
    return WEIGHTS_DIR / BUNDLED[name]


def resolve_model_path(spec: str | os.PathLike | None) -> Path:
    """Turn a model spec (``None``/``"default"``, another bundled name, or a file path) into a path."""
    if spec is None or str(spec) in BUNDLED:
        return bundled_path(str(spec) if spec is not None else DEFAULT_MODEL)
    return Path(spec)


def load_model(spec: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a bundled model by name, or a checkpoint file, onto ``device``."""
    path = resolve_model_path(spec)
    if (spec is None or str(spec) in BUNDLED) and not path.is_file():
        raise CheckpointError(f"bundled model file {path.name} is missing from this installation")
    return load_checkpoint(path, device=device)

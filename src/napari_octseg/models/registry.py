"""Bundled models (shipped inside the wheel, never downloaded at run time) and models found by name.

A model spec is ``None``/``"default"`` or another bundled name, the name of a model in the user's
library (:mod:`napari_octseg.models.library`), or a checkpoint file path.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..core.errors import CheckpointError
from .checkpoint import LoadedModel, load_checkpoint
from .library import find_model, library_dir, library_models

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
    """Turn a model spec (``None``/``"default"``, another bundled name, a library name, or a file path) into a path.

    An existing file wins over a library model of the same name; a bare name (no folder, no ``.pt``) that
    is no file is looked up in the library.
    """
    if spec is None or str(spec) in BUNDLED:
        return bundled_path(str(spec) if spec is not None else DEFAULT_MODEL)
    path = Path(spec)
    if not path.exists() and path.parent == Path(".") and path.suffix != ".pt":
        found = find_model(str(spec))
        if found is not None:
            return found
    return path


def load_model(spec: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a bundled model by name, a library model by name, or a checkpoint file, onto ``device``."""
    path = resolve_model_path(spec)
    if (spec is None or str(spec) in BUNDLED) and not path.is_file():
        raise CheckpointError(f"bundled model file {path.name} is missing from this installation")
    if not path.exists() and path.parent == Path(".") and path.suffix != ".pt":
        known = ", ".join(library_models()) or "none"
        raise CheckpointError(
            f"{spec}: no such model file, and no model of that name in the library {library_dir()} (known: {known})"
        )
    return load_checkpoint(path, device=device)

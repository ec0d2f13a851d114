"""The user's model library: a visible folder of named checkpoints that fine-tuning fills.

A model made by fine-tuning is saved as ``<library>/<name>.pt``; ``<name>`` is what the user typed (the
Fine-tune dock suggests ``<image>-<date>``). The Segment and Explain docks list the library's models in
their model chooser, and ``octseg segment --model NAME`` finds them by name.

The folder is ``$OCTSEG_MODEL_DIR`` when set, else ``models`` in the user's data folder
(``platformdirs.user_data_dir("napari-octseg")``, e.g. ``~/.local/share/napari-octseg/models`` on Linux).
It is never inside the package, so a reinstall keeps it. This module imports no torch.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

from ..core.errors import CheckpointError

#: Environment variable that moves the library (tests, shared lab folders).
LIBRARY_ENV = "OCTSEG_MODEL_DIR"
SUFFIX = ".pt"
_BAD = re.compile(r"[^A-Za-z0-9_.+-]+")


def library_dir() -> Path:
    """The library folder (it may not exist yet)."""
    env = os.environ.get(LIBRARY_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-octseg", appauthor=False)) / "models"


def model_name(text: str) -> str:
    """``text`` as a model name: letters, digits and ``_ . + -`` (runs of anything else become ``_``).

    Raises
    ------
    CheckpointError
        If nothing usable is left.
    """
    name = _BAD.sub("_", text.strip()).strip("_.")
    if name.lower().endswith(SUFFIX):
        name = name[: -len(SUFFIX)]
    if not name:
        raise CheckpointError(f"{text!r} is not a usable model name (letters, digits, _ . + -)")
    return name


def default_model_name(image_name: str, when: datetime | None = None) -> str:
    """``<image stem>-<YYYYmmdd-HHMM>``, e.g. ``Subject_07-20261202-0412``."""
    stem = Path(image_name).stem if "." in image_name else image_name
    try:
        base = model_name(stem)
    except CheckpointError:
        base = "finetuned"
    return f"{base}-{(when or datetime.now()):%Y%m%d-%H%M}"


def library_models(folder: Path | None = None) -> dict[str, Path]:
    """The library's models, name -> path, sorted by name (empty if the folder does not exist)."""
    folder = folder or library_dir()
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob(f"*{SUFFIX}")) if p.is_file()}


def library_path(name: str, folder: Path | None = None) -> Path:
    """Where the model ``name`` lives (or would live) in the library."""
    return (folder or library_dir()) / f"{model_name(name)}{SUFFIX}"


def find_model(name: str) -> Path | None:
    """Path of the library model called ``name``, or ``None`` if there is none."""
    try:
        path = library_path(name)
    except CheckpointError:
        return None
    return path if path.is_file() else None

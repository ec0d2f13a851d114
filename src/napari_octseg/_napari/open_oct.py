"""``File ▸ IO Utilities ▸ Open as OCT scan...``: any file this package reads, through its reader.

napari hands plain ``.tif``/``.npy``/``.png``/``.jpg`` files to its own reader (see
:mod:`napari_octseg._napari.reader_choice`), which knows nothing of OCT: no µm scale from an ImageJ
stack, no display grey values, no axis names. This menu command opens the chosen files with this
plugin's reader whatever their name, as ``octseg view FILE`` does from the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import napari
from napari.utils.notifications import show_warning

from ..io import SUPPORTED_EXTENSIONS
from .reader import get_reader

#: File-dialog filter: every extension the package reads.
FILE_FILTER = "OCT scans (" + " ".join(f"*{ext}" for ext in SUPPORTED_EXTENSIONS) + ");;All files (*)"


def open_as_oct(viewer: Any, paths: Sequence[str | Path]) -> list[Any]:
    """Add the layers this plugin's reader makes of each of ``paths``; return the new layers.

    A file the reader declines gives one warning and no layer (the reader has already said why).
    """
    added: list[Any] = []
    for path in paths:
        reader = get_reader(str(path))
        if reader is None:
            show_warning(f"{Path(path).name}: not opened as an OCT scan")
            continue
        for data, kwargs, kind in reader(str(path)):
            added.append(getattr(viewer, f"add_{kind}")(data, **kwargs))
    return added


def open_oct_dialog(viewer: napari.viewer.Viewer) -> list[Any]:
    """Ask for files, then :func:`open_as_oct` them (the menu command)."""
    from qtpy.QtWidgets import QFileDialog

    paths, _ = QFileDialog.getOpenFileNames(None, "Open as OCT scan", "", FILE_FILTER)
    return open_as_oct(viewer, paths)


__all__ = ["FILE_FILTER", "open_as_oct", "open_oct_dialog"]

"""Readers: every supported OCT file -> :class:`~napari_octseg.core.volume.OctVolume`.

``read(path)`` dispatches on the extension (or on a folder) to one ``read_x(path)`` per format
family. Every failure is an :class:`~napari_octseg.core.errors.OctReadError` whose one-line message
names the file and the problem; headers claiming absurd sizes are rejected before allocating, and
nothing is ever unpickled.

===========================  ====================================  ==========================
extension                    reader                                via
===========================  ====================================  ==========================
``.vol``                     :func:`heyex_vol.read_vol`            own parser (HSF-OCT-103)
``.e2e``, ``.xml``           :func:`heyex_eyepy.read_e2e` / xml    eyepy
``.fds`` ``.fda`` ``.img``   :mod:`octconverter`                   oct-converter
``.dcm`` ``.oct``
``.mat`` ``.npz``            :mod:`duke`                           scipy / numpy (no pickle)
``.tif`` ``.tiff`` ``.npy``  :mod:`arrays`                         tifffile / numpy
``.png`` ``.jpg``, folder    :mod:`arrays`                         Pillow
===========================  ====================================  ==========================
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path

from ..core.volume import OctVolume
from ._util import fail
from .labels import read_labels

#: extension (lower case) -> (module, function) of its reader.
READERS: dict[str, tuple[str, str]] = {
    ".vol": ("heyex_vol", "read_vol"),
    ".e2e": ("heyex_eyepy", "read_e2e"),
    ".xml": ("heyex_eyepy", "read_heyex_xml"),
    ".fds": ("octconverter", "read_fds"),
    ".fda": ("octconverter", "read_fda"),
    ".img": ("octconverter", "read_zeiss_img"),
    ".dcm": ("octconverter", "read_dicom"),
    ".oct": ("octconverter", "read_bioptigen"),
    ".mat": ("duke", "read_duke_mat"),
    ".npz": ("duke", "read_npz"),
    ".tif": ("arrays", "read_tiff"),
    ".tiff": ("arrays", "read_tiff"),
    ".npy": ("arrays", "read_npy"),
    ".png": ("arrays", "read_image_file"),
    ".jpg": ("arrays", "read_image_file"),
    ".jpeg": ("arrays", "read_image_file"),
}

#: Every extension :func:`read` accepts (a folder of PNG/JPEG B-scans is accepted too).
SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(READERS)


def reader_for(path: str | os.PathLike) -> Callable[[str | os.PathLike], OctVolume]:
    """The reader function :func:`read` would use for ``path``.

    Raises
    ------
    OctReadError
        If the extension is not supported (or a folder holds nothing readable).
    """
    p = Path(path)
    if p.is_dir() and p.suffix.lower() not in READERS:
        module, name = _folder_reader(p)
    else:
        suffix = p.suffix.lower()
        if suffix not in READERS:
            known = " ".join(SUPPORTED_EXTENSIONS)
            raise fail(p, f"unsupported file type {suffix or '(no extension)'!r}; supported: {known} or a folder")
        module, name = READERS[suffix]
    # every READERS entry names a `read_x(path) -> OctVolume` (the module's typed signature)
    reader: Callable[[str | os.PathLike], OctVolume] = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    return reader


def _folder_reader(folder: Path) -> tuple[str, str]:
    """A HEYEX XML export folder (one ``.xml`` inside) or a folder of PNG/JPEG B-scans."""
    try:
        xmls = [p for p in folder.iterdir() if p.suffix.lower() == ".xml" and p.is_file()]
    except OSError as exc:
        raise fail(folder, f"cannot list the folder ({exc})") from None
    if len(xmls) == 1:
        return ("heyex_eyepy", "read_heyex_xml")
    return ("arrays", "read_image_folder")


def read(path: str | os.PathLike) -> OctVolume:
    """Read any supported OCT file or folder as an :class:`OctVolume`.

    Parameters
    ----------
    path
        A file (extension decides the format, see :data:`READERS`) or a folder (HEYEX XML export
        or PNG/JPEG B-scans in natural name order).

    Returns
    -------
    OctVolume
        data float32 (n_bscans, depth, width); ``scale_um`` (z, y, x) in µm or ``None``.

    Raises
    ------
    OctReadError
        One line, ``"<file>: <problem>"``, for anything that cannot be read.
    """
    p = Path(path)
    if not p.exists():
        raise fail(p, "no such file or folder")
    return reader_for(p)(p)


__all__ = ["READERS", "SUPPORTED_EXTENSIONS", "read", "read_labels", "reader_for"]

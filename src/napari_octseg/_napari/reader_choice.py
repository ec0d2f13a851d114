"""Which files napari hands to this plugin's reader, and the reader preference for our own file names.

How napari 0.9 picks a reader (``ViewerModel._open_or_raise_error``): it lists every plugin whose
manifest ``filename_patterns`` match the file *name* (npe2 ``iter_compatible_readers``, fnmatch),
then uses the reader saved for a matching pattern in ``Preferences > Plugins``
(``settings.plugins.extension2reader``), else the only match, else it shows the *Choose reader* dialog
(``MultipleReaderError`` from ``viewer.open``). The plugins' ``get_reader`` functions are not asked
before that choice, so a reader returning ``None`` for a file it does not want cannot prevent the
dialog; and a preferred reader that returns ``None`` is reported as an error, not passed over.

So the manifest claims only names napari's builtin reader does not take for granted:

* device formats: ``.vol .e2e .xml .fds .fda .oct .mat`` (no other reader claims them) and
  ``.img .dcm .npz`` (napari's builtin claims them too, so napari asks once per extension; its
  dialog can remember the choice);
* our own files by their double suffix: ``<stem>.labels.tif`` (labels with µm scale and class names),
  and OCT stacks saved as ``<stem>.oct.tif`` / ``<stem>.oct.npy``.

Generic containers (``.tif .tiff .npy .png .jpg .jpeg``) are napari's: a TIFF or ``.npy`` of
anything else opens with napari's own reader and no dialog. An OCT scan in such a file opens through
this plugin when named ``*.oct.tif`` / ``*.oct.npy``, or with ``octseg view FILE``.

Our double suffixes still match napari's ``*.tif``/``*.npy`` too, so :func:`prefer_plugin_for_own_files`
saves this plugin as the reader for exactly those patterns (never for ``*.tif``), when a dock of the
plugin opens or its writer saves a labels file; the entry shows in ``Preferences > Plugins`` and can
be removed there.
"""

from __future__ import annotations

from ..io import SUPPORTED_EXTENSIONS

PLUGIN_NAME = "napari-octseg"

#: Generic image/array containers left to napari's builtin reader (claimed only under a double suffix).
GENERIC_EXTENSIONS: tuple[str, ...] = (".tif", ".tiff", ".npy", ".png", ".jpg", ".jpeg")

#: Our own double-suffix names: labels files, and OCT stacks in a generic container.
OWN_SUFFIXES: tuple[str, ...] = (".labels.tif", ".labels.tiff", ".oct.tif", ".oct.tiff", ".oct.npy")


def reader_patterns() -> list[str]:
    """The ``filename_patterns`` of the manifest's reader, lower and upper case (see module docstring)."""
    suffixes = [ext for ext in SUPPORTED_EXTENSIONS if ext not in GENERIC_EXTENSIONS] + list(OWN_SUFFIXES)
    out: list[str] = []
    for suffix in suffixes:
        out += [f"*{suffix}", f"*{suffix.upper()}"]
    return out


def prefer_plugin_for_own_files() -> list[str]:
    """Save this plugin as napari's reader for ``*.labels.tif`` & co. where no reader is saved yet.

    Only our double-suffix patterns are touched, never an entry the user made, and ours are put first
    so that they win over an equally specific ``*.tif`` entry (napari sorts matches stably). Returns
    the patterns added; never raises (settings that cannot be written leave napari's dialog in place).
    """
    try:
        from napari.settings import get_settings

        plugins = get_settings().plugins
        current = dict(plugins.extension2reader)
        # napari matches saved patterns case-sensitively on Linux: both spellings
        wanted = [f"*{s}" for s in OWN_SUFFIXES] + [f"*{s.upper()}" for s in OWN_SUFFIXES]
        missing = [pattern for pattern in wanted if pattern not in current]
        if missing:
            plugins.extension2reader = {**{p: PLUGIN_NAME for p in missing}, **current}
        return missing
    except Exception:  # a read-only settings file must not break a dock or a save
        return []


__all__ = ["GENERIC_EXTENSIONS", "OWN_SUFFIXES", "PLUGIN_NAME", "prefer_plugin_for_own_files", "reader_patterns"]

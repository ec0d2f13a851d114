"""The exception types the package raises for problems a user can fix.

Each carries a one-line, human-readable message; the CLI prints it without a traceback and the
napari widgets show it as a notification.
"""

from __future__ import annotations


class OctsegError(Exception):
    """Base class of every user-facing error of napari-octseg."""


class OctReadError(OctsegError):
    """A file could not be read as an OCT volume (message names the file and the problem)."""


class CheckpointError(OctsegError):
    """A model file is not a valid checkpoint of this version (or would execute code)."""


class LabelError(OctsegError):
    """A label volume has the wrong shape, dtype or classes for the operation."""


class InputError(OctsegError):
    """Input data cannot be processed (NaNs, wrong dimensions, empty set, missing device...)."""


class Cancelled(OctsegError):
    """Long work was cancelled by the user; nothing was written."""


def one_line_message(text: object) -> str:
    """``text`` on one line: control characters (newline, tab, escape...) shown as ``\\n``, ``\\x1b``...

    File names may hold any byte but ``/`` and NUL; printed raw, a newline would split a one-line error
    and an escape sequence could rewrite the terminal. Non-UTF-8 bytes (surrogate escapes) are shown as
    ``\\udcxx``, so the line can always be encoded.
    """
    out = []
    for ch in str(text):
        code = ord(ch)
        if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0 or 0xD800 <= code < 0xE000:
            out.append(ch.encode("unicode_escape", "backslashreplace").decode("ascii"))
        else:
            out.append(ch)
    return "".join(out)

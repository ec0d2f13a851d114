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

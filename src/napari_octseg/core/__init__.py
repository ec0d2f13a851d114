"""Pure-numpy core: the volume type, class scheme, errors, progress, boundaries and thickness."""

from .classes import (
    BACKGROUND_CLASSES,
    BOUNDARY_NAMES,
    CLASS_COLORS,
    CLASS_NAMES,
    FLUID_CLASS,
    LAYER_CLASSES,
    N_CLASSES,
    SCORED_CLASSES,
)
from .errors import Cancelled, CheckpointError, InputError, LabelError, OctReadError, OctsegError
from .progress import Progress, run_generator
from .volume import OctVolume

__all__ = [
    "BACKGROUND_CLASSES",
    "BOUNDARY_NAMES",
    "CLASS_COLORS",
    "CLASS_NAMES",
    "FLUID_CLASS",
    "LAYER_CLASSES",
    "N_CLASSES",
    "SCORED_CLASSES",
    "Cancelled",
    "CheckpointError",
    "InputError",
    "LabelError",
    "OctReadError",
    "OctsegError",
    "OctVolume",
    "Progress",
    "run_generator",
]

"""Networks, checkpoints (data, not code), device choice and the registry of bundled weights."""

from .checkpoint import FORMAT_VERSION, LoadedModel, checkpoint_from_dict, load_checkpoint, save_checkpoint
from .device import DEVICE_CHOICES, select_device
from .normalization import DEFAULT_NORMALIZATION, normalize_bscans
from .registry import BUNDLED, DEFAULT_MODEL, bundled_path, load_model, resolve_model_path
from .segnet import PRESETS, SegNet, SegNetConfig, build_model

__all__ = [
    "BUNDLED",
    "DEFAULT_MODEL",
    "DEFAULT_NORMALIZATION",
    "DEVICE_CHOICES",
    "FORMAT_VERSION",
    "PRESETS",
    "LoadedModel",
    "SegNet",
    "SegNetConfig",
    "build_model",
    "bundled_path",
    "checkpoint_from_dict",
    "load_checkpoint",
    "load_model",
    "normalize_bscans",
    "resolve_model_path",
    "save_checkpoint",
    "select_device",
]

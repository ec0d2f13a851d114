"""Networks, checkpoints (data, not code), device choice and the registry of bundled weights.

The names below are loaded on first use (PEP 562), so ``import napari_octseg.models`` (and the
``octseg --help``, ``info`` and ``thickness`` commands, which only need :data:`DEVICE_CHOICES`) imports
no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_exports

if TYPE_CHECKING:
    from .checkpoint import FORMAT_VERSION, LoadedModel, checkpoint_from_dict, load_checkpoint, save_checkpoint
    from .device import DEVICE_CHOICES, select_device
    from .normalization import DEFAULT_NORMALIZATION, normalize_bscans
    from .registry import BUNDLED, DEFAULT_MODEL, bundled_path, load_model, resolve_model_path
    from .runtime import inference_network, release_cached
    from .segnet import ARCHITECTURES, PRESETS, SegNet, SegNetConfig, build_model

#: Public name -> the submodule defining it.
_EXPORTS = {
    "FORMAT_VERSION": "checkpoint",
    "LoadedModel": "checkpoint",
    "checkpoint_from_dict": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "DEVICE_CHOICES": "device",
    "select_device": "device",
    "DEFAULT_NORMALIZATION": "normalization",
    "normalize_bscans": "normalization",
    "BUNDLED": "registry",
    "DEFAULT_MODEL": "registry",
    "bundled_path": "registry",
    "load_model": "registry",
    "resolve_model_path": "registry",
    "inference_network": "runtime",
    "release_cached": "runtime",
    "ARCHITECTURES": "segnet",
    "PRESETS": "segnet",
    "SegNet": "segnet",
    "SegNetConfig": "segnet",
    "build_model": "segnet",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)

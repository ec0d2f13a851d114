"""Checkpoints are data, not code: one ``torch.save`` file of plain containers and tensors.

Layout (``FORMAT_VERSION`` 1)::

    {"format_version": 1,
     "package_version": "0.1.0",
     "config": {... SegNetConfig ...},         # rebuilds the architecture
     "class_names": ["vitreous", ...],
     "normalization": {"method": "percentile", ...},
     "training": {...},                          # data, split, epochs, metrics, base model, ...
     "state_dict": {name: tensor}}

Loading uses ``torch.load(..., weights_only=True)``: a pickle that would run code is refused. The file
and then every field and tensor are validated (:mod:`.validate`) before the network is built.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..core.atomic import atomic_path
from ..core.classes import CLASS_NAMES
from ..core.errors import CheckpointError
from .normalization import DEFAULT_NORMALIZATION
from .segnet import SegNet, SegNetConfig, build_model
from .validate import check_checkpoint_file, validate_payload

FORMAT_VERSION = 1
_REQUIRED = ("format_version", "config", "class_names", "normalization", "state_dict")


@dataclass
class LoadedModel:
    """A network rebuilt from a checkpoint, with everything needed to use it correctly."""

    model: SegNet
    class_names: tuple[str, ...] = CLASS_NAMES
    normalization: dict = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    training: dict = field(default_factory=dict)
    source: str = "<memory>"
    decoding: dict = field(default_factory=dict)

    @property
    def config(self) -> SegNetConfig:
        return self.model.config

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def pixel_spacing_um(self) -> tuple[float, float] | None:
        """(axial, lateral) µm per pixel of the training B-scans, or ``None`` (not recorded: no resampling)."""
        spacing = self.normalization.get("pixel_spacing_um")
        if spacing is None:
            return None
        return (float(spacing[0]), float(spacing[1]))

    @property
    def boundary_offsets_px(self) -> tuple[float, ...] | None:
        """Signed shifts (model-grid rows, + = deeper) of the 8 boundaries ILM .. BM, or ``None``.

        A calibration measured after training (``training/calibrate_boundaries.py``) that removes the
        network's systematic lean per boundary; the anatomical decoding adds it to each sub-pixel edge.
        Fine-tuned models do not inherit it: they learn from labels that already carry it.
        """
        offsets = self.decoding.get("boundary_offsets_px")
        return None if offsets is None else tuple(float(v) for v in offsets)


def save_checkpoint(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    class_names: tuple[str, ...] | list[str] = CLASS_NAMES,
    normalization: dict | None = None,
    training: dict[str, Any] | None = None,
    decoding: dict[str, Any] | None = None,
    overwrite: bool = True,
) -> Path:
    """Write ``model`` and its description to ``path`` atomically; return the path.

    The archive is built in memory and then written with plain file writes, so a full disk is an
    ``OSError`` (``No space left on device``) rather than torch's internal assertion; the temporary is
    removed and an existing ``path`` kept. With ``overwrite=False`` an existing ``path`` (another run's
    output, created meanwhile) is never replaced. ``decoding`` (optional) holds a boundary calibration
    (:attr:`LoadedModel.boundary_offsets_px`).
    """
    net = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    if not isinstance(net, SegNet):
        raise TypeError(f"only a SegNet can be saved as a checkpoint, not a {type(net).__name__}")
    config = net.config
    payload = {
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "config": config.to_dict(),
        "class_names": list(class_names),
        "normalization": dict(normalization or DEFAULT_NORMALIZATION),
        "training": dict(training or {}),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
    }
    if decoding:
        payload["decoding"] = dict(decoding)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "wb") as fh:
        fh.write(buffer.getbuffer())
    return Path(path)


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint without executing code and rebuild its network (in eval mode).

    Raises
    ------
    CheckpointError
        If the file is missing, truncated, not a checkpoint, would execute code when unpickled,
        is of another format version, or its weights do not fit its architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    check_checkpoint_file(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign, truncated or unsafe files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it contains code or objects that are not plain weights (refused for safety)"
        raise CheckpointError(f"{path}: not a valid napari-octseg checkpoint: {reason}") from None
    return checkpoint_from_dict(payload, source=str(path), device=device)


def checkpoint_from_dict(payload: Any, source: str = "<memory>", device: str | torch.device = "cpu") -> LoadedModel:
    """Validate a loaded checkpoint dictionary (see :mod:`.validate`), then rebuild its network."""
    valid = validate_payload(payload, source)
    spacing = valid.normalization.get("pixel_spacing_um")
    if spacing is not None:
        ok = isinstance(spacing, (list, tuple)) and len(spacing) == 2
        ok = ok and all(isinstance(v, (int, float)) and 0 < float(v) <= 1e5 for v in spacing)
        if not ok:
            raise CheckpointError(f"{source}: pixel_spacing_um must be two positive sizes in µm; got {spacing!r}")
    try:
        model = build_model(valid.config)
        model.load_state_dict(payload["state_dict"], strict=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{source}: weights do not fit the architecture ({first})") from None
    model.eval().to(device)
    return LoadedModel(
        model=model,
        class_names=valid.class_names,
        normalization=dict(valid.normalization),
        training=dict(valid.training),
        source=source,
        decoding=dict(valid.decoding),
    )

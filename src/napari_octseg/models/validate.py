"""Checkpoint validation: everything a model file states is checked before a network is built.

A checkpoint from a stranger is data, and hostile data can be valid pickles of plain containers that
still do harm: widths that allocate gigabytes while the network is rebuilt, a depth that pads every
B-scan to a multiple of 65,536, a deflated gigabyte in ``training``, NaN weights that "segment"
everything as one class. So, in this order and each as a one-line :class:`CheckpointError`:

1. the file (:func:`check_checkpoint_file`): a torch zip archive whose directory claims no more than
   :data:`MAX_CHECKPOINT_BYTES` and no decompression bomb, read before ``torch.load`` inflates anything;
2. the fields (:func:`validate_payload`): types and ranges of ``format_version``, ``config`` (widths,
   depth, classes, dropout...), ``class_names``, ``normalization``, ``training`` (size and depth) and the
   optional ``decoding`` calibration (8 finite boundary offsets of at most :data:`MAX_BOUNDARY_OFFSET_PX`);
3. the tensors: names, shapes and dtypes of the state dict against those the config implies, computed
   on the ``meta`` device (no memory), then finite, plausible values and non-negative BatchNorm variances.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.errors import CheckpointError
from .segnet import SegNet, SegNetConfig

#: Largest accepted checkpoint, on disk and once inflated (the paper-size network is ~120 MB).
MAX_CHECKPOINT_BYTES: int = 1 << 30
#: Architecture bounds: channels per level, number of levels (input padded to 2**depth), classes.
MAX_WIDTH, MAX_DEPTH, MAX_CLASSES = 1024, 7, 64
#: Largest accepted absolute value of a weight or buffer (trained weights stay within ~1e2).
MAX_ABS_WEIGHT: float = 1e6
#: Bounds of the free-form ``training`` record: nested containers, items, text.
MAX_TRAINING_DEPTH, MAX_TRAINING_ITEMS, MAX_TRAINING_TEXT = 16, 200_000, 1 << 20
#: Largest accepted tensor data inside ``training`` (it holds a summary, not weights).
MAX_TRAINING_TENSOR_BYTES: int = 1 << 20
#: Largest accepted boundary calibration offset, in model-grid rows (measured leans are ~1 row).
MAX_BOUNDARY_OFFSET_PX: float = 4.0
#: Boundaries of the Duke scheme a calibration shifts (ILM .. BM).
N_BOUNDARIES = 8
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_CONFIG_KEYS = {"in_channels", "n_classes", "widths", "batch_norm", "dropout", "architecture"}


@dataclass
class ValidPayload:
    """The checked fields of a checkpoint, ready to rebuild its network."""

    config: SegNetConfig
    class_names: tuple[str, ...]
    normalization: dict
    training: dict
    decoding: dict


def _bad(source: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{source}: invalid checkpoint: {problem}")


def check_checkpoint_file(path: Path) -> None:
    """Refuse files ``torch.load`` should not open: too big, not a zip archive, or a decompression bomb."""
    size = path.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise _bad(str(path), f"file of {size} bytes is larger than any supported model ({MAX_CHECKPOINT_BYTES})")
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise CheckpointError(
            f"{path}: not a valid napari-octseg checkpoint: not a torch zip archive ({exc or 'bad zip'})"
        ) from None
    total = sum(i.file_size for i in infos)
    if len(infos) > 100_000 or total > MAX_CHECKPOINT_BYTES:
        raise _bad(str(path), f"archive claims {total} bytes in {len(infos)} members (limit {MAX_CHECKPOINT_BYTES})")
    for info in infos:
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > max(1 << 20, 20 * info.compress_size):
            raise _bad(
                str(path),
                f"member {info.filename} inflates {info.compress_size} bytes to {info.file_size} "
                "(torch stores tensors uncompressed; a decompression bomb?)",
            )


def _int(source: str, value: Any, what: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(source, f"{what} must be an integer; got {type(value).__name__} {value!r:.40}")
    if not lo <= value <= hi:
        raise _bad(source, f"{what} must be within {lo}..{hi}; got {value}")
    return value


def _config(source: str, raw: Any) -> SegNetConfig:
    if not isinstance(raw, dict):
        raise _bad(source, f"config must be a dict; got {type(raw).__name__}")
    unknown = set(raw) - _CONFIG_KEYS
    if unknown:
        raise _bad(source, f"config has unknown fields {sorted(map(str, unknown))!r:.80}")
    if raw.get("architecture", "segnet") != "segnet":
        raise _bad(source, f"unknown architecture {raw.get('architecture')!r:.40}")
    in_channels = _int(source, raw.get("in_channels", 1), "config in_channels", 1, 1)
    n_classes = _int(source, raw.get("n_classes", 10), "config n_classes", 2, MAX_CLASSES)
    widths = raw.get("widths")
    if not isinstance(widths, (list, tuple)) or not 1 <= len(widths) <= MAX_DEPTH:
        shown = f"{len(widths)} levels" if isinstance(widths, (list, tuple)) else type(widths).__name__
        raise _bad(source, f"config widths must be a list of 1..{MAX_DEPTH} levels; got {shown}")
    widths = tuple(_int(source, w, "every config width", 1, MAX_WIDTH) for w in widths)
    batch_norm = raw.get("batch_norm", True)
    if not isinstance(batch_norm, bool):
        raise _bad(source, f"config batch_norm must be true or false; got {batch_norm!r:.40}")
    dropout = raw.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise _bad(source, f"config dropout must be a number in [0, 1); got {dropout!r:.40}")
    return SegNetConfig(
        in_channels=in_channels, n_classes=n_classes, widths=widths, batch_norm=batch_norm, dropout=float(dropout)
    )


def _class_names(source: str, raw: Any, n_classes: int) -> tuple[str, ...]:
    if not isinstance(raw, (list, tuple)) or not all(isinstance(c, str) for c in raw):
        raise _bad(source, f"class_names must be a list of strings; got {type(raw).__name__} {raw!r:.60}")
    if len(raw) != n_classes:
        raise _bad(source, f"{len(raw)} class names for a network with {n_classes} outputs")
    if any(not 0 < len(c) <= 64 for c in raw) or len(set(raw)) != len(raw):
        raise _bad(source, "class names must be distinct, non-empty and at most 64 characters")
    return tuple(raw)


def _normalization(source: str, raw: Any) -> dict:
    if not isinstance(raw, dict):
        raise _bad(source, f"normalization must be a dict; got {type(raw).__name__} {raw!r:.40}")
    if raw.get("method") != "percentile":
        raise _bad(source, f"unknown intensity normalisation {raw.get('method')!r:.40} (expects 'percentile')")
    values = []
    for key in ("low", "high"):
        v = raw.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 <= v <= 100:
            raise _bad(source, f"normalization {key} must be a percentile in 0..100; got {v!r:.40}")
        values.append(float(v))
    if not values[0] < values[1]:
        raise _bad(source, f"normalization low ({values[0]}) must be below high ({values[1]})")
    return dict(raw)


def _decoding(source: str, raw: Any, n_classes: int) -> dict:
    """The optional boundary calibration: ``{"boundary_offsets_px": [8 floats], "calibrated_on": str}``."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or set(raw) - {"boundary_offsets_px", "calibrated_on", "method"}:
        raise _bad(source, "decoding must be a dict with boundary_offsets_px, calibrated_on and method")
    for key in ("calibrated_on", "method"):
        if key in raw and (not isinstance(raw[key], str) or len(raw[key]) > 1000):
            raise _bad(source, f"decoding {key} must be a short text")
    offsets = raw.get("boundary_offsets_px")
    if offsets is None:
        return dict(raw)
    ok = isinstance(offsets, (list, tuple)) and len(offsets) == N_BOUNDARIES and n_classes == N_BOUNDARIES + 2
    ok = ok and all(
        isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
        and abs(v) <= MAX_BOUNDARY_OFFSET_PX
        for v in offsets
    )
    if not ok:
        raise _bad(
            source,
            f"decoding boundary_offsets_px must be {N_BOUNDARIES} finite rows within ±{MAX_BOUNDARY_OFFSET_PX:g} "
            f"for a 10-class model; got {offsets!r:.60}",
        )
    return {**raw, "boundary_offsets_px": [float(v) for v in offsets]}


def _training(source: str, raw: Any) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _bad(source, f"training must be a dict; got {type(raw).__name__}")
    items, tensor_bytes = 0, 0
    stack: list[tuple[Any, int]] = [(raw, 1)]
    while stack:
        node, depth = stack.pop()
        items += 1
        if items > MAX_TRAINING_ITEMS:
            raise _bad(source, f"training record holds more than {MAX_TRAINING_ITEMS} items")
        if isinstance(node, dict):
            children = [*node.keys(), *node.values()]
        elif isinstance(node, (list, tuple)):
            children = list(node)
        elif isinstance(node, (str, bytes)):
            if len(node) > MAX_TRAINING_TEXT:
                raise _bad(source, f"training record holds a text of {len(node)} characters")
            continue
        elif isinstance(node, torch.Tensor):
            tensor_bytes += node.numel() * node.element_size()
            if tensor_bytes > MAX_TRAINING_TENSOR_BYTES:
                raise _bad(source, f"training record holds over {MAX_TRAINING_TENSOR_BYTES} bytes of tensors")
            continue
        else:
            continue
        if children and depth >= MAX_TRAINING_DEPTH:
            raise _bad(source, f"training record is nested deeper than {MAX_TRAINING_DEPTH} levels")
        stack.extend((c, depth + 1) for c in children)
    return raw


def expected_state(config: SegNetConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Names, shapes and dtypes of the state dict of ``SegNet(config)``, built on the meta device (no memory)."""
    with torch.device("meta"):
        net = SegNet(config)
    return {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}


def _tensors(source: str, state: Any, config: SegNetConfig) -> None:
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise _bad(source, "state_dict must map parameter names to tensors")
    expected = expected_state(config)
    total = sum(math.prod(shape) * dt.itemsize for shape, dt in expected.values())
    if total > MAX_CHECKPOINT_BYTES:
        raise _bad(source, f"the config implies {total} bytes of weights (limit {MAX_CHECKPOINT_BYTES})")
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r:.60}"
        raise CheckpointError(f"{source}: weights do not fit the architecture ({what})")
    for name, (shape, dtype) in expected.items():
        t = state[name]
        if not isinstance(t, torch.Tensor):
            raise _bad(source, f"{name} is a {type(t).__name__}, not a tensor")
        if tuple(t.shape) != shape:
            raise CheckpointError(
                f"{source}: weights do not fit the architecture "
                f"({name} is {tuple(t.shape)}, the config implies {shape})"
            )
        if dtype.is_floating_point:
            if t.dtype not in _FLOAT_DTYPES:
                raise _bad(source, f"{name} holds {t.dtype} values; weights must be floating point")
            values = t.detach().to(torch.float32)
            if not bool(torch.isfinite(values).all()):
                raise _bad(source, f"{name} holds NaN or infinite values (a corrupt model file)")
            if values.numel() and float(values.abs().max()) > MAX_ABS_WEIGHT:
                raise _bad(source, f"{name} holds absurd values (|w| > {MAX_ABS_WEIGHT:g})")
            if name.endswith("running_var") and values.numel() and float(values.min()) < 0:
                raise _bad(source, f"{name} holds negative BatchNorm variances")
        elif t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
            raise _bad(source, f"{name} holds {t.dtype} values; expected {dtype}")


def validate_payload(payload: Any, source: str) -> ValidPayload:
    """Check every field and tensor of a loaded checkpoint dictionary; build nothing.

    Raises
    ------
    CheckpointError
        One line naming ``source`` and the first problem found.
    """
    from .checkpoint import _REQUIRED, FORMAT_VERSION

    if not isinstance(payload, dict) or any(k not in payload for k in _REQUIRED):
        raise CheckpointError(f"{source}: not a napari-octseg checkpoint (missing fields)")
    version = payload["format_version"]
    made_by = payload.get("package_version", "?")
    made_by = made_by if isinstance(made_by, str) and len(made_by) <= 40 else "?"
    if isinstance(version, bool) or not isinstance(version, int):
        raise _bad(source, f"format_version must be an integer; got {type(version).__name__} {version!r:.40}")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{source}: checkpoint format version {version} is not supported by this version "
            f"(expects {FORMAT_VERSION}; made by napari-octseg {made_by})"
        )
    config = _config(source, payload["config"])
    class_names = _class_names(source, payload["class_names"], config.n_classes)
    normalization = _normalization(source, payload["normalization"])
    training = _training(source, payload.get("training"))
    decoding = _decoding(source, payload.get("decoding"), config.n_classes)
    _tensors(source, payload["state_dict"], config)
    return ValidPayload(config, class_names, normalization, training, decoding)

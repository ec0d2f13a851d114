"""The Grad-CAM heatmap file: ``<stem>.gradcam.tif`` + ``<stem>.gradcam.json``, same schema as labels.

The TIFF is an ImageJ hyperstack with axes ``ZCYX`` (B-scan, class channel, depth, A-scan) at µm
scale, so Fiji opens it with one channel per class. Samples are float32 in [0, 1] by default, or
uint16 (0-65535) / uint8 (0-255) by choice; never float16, which ImageJ cannot open. The sidecar
(schema in :mod:`._sidecar`) adds the class values, the conv layer and the per-class statistics.
:func:`read_heatmaps_file` returns (class, B-scan, depth, A-scan) float32 in [0, 1] from any of
these and from files written before (``CZYX`` float16, ``napari_octseg_version`` key).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import InputError, OctReadError
from ._sidecar import (
    HEATMAPS_FORMAT,
    AfterTiff,
    base_record,
    embedded_sidecar,
    load_sidecar,
    normalise,
    write_tiff_pair,
)

HEATMAP_SUFFIX = ".gradcam.tif"
HEATMAP_SIDECAR_SUFFIX = ".gradcam.json"
#: Sample types a heatmap TIFF can have, and the value that stands for 1.0.
HEATMAP_DTYPES: dict[str, float] = {"float32": 1.0, "uint16": 65535.0, "uint8": 255.0}
DEFAULT_HEATMAP_DTYPE = "float32"


@dataclass
class HeatmapsFile:
    """A heatmap file read back: ``heatmaps`` float32 (n_classes, n_bscans, depth, width) in [0, 1]."""

    heatmaps: np.ndarray
    class_names: tuple[str, ...]
    classes: tuple[int, ...]
    scale_um: tuple[float, float, float] | None
    info: dict[str, Any] = field(default_factory=dict)


def encode(heatmaps: np.ndarray, dtype: str) -> np.ndarray:
    """(C, n, H, W) values in [0, 1] -> the stored samples of ``dtype`` (rounded for integers)."""
    if dtype not in HEATMAP_DTYPES:
        raise InputError(f"heatmap dtype {dtype!r}; choose one of {', '.join(HEATMAP_DTYPES)}")
    x = np.clip(np.asarray(heatmaps, dtype=np.float32), 0.0, 1.0)
    if dtype == "float32":
        return x
    scaled = np.rint(np.multiply(x, HEATMAP_DTYPES[dtype], dtype=np.float32))
    return scaled.astype(np.uint16) if dtype == "uint16" else scaled.astype(np.uint8)


def write_heatmaps_file(
    path: str | os.PathLike,
    heatmaps: np.ndarray,
    class_names: list[str] | tuple[str, ...],
    *,
    classes: list[int] | tuple[int, ...],
    dtype: str = DEFAULT_HEATMAP_DTYPE,
    scale_um: tuple[float, float, float] | None = None,
    source: Mapping[str, Any] | None = None,
    model: object = None,
    force: bool = False,
    after_tiff: AfterTiff | None = None,
    **extra: Any,
) -> tuple[Path, Path]:
    """Write heatmaps (n_classes, n_bscans, depth, width) in [0, 1] as an ImageJ TIFF + JSON sidecar.

    Parameters
    ----------
    heatmaps
        float (C, n, H, W), one map per class, values in [0, 1].
    class_names, classes
        Name and label value of each channel, in order.
    dtype
        ``"float32"`` (default), ``"uint16"`` or ``"uint8"``.
    scale_um, source, model
        As for :func:`napari_octseg.io.labels.write_labels_file`.
    **extra
        Further sidecar entries (layer, target, stats...).

    Returns
    -------
    (Path, Path)
        The TIFF and the sidecar.
    """
    heat = np.asarray(heatmaps)
    if heat.ndim != 4 or heat.shape[0] != len(class_names) or len(classes) != len(class_names):
        raise InputError(f"heatmaps {heat.shape} do not match {len(class_names)} class names / {len(classes)} values")
    stored = encode(heat, dtype)
    tif = Path(path)
    info = base_record(
        HEATMAPS_FORMAT,
        file=tif.name,
        axes=["class", "bscan", "depth", "ascan"],
        tiff_axes="ZCYX",
        shape=heat.shape,
        dtype=dtype,
        scale_um=scale_um,
        source=source,
        model=model,
        class_names=[str(n) for n in class_names],
    )
    info["classes"] = [int(c) for c in classes]
    info["value_range"] = [0, HEATMAP_DTYPES[dtype] if dtype != "float32" else 1]
    info.update(extra)
    zcyx = np.ascontiguousarray(np.moveaxis(stored, 0, 1))
    return write_tiff_pair(
        tif, zcyx, info, tiff_axes="ZCYX", scale_um=scale_um, marker="heatmaps", force=force, after_tiff=after_tiff
    )


def read_heatmaps_file(path: str | os.PathLike) -> HeatmapsFile:
    """Read a heatmap TIFF (any version) as float32 (n_classes, n_bscans, depth, width) in [0, 1].

    Raises
    ------
    OctReadError
        Unreadable TIFF or sidecar, or a shape the sidecar does not describe.
    """
    import tifffile

    from ._sidecar import scale_from
    from ._util import fail, library_errors

    p = Path(path)
    try:
        info = load_sidecar(p)
    except (OSError, ValueError) as exc:
        raise fail(p, f"unreadable sidecar ({exc})") from None
    with library_errors(p, "not a readable TIFF"), tifffile.TiffFile(p) as tif:
        if info is None:
            embedded = embedded_sidecar(tif)
            info = normalise(embedded) if embedded is not None else None
        if info is None:
            raise fail(p, "no heatmap sidecar (.json) and no description inside the TIFF")
        data = tif.series[0].asarray()
    axes = str(info.get("tiff_axes", "CZYX"))
    shape = tuple(int(s) for s in info.get("shape", ()))
    data = data.reshape(shape if axes == "CZYX" else (shape[1], shape[0], *shape[2:]))
    if axes == "ZCYX":
        data = np.moveaxis(data, 1, 0)
    dtype = str(info.get("dtype", data.dtype.name))
    heat = data.astype(np.float32) / np.float32(HEATMAP_DTYPES.get(dtype, 1.0))
    if heat.shape != shape:
        raise OctReadError(f"{p.name}: heatmaps {heat.shape} differ from the sidecar's {shape}")
    return HeatmapsFile(
        heatmaps=heat,
        class_names=tuple(str(n) for n in info.get("class_names", ())),
        classes=tuple(int(c) for c in info.get("classes", ())),
        scale_um=scale_from(info),
        info=info,
    )

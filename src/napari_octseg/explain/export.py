"""Heatmap TIFFs that ImageJ/Fiji open with their µm scale, and the per-class table as CSV.

The TIFF sample type and resolution tags are chosen here, in one place, so the file-format owner
(``io``) can take them over without touching the callers.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..core.atomic import atomic_write_text
from ..core.errors import InputError

#: Sample types a heatmap TIFF can have; float32 (exact, ImageJ's 32-bit) is the default. float16 is not
#: offered: ImageJ/Fiji cannot open it.
HEATMAP_DTYPES: tuple[str, ...] = ("float32", "uint16", "uint8")
#: Axis order of the heatmap TIFF: B-scan, class, depth, width (ImageJ's hyperstack order Z, C, Y, X).
HEATMAP_AXES = "ZCYX"


def heatmap_tiff(
    heatmaps: np.ndarray, scale_um: Sequence[float] | None, dtype: str = "float32"
) -> tuple[np.ndarray, dict[str, Any]]:
    """Array and ``tifffile.imwrite`` keywords of an ImageJ hyperstack of heatmaps.

    Parameters
    ----------
    heatmaps
        (n_classes, n_bscans, depth, width) in [0, 1] (any float type).
    scale_um
        (z, y, x) µm per pixel of the volume, or ``None`` (unknown: no resolution tags are written).
    dtype
        ``"float32"`` (values in [0, 1]), ``"uint16"`` (0-65535) or ``"uint8"`` (0-255).

    Returns
    -------
    data
        (n_bscans, n_classes, depth, width) of ``dtype`` (axes :data:`HEATMAP_AXES`).
    kwargs
        ``imagej=True`` with the axes, and, when the scale is known, ``resolution`` (pixels per µm in x and
        y), ``unit`` µm and the B-scan spacing.
    """
    if dtype not in HEATMAP_DTYPES:
        raise InputError(f"unknown heatmap sample type {dtype!r}; choose one of {', '.join(HEATMAP_DTYPES)}")
    data = np.transpose(np.asarray(heatmaps), (1, 0, 2, 3)).astype(np.float32)
    if dtype != "float32":
        top = float(np.iinfo(dtype).max)
        data = np.rint(np.clip(data, 0.0, 1.0) * top).astype(dtype)
    metadata: dict[str, Any] = {"axes": HEATMAP_AXES}
    kwargs: dict[str, Any] = {"imagej": True, "metadata": metadata}
    if scale_um is not None:
        z, y, x = (float(v) for v in scale_um)
        kwargs["resolution"] = (1.0 / x, 1.0 / y)
        metadata.update({"unit": "um", "spacing": z})
    return np.ascontiguousarray(data), kwargs


def value_range(dtype: str) -> list[float]:
    """The value that stands for heatmap 0 and 1 in a TIFF of ``dtype``."""
    return [0.0, 1.0] if dtype == "float32" else [0.0, float(np.iinfo(dtype).max)]


#: Columns of the per-class table (the paper's Table 3 plus the spread of the map).
TABLE_COLUMNS: tuple[str, ...] = (
    "input",
    "class",
    "name",
    "layer",
    "target",
    "weight_sum",
    "weight_max",
    "max",
    "mean",
    "mean_normalized",
)


def table_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV text of per-class rows (``GradCamResult.stats_rows()`` plus ``input``), in :data:`TABLE_COLUMNS`."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(TABLE_COLUMNS), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.7g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buf.getvalue()


def write_table(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> None:
    """Write the per-class table as CSV, atomically."""
    atomic_write_text(path, table_csv(rows))


__all__ = ["HEATMAP_AXES", "HEATMAP_DTYPES", "TABLE_COLUMNS", "heatmap_tiff", "table_csv", "value_range", "write_table"]

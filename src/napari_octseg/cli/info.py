"""``octseg info FILE...``: shape, dtype, scale, scan pattern, laterality and device lines of OCT files."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..core.errors import OctsegError
from ..core.volume import OctVolume


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="describe OCT files (shape, scale in µm, scan pattern, ...)",
        description="Print what napari-octseg reads from each file; unreadable "
        "files get a one-line error and a non-zero exit status.",
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="OCT file(s) or folder(s) of B-scans")
    parser.set_defaults(func=run)


def _reflectivity_line(volume: OctVolume) -> str:
    """What the grey values are and why (the segmentation reads them the same way with ``--reflectivity auto``)."""
    from ..core.intensity import resolve_reflectivity

    kind, reason = resolve_reflectivity("auto", volume.data[:4], volume.reflectivity)
    reason = volume.meta.get("reflectivity_reason") or reason
    return f"linear reflectivity ({reason})" if kind == "linear" else f"display grey values ({reason})"


def describe(volume: OctVolume) -> list[str]:
    """Human-readable lines describing ``volume``."""
    n, h, w = volume.shape
    if volume.scale_um:
        z, y, x = volume.scale_um
        note = ""
        if not volume.meta.get("z_spacing_known", True):
            note = " (single B-scan: z not applicable)" if n == 1 else " (z nominal: B-scans not evenly spaced)"
        scale = f"{z:.2f} x {y:.3f} x {x:.3f} µm (B-scan spacing x axial x lateral){note}"
    else:
        scale = "unknown (the file does not say)"
    lines = [
        f"  shape        {n} B-scans x {h} rows x {w} A-scans  (dtype {volume.data.dtype})",
        f"  grey values  {_reflectivity_line(volume)}",
        f"  scale        {scale}",
        f"  scan pattern {volume.scan_pattern}",
        f"  laterality   {volume.laterality or 'unknown'}",
    ]
    if volume.layers:
        parts = []
        for name, heights in volume.layers.items():
            finite = np.isfinite(heights)
            parts.append(f"{name} ({100.0 * finite.mean():.0f}% present)")
        lines.append(f"  device lines {', '.join(parts)}")
    else:
        lines.append("  device lines none")
    if volume.labels is not None:
        lines.append(f"  labels       ground truth {volume.labels.shape}, classes {np.unique(volume.labels).tolist()}")
    fmt = volume.meta.get("format")
    if fmt:
        lines.append(f"  format       {fmt}")
    return lines


def run(args: argparse.Namespace) -> int:
    from ..io import read

    status = 0
    for i, path in enumerate(args.files):
        try:
            volume = read(path)
        except OctsegError as exc:
            print(f"octseg info: error: {exc}", file=sys.stderr)
            status = 1
            continue
        if i:
            print()
        print(path)
        print("\n".join(describe(volume)))
    return status

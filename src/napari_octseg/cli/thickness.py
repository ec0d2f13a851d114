"""``octseg thickness``: layer thickness, ETDRS/TSNIT sectors and CSV export from a label volume.

The input is a label volume (``.tif``/``.tiff``/``.npy``, e.g. written by ``octseg segment``) or any
file whose reader provides labels (Duke ``.mat``/``.npz``). The pixel spacing comes from ``--scale``,
else from ``--image``'s volume, else from the input's own volume, else from the ``<stem>.json``
sidecar ``octseg segment`` writes beside its labels; without any, thickness is in pixels and the
CSV column says so. Both CSV files are written atomically, and only after both targets are known to
be free (or ``--force``).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from ..core.atomic import check_writable
from ..core.errors import InputError, LabelError, OctsegError
from ..core.volume import OctVolume
from ._common import add_force_quiet

LABEL_SUFFIXES = (".tif", ".tiff", ".npy")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``thickness`` subcommand to the ``octseg`` parser."""
    p = subparsers.add_parser(
        "thickness",
        help="layer thickness maps, ETDRS/TSNIT sectors and CSV export from labels",
        description=(
            "Measure every retinal layer, the total retina (ILM-BM, fluid included) and fluid per A-scan, and "
            "summarise them on the ETDRS grid (volumes) or TSNIT sectors (circle scans). Writes a long-format "
            "per-A-scan CSV and, with --etdrs, the sector CSV; existing files are kept unless --force."
        ),
    )
    p.add_argument(
        "input",
        metavar="LABELS_OR_INPUT",
        type=Path,
        help="label volume (.tif/.npy) or a file whose reader provides labels (Duke .mat/.npz)",
    )
    p.add_argument("--image", type=Path, metavar="FILE", help="the OCT file the labels belong to (scale, laterality)")
    p.add_argument("--scale", metavar="Z,Y,X", help="pixel spacing in µm (B-scan, depth, A-scan)")
    p.add_argument("--laterality", choices=("OD", "OS"), help="eye (overrides the file's)")
    p.add_argument("--fovea", metavar="BSCAN,ASCAN", help="ETDRS centre in pixels (default: found automatically)")
    p.add_argument("--csv", required=True, type=Path, metavar="OUT.csv", help="per-A-scan CSV (long format)")
    p.add_argument("--etdrs", type=Path, metavar="OUT_ETDRS.csv", help="sector CSV (ETDRS or TSNIT)")
    add_force_quiet(p, force_help="overwrite existing CSV files", quiet_help="no progress bar and no table")
    p.set_defaults(func=run)


def _floats(text: str, n: int, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != n or not all(math.isfinite(v) for v in values):
        raise InputError(f"{what} must be {n} comma-separated numbers; got {text!r}")
    return values


def _read_sidecar(path: Path) -> dict:
    """The JSON sidecar ``octseg segment`` writes beside ``<stem>.labels.tif`` (empty when absent)."""
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{sidecar}: not a readable labels sidecar ({exc})") from None
    if not isinstance(info, dict):
        raise InputError(f"{sidecar}: not a readable labels sidecar (not a JSON object)")
    return info


def _sidecar_scale(path: Path) -> tuple[float, float, float] | None:
    """``scale_um`` from the JSON sidecar ``octseg segment`` writes beside ``<stem>.labels.tif``."""
    sidecar = path.with_suffix(".json")
    scale = _read_sidecar(path).get("scale_um")
    if scale is None:
        return None
    if not (isinstance(scale, list) and len(scale) == 3 and all(isinstance(s, (int, float)) for s in scale)):
        raise InputError(f"{sidecar}: scale_um must be three numbers; got {scale!r}")
    return (float(scale[0]), float(scale[1]), float(scale[2]))


def load_inputs(args: argparse.Namespace) -> tuple[np.ndarray, OctVolume | None, tuple[float, float, float] | None]:
    """Labels (n, H, W) uint8, the volume that describes them (or None) and the scale to use."""
    from ..io import read, read_labels

    path: Path = args.input
    source: OctVolume | None = None
    if path.suffix.lower() in LABEL_SUFFIXES:
        labels = read_labels(path)
    else:
        source = read(path)
        if source.labels is None:
            raise LabelError(f"{path}: holds no labels; pass a label volume (.tif/.npy) or a file with annotations")
        labels = np.asarray(source.labels)
        labels = labels[None] if labels.ndim == 2 else labels
    image = read(args.image) if args.image is not None else None
    if image is not None and tuple(labels.shape) != tuple(image.shape):
        raise LabelError(
            f"{path}: labels have shape {tuple(labels.shape)}, the image {args.image} has {tuple(image.shape)}"
        )
    described = image if image is not None else source
    if args.scale is not None:
        scale = _floats(args.scale, 3, "--scale")
    elif described is not None and described.scale_um is not None:
        scale = described.scale_um
    elif source is None:
        scale = _sidecar_scale(path)
    else:
        scale = None
    return labels, described, scale


def _print_table(report, out_csv: list[Path]) -> None:
    """A short summary: total retina and fluid per sector, and the fluid volume."""
    table = report.sectors
    unit = "µm" if table.unit == "um" else "px"
    print(f"thickness unit: {unit}; {table.note or table.grid}")
    print(f"{'sector':<7}{'retina mean':>13}{'retina mm3':>12}{'fluid mm3':>11}{'A-scans':>9}{'coverage':>10}")
    for sector in table.sectors:
        ret = table.get("total retina", sector)
        fl = table.get("fluid", sector)
        print(
            f"{sector:<7}{ret.mean:>13.1f}{ret.volume_mm3:>12.4f}{fl.volume_mm3:>11.4f}{ret.n_ascans:>9d}"
            f"{ret.coverage:>10.2f}"
        )
    print("wrote " + ", ".join(str(p) for p in out_csv))


def run(args: argparse.Namespace) -> int:
    """Measure, write the CSV file(s), print the sector summary; return the exit code."""
    from ..core.etdrs import etdrs_unavailable
    from ..core.progress import tqdm_drain
    from ..core.thickness import analyse, export_csv

    targets = [args.csv] + ([args.etdrs] if args.etdrs is not None else [])
    for target in targets:  # fail before the (possibly long) measurement
        check_writable(target, args.force)
    fovea = _floats(args.fovea, 2, "--fovea") if args.fovea is not None else None
    labels, described, scale = load_inputs(args)
    laterality = args.laterality or (described.laterality if described is not None else None)
    pattern = described.scan_pattern if described is not None else ("volume" if labels.shape[0] > 1 else "line")
    if args.etdrs is not None:
        reason = etdrs_unavailable(labels.shape[0], scale, pattern, laterality)
        if reason and labels.shape[0] > 1 and pattern != "radial":
            hint = "pass --scale or --image" if scale is None else "pass --laterality OD|OS"
            raise InputError(f"ETDRS not applicable: {reason}; {hint}")
    report = tqdm_drain(analyse(labels, scale, laterality, pattern, fovea=fovea), desc="thickness", disable=args.quiet)
    quality = None
    if args.input.suffix.lower() in LABEL_SUFFIXES:  # the segmentation's quality, from its sidecar
        from ..quality.report import quality_from_sidecar

        quality = quality_from_sidecar(_read_sidecar(args.input), labels.shape[0])
    try:
        written = export_csv(
            report, args.csv, args.etdrs, volume_name=args.input.stem, force=args.force, quality=quality
        )
    except OSError as exc:
        raise OctsegError(f"cannot write the CSV: {exc}") from None
    if not args.quiet:
        _print_table(report, written)
    return 0

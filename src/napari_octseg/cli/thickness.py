"""``octseg thickness``: layer thickness, ETDRS/TSNIT sectors and CSV export from a label volume.

The input is a label volume (``.tif``/``.tiff``/``.npy``, e.g. written by ``octseg segment``) or any
file whose reader provides labels (Duke ``.mat``/``.npz``). The pixel spacing comes from ``--scale``,
else from ``--image``'s volume, else from the input's own volume, else from the labels file (its
sidecar, or the TIFF's ImageJ tags); without any, thickness is in pixels and the CSV column says so.
Every CSV row starts with identity columns (subject = the scan's file stem, source file, eye, scan
date, scan pattern, model name and hash, fovea in µm; :mod:`napari_octseg.core.tables`) so the CSVs
of a cohort concatenate. ``--surfaces`` also writes the 8 boundary surfaces per A-scan. The CSV files
are written atomically, and only after every target is known to be free (or ``--force``).


Several label files, a folder of ``*.labels.tif`` or a run manifest make a cohort run (see
:mod:`._cohort`): per-file parts in ``--out DIR``, resumable and shardable like ``octseg segment``, then
one long-format CSV and one sector CSV for the whole cohort with ``subject`` and ``file`` columns.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.atomic import check_writable, refuse_output_is_input
from ..core.errors import InputError, LabelError, OctsegError
from ..core.tables import ScanIdentity, export_surfaces_csv
from ..core.thickness import MAX_SCALE_UM, check_scale
from ..core.volume import OctVolume
from ..io.labels import read_labels_file
from ._batch import add_shard_option
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
            "per-A-scan CSV and, with --etdrs, the sector CSV; existing files are kept unless --force. Several label "
            "files, a folder of *.labels.tif or a run manifest (octseg-manifest.jsonl) make one cohort table "
            "(subject and file columns); each volume is measured once into --out DIR, so a re-run only measures "
            "new or changed label files."
        ),
    )
    p.add_argument(
        "inputs",
        metavar="LABELS_OR_INPUT",
        type=Path,
        nargs="+",
        help="label volume (.tif/.npy) or a file whose reader provides labels (Duke .mat/.npz); several, a "
        "folder of *.labels.tif or an octseg-manifest.jsonl for a cohort",
    )
    p.add_argument("--image", type=Path, metavar="FILE", help="the OCT file the labels belong to (scale, laterality)")
    p.add_argument("--scale", metavar="Z,Y,X", help="pixel spacing in µm (B-scan, depth, A-scan)")
    p.add_argument("--laterality", choices=("OD", "OS"), help="eye (overrides the file's)")
    p.add_argument("--fovea", metavar="BSCAN,ASCAN", help="ETDRS centre in pixels (default: found automatically)")
    p.add_argument("--csv", required=True, type=Path, metavar="OUT.csv", help="per-A-scan CSV (long format)")
    p.add_argument("--etdrs", type=Path, metavar="OUT_ETDRS.csv", help="sector CSV (ETDRS or TSNIT)")
    p.add_argument(
        "--out", type=Path, metavar="DIR", help="cohort: per-file parts and manifest (default: --csv's folder)"
    )
    add_shard_option(p)
    p.add_argument(
        "--surfaces",
        type=Path,
        metavar="OUT_SURFACES.csv",
        help="the 8 boundary surfaces per A-scan (depth in px and µm), long format",
    )
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


def _sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


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


@dataclass
class Inputs:
    """What ``octseg thickness`` measures and how it names the rows."""

    labels: np.ndarray
    scale: tuple[float, float, float] | None
    laterality: str | None
    pattern: str
    identity: ScanIdentity


def load_inputs(args: argparse.Namespace) -> Inputs:
    """Labels (n, H, W) uint8, the scale, eye and scan pattern to use, and the rows' identity.

    Each comes from the first that knows it: the options, ``--image``'s volume, the input's own
    volume (Duke files), the labels file's sidecar (:func:`napari_octseg.io.labels.read_labels_file`).
    """
    from ..io import read
    from ..io._sidecar import scan_date, subject_from_path

    path: Path = args.input
    source: OctVolume | None = None
    info: dict = {}
    file_scale = None
    if path.suffix.lower() in LABEL_SUFFIXES:
        found = read_labels_file(path)
        labels, info, file_scale = found.labels, found.info, found.scale_um
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
    # the source record of the sidecar; sidecars written before it kept the eye and pattern at the top level
    recorded = info.get("source") or {k: info.get(k) for k in ("laterality", "scan_pattern") if info.get(k)}
    scale: tuple[float, float, float] | None
    if args.scale is not None:
        z, y, x = _floats(args.scale, 3, "--scale")
        scale = (z, y, x)
        if not all(0 < v <= MAX_SCALE_UM for v in scale):
            raise InputError(
                f"--scale must be three spacings in µm, each above 0 and at most {MAX_SCALE_UM:g}; got {args.scale!r}"
            )
    elif described is not None and described.scale_um is not None:
        scale = described.scale_um
    else:
        scale = file_scale
    laterality = args.laterality or (described.laterality if described is not None else recorded.get("laterality"))
    default_pattern = "volume" if labels.shape[0] > 1 else "line"
    pattern: str
    if described is not None:
        pattern = described.scan_pattern
    else:
        pattern = recorded.get("scan_pattern") or default_pattern
    scan_file = args.image or (None if described is not None else recorded.get("file")) or path
    model = info.get("model") or {}
    identity = ScanIdentity(
        subject=subject_from_path(scan_file),
        source_file=str(scan_file),
        eye=laterality,
        scan_date=scan_date(described) if described is not None else recorded.get("scan_date"),
        scan_pattern=pattern,
        model=model.get("name"),
        model_hash=model.get("short_hash"),
    )
    check_scale(scale)
    return Inputs(labels, scale, laterality, pattern, identity)


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


def etdrs_check(labels: np.ndarray, scale, pattern: str, laterality: str | None) -> None:
    """Raise a one-line InputError when an ETDRS table was asked for a volume that cannot have one."""
    from ..core.etdrs import etdrs_unavailable

    reason = etdrs_unavailable(labels.shape[0], scale, pattern, laterality)
    if reason and labels.shape[0] > 1 and pattern != "radial":
        hint = "pass --scale or --image" if scale is None else "pass --laterality OD|OS"
        raise InputError(f"ETDRS not applicable: {reason}; {hint}")


def run(args: argparse.Namespace) -> int:
    """Measure, write the CSV file(s), print the sector summary; return the exit code."""
    from ..core.progress import tqdm_drain
    from ..core.thickness import analyse, export_csv
    from ._cohort import is_cohort, run_cohort

    if is_cohort(args):
        return run_cohort(args)
    if args.shard is not None or args.out is not None:
        raise InputError("--shard and --out apply to a cohort run (several label files, a folder or a manifest)")
    args.input = args.inputs[0]
    targets = [args.csv] + [p for p in (args.etdrs, args.surfaces) if p is not None]
    if len({t.resolve() for t in targets}) != len(targets):
        raise InputError("--csv, --etdrs and --surfaces must be different files")
    refuse_output_is_input(targets, [Path(args.input), args.image, _sidecar_path(Path(args.input))])
    for target in targets:  # fail before the (possibly long) measurement
        check_writable(target, args.force)
    fovea: tuple[float, float] | None = None
    if args.fovea is not None:
        row, column = _floats(args.fovea, 2, "--fovea")
        fovea = (row, column)
    found = load_inputs(args)
    labels, scale, laterality, pattern = found.labels, found.scale, found.laterality, found.pattern
    if args.etdrs is not None:
        etdrs_check(labels, scale, pattern, laterality)
    report = tqdm_drain(analyse(labels, scale, laterality, pattern, fovea=fovea), desc="thickness", disable=args.quiet)
    identity = found.identity.located(report.sectors.fovea, report.thickness.scale_um)
    quality = None
    if Path(args.input).suffix.lower() in LABEL_SUFFIXES:  # the segmentation's quality, from its sidecar
        from ..quality.report import quality_from_sidecar

        quality = quality_from_sidecar(_read_sidecar(Path(args.input)), found.labels.shape[0])
    try:
        written = export_csv(report, args.csv, args.etdrs, force=args.force, identity=identity, quality=quality)
        if args.surfaces is not None:
            written.append(
                export_surfaces_csv(report.thickness.boundaries, args.surfaces, scale, identity, force=args.force)
            )
    except OSError as exc:
        raise OctsegError(f"cannot write the CSV: {exc}") from None
    if not args.quiet:
        _print_table(report, written)
    return 0

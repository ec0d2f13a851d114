"""``octseg segment``: segment OCT files into label volumes, for batch work.

For each input, writes ``DIR/<stem>.labels.tif`` (uint8, (n_bscans, depth, width); a 2-D input is one
B-scan), ``DIR/<stem>.labels.json`` (class names, model and its training summary, scale in µm, input,
device, seconds, per-B-scan quality) and ``DIR/<stem>.qc.csv`` (quality, flags, reasons and the measurements
behind them, one row per B-scan; see :mod:`napari_octseg.quality`); with ``--uncertainty`` also
``DIR/<stem>.uncertainty.tif`` (float16 per-pixel uncertainty in [0, 1], the labels' shape). All are written
atomically, together; existing outputs are kept unless ``--force``. An input with flagged B-scans gets one
warning line naming them and why.

An input that cannot be processed (unreadable, non-finite, output already there) is reported on one
line and skipped; the others are still processed and the command exits 1 at the end. Problems that
concern every input (model file, device, output folder) stop before anything is written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ._common import (
    add_input_options,
    add_run_options,
    load_for_run,
    output_paths,
    parse_scale,
    read_input,
    run_per_input,
    warn,
)

LABELS_SUFFIX = ".labels.tif"
SIDECAR_SUFFIX = ".labels.json"
QC_SUFFIX = ".qc.csv"
UNCERTAINTY_SUFFIX = ".uncertainty.tif"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``segment`` subcommand to the ``octseg`` parser."""
    p = subparsers.add_parser(
        "segment",
        help="segment retinal layers of OCT files into label volumes",
        description=(
            "Segment the retinal layers of OCT files. Writes DIR/<stem>.labels.tif (uint8, n_bscans x depth x width) "
            ", DIR/<stem>.labels.json and DIR/<stem>.qc.csv (quality per B-scan) per input; existing outputs are "
            "kept unless --force. B-scans whose quality is low are named on one warning line per input. Inputs "
            "that fail are reported and skipped; the exit code is then 1."
        ),
    )
    add_input_options(p)
    add_run_options(p, batch_size=4)
    p.add_argument(
        "--uncertainty",
        action="store_true",
        help="also write DIR/<stem>.uncertainty.tif: per-pixel uncertainty in [0, 1] (1 - margin of the two likeliest "
        "classes)",
    )
    p.set_defaults(func=run)


def _segment_one(path: Path, args: argparse.Namespace, loaded, out_dir: Path) -> str:
    """Segment one input and write its outputs; return the summary line."""
    from ..core.progress import tqdm_drain
    from ..inference import labels_sidecar, segment
    from ..quality.score import warning_line

    suffixes = (LABELS_SUFFIX, SIDECAR_SUFFIX, QC_SUFFIX) + ((UNCERTAINTY_SUFFIX,) if args.uncertainty else ())
    targets = output_paths(path, out_dir, suffixes, args.force)
    tif_path = targets[0]
    volume = read_input(path)
    scale = parse_scale(args.scale) or volume.scale_um
    gen = segment(
        volume,
        loaded,
        batch_size=args.batch_size,
        device=args.device,
        scale_um=scale,
        reflectivity=args.reflectivity,
        return_uncertainty=True,
    )
    result = tqdm_drain(gen, desc=path.name, disable=args.quiet)
    for note in result.notes:
        warn(f"{path.name}: {note}")
    quality = result.quality
    assert quality is not None and result.uncertainty is not None  # requested above
    sidecar = labels_sidecar(
        result.labels,
        result.class_names,
        model=loaded,
        scale_um=scale,
        preprocessing=result.provenance(),
        input=str(path.resolve()),
        labels_file=tif_path.name,
        laterality=volume.laterality,
        scan_pattern=volume.scan_pattern,
        device=result.device,
        batch_size=result.batch_size,
        seconds=round(result.seconds, 3),
        quality=quality.summary(),
        qc_file=targets[2].name,
        uncertainty_file=targets[3].name if args.uncertainty else None,
    )
    _write_outputs(targets, result.labels, sidecar, quality, result.uncertainty if args.uncertainty else None, args)
    warning = warning_line(quality, path.name)
    if warning is not None:
        warn(warning)
    n, h, w = result.labels.shape
    rate = n / result.seconds if result.seconds > 0 else float("inf")
    return f"{path}: {n} x {h} x {w} -> {tif_path} ({result.seconds:.1f} s, {rate:.2f} B-scans/s, {result.device})"


def _write_outputs(
    targets: tuple[Path, ...],
    labels: np.ndarray,
    sidecar: dict,
    quality,
    uncertainty: np.ndarray | None,
    args: argparse.Namespace,
) -> None:
    """Labels TIFF, sidecar, QC table (and uncertainty TIFF): every temporary complete before any rename."""
    import tifffile

    from ..core.atomic import atomic_paths, check_writable
    from ..quality.report import qc_csv_text

    for target in targets:
        check_writable(target, args.force)
    with atomic_paths(*targets) as tmp:
        tifffile.imwrite(tmp[0], labels, photometric="minisblack", metadata={"axes": "ZYX"})
        tmp[1].write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")
        tmp[2].write_text(qc_csv_text(quality), encoding="utf-8")
        if uncertainty is not None:
            tifffile.imwrite(tmp[3], uncertainty, photometric="minisblack", metadata={"axes": "ZYX"})


def run(args: argparse.Namespace) -> int:
    """Run ``octseg segment``; return 0 when every input was written, else 1."""
    loaded = load_for_run(args)
    return run_per_input("segment", args, lambda path: _segment_one(path, args, loaded, args.out), "segmented")

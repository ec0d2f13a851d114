"""``octseg segment``: segment OCT files into label volumes, for batch work.

For each input, writes ``DIR/<stem>.labels.tif`` (uint8, (n_bscans, depth, width); a 2-D input is one
B-scan) and ``DIR/<stem>.labels.json`` (class names, model and its training summary, scale in µm, input,
device, seconds). Both are written atomically; existing outputs are kept unless ``--force``.

An input that cannot be processed (unreadable, non-finite, output already there) is reported on one
line and skipped; the others are still processed and the command exits 1 at the end. Problems that
concern every input (model file, device, output folder) stop before anything is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._common import (
    add_input_options,
    add_run_options,
    check_run_memory,
    load_for_run,
    output_paths,
    parse_scale,
    read_input,
    run_per_input,
    warn,
    write_tiff_and_json,
)

LABELS_SUFFIX = ".labels.tif"
SIDECAR_SUFFIX = ".labels.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``segment`` subcommand to the ``octseg`` parser."""
    p = subparsers.add_parser(
        "segment",
        help="segment retinal layers of OCT files into label volumes",
        description=(
            "Segment the retinal layers of OCT files. Writes DIR/<stem>.labels.tif (uint8, n_bscans x depth x width) "
            "and DIR/<stem>.labels.json per input; existing outputs are kept unless --force. Inputs that fail are "
            "reported and skipped; the exit code is then 1."
        ),
    )
    add_input_options(p)
    add_run_options(p, batch_size=4)
    p.set_defaults(func=run)


def _segment_one(path: Path, args: argparse.Namespace, loaded, out_dir: Path) -> str:
    """Segment one input and write its outputs; return the summary line."""
    from ..core.progress import tqdm_drain
    from ..inference import labels_sidecar, segment

    tif_path, json_path = output_paths(path, out_dir, (LABELS_SUFFIX, SIDECAR_SUFFIX), args.force)
    volume = read_input(path)
    check_run_memory(path, volume, args, loaded, "segment")
    scale = parse_scale(args.scale) or volume.scale_um
    gen = segment(
        volume, loaded, batch_size=args.batch_size, device=args.device, scale_um=scale, reflectivity=args.reflectivity
    )
    result = tqdm_drain(gen, desc=path.name, disable=args.quiet)
    for note in result.notes:
        warn(f"{path.name}: {note}")
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
    )
    write_tiff_and_json(tif_path, json_path, result.labels, sidecar, axes="ZYX", force=args.force)
    n, h, w = result.labels.shape
    rate = n / result.seconds if result.seconds > 0 else float("inf")
    return f"{path}: {n} x {h} x {w} -> {tif_path} ({result.seconds:.1f} s, {rate:.2f} B-scans/s, {result.device})"


def run(args: argparse.Namespace) -> int:
    """Run ``octseg segment``; return 0 when every input was written, else 1."""
    loaded = load_for_run(args)
    return run_per_input("segment", args, lambda path: _segment_one(path, args, loaded, args.out), "segmented")

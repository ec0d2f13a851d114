"""``octseg segment``: segment OCT files into label volumes, for batch work.

For each input, writes ``DIR/<stem>.labels.tif`` (uint8, (n_bscans, depth, width); a 2-D input is one
B-scan, ImageJ TIFF with the µm scale in its resolution tags) and ``DIR/<stem>.labels.json`` (class names,
scale in µm, source scan, model name + SHA-256 + training summary, the edit record of this automatic
result, device, seconds; format in :mod:`napari_octseg.io.labels`). Both are written atomically.
Re-running the same command skips inputs whose outputs are up to date (same model file, same input,
same options) and redoes stale or partial ones; files octseg did not make are kept unless ``--force``.
``--shard K/N`` (or ``torchrun``) processes one share of the inputs; every run appends one row per
input to ``DIR/octseg-manifest.jsonl``. Also ``DIR/<stem>.qc.csv`` (quality, flags, reasons and the measurements
behind them, one row per B-scan; see :mod:`napari_octseg.quality`) and, with ``--uncertainty``,
``DIR/<stem>.uncertainty.tif`` (float16 per-pixel uncertainty in [0, 1]). An input with flagged B-scans gets
one warning line naming them and why.

An input that cannot be processed (unreadable, non-finite, output already there) is reported on one
line and skipped; the others are still processed and the command exits 1 at the end. Problems that
concern every input (model file, device, output folder) stop before anything is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ._batch import BatchSpec, Outcome, run_batch
from ._common import (
    add_input_options,
    add_run_options,
    check_run_memory,
    load_for_run,
    model_identity,
    parse_scale,
    read_input,
    run_entry,
    volume_source,
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
            ", DIR/<stem>.labels.json and DIR/<stem>.qc.csv (quality per B-scan) per input; B-scans whose quality "
            "is low are named on one warning line per input. Re-running skips inputs whose outputs are up to "
            "date (same model file, same input) and redoes stale or partial ones; other existing files are kept "
            "unless --force. "
            "Inputs that fail are reported and skipped; the exit code is then 1. One row per input goes to "
            "DIR/octseg-manifest.jsonl."
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
    p.add_argument(
        "--mirror-check",
        action="store_true",
        help="also segment every B-scan mirrored left-right; B-scans whose labels change get a lower quality "
        "(reason: labels change when the B-scan is mirrored). About 1.5 x the time; the labels are the same",
    )
    p.set_defaults(func=run)


def _segment_one(
    path: Path,
    volume,
    targets: tuple[Path, ...],
    run: dict,
    overwrite: bool,
    args: argparse.Namespace,
    loaded,
) -> Outcome:
    """Segment one (already read) input and write its outputs; return the summary line.

    ``targets``: the labels TIFF, the QC table, (the uncertainty TIFF,) and last the sidecar. The QC table
    and the uncertainty are written first, the labels and their sidecar last (atomically together), so an
    interrupted run leaves no sidecar and the next run redoes the input.
    """
    import tifffile

    from ..core.atomic import atomic_paths, check_writable
    from ..core.progress import tqdm_drain
    from ..inference import segment
    from ..io.labels import write_labels_file
    from ..io.provenance import edit_record
    from ..quality.report import qc_csv_text
    from ..quality.score import warning_line

    tif_path, qc_path = targets[0], targets[1]
    unc_path = targets[2] if args.uncertainty else None
    for target in targets:
        check_writable(target, overwrite)
    check_run_memory(path, volume, args, loaded, "segment")
    scale = parse_scale(args.scale) or volume.scale_um
    gen = segment(
        volume,
        loaded,
        batch_size=args.batch_size,
        device=args.device,
        scale_um=scale,
        reflectivity=args.reflectivity,
        return_uncertainty=True,
        mirror_check=args.mirror_check,
    )
    result = tqdm_drain(gen, desc=path.name, disable=args.quiet)
    for note in result.notes:
        warn(f"{path.name}: {note}")
    quality = result.quality
    assert quality is not None and result.uncertainty is not None  # requested above
    # The QC table and the uncertainty are renamed into place only after the labels and their sidecar
    # are written (by the file format's owner): a failure anywhere leaves none of this input's outputs.
    extra = [qc_path] + ([unc_path] if unc_path is not None else [])
    with atomic_paths(*extra, overwrite=overwrite) as temporaries:
        Path(temporaries[0]).write_text(qc_csv_text(quality), encoding="utf-8")
        if unc_path is not None:
            tifffile.imwrite(temporaries[1], result.uncertainty, photometric="minisblack", metadata={"axes": "ZYX"})
        write_labels_file(
            tif_path,
            result.labels,
            result.class_names,
            scale_um=scale,
            source=volume_source(path, volume),
            model=loaded,
            edits=edit_record(result.labels),
            force=overwrite,
            after_tiff=run_entry(run, {t.name: Path(tmp) for t, tmp in zip(extra, temporaries, strict=True)}),
            preprocessing=result.provenance(),
            device=result.device,
            batch_size=result.batch_size,
            seconds=round(result.seconds, 3),
            quality=quality.summary(),
            qc_file=qc_path.name,
            uncertainty_file=unc_path.name if unc_path is not None else None,
        )
    warning = warning_line(quality, path.name)
    if warning is not None:
        warn(warning)
    n, h, w = result.labels.shape
    rate = n / result.seconds if result.seconds > 0 else float("inf")
    line = f"{path}: {n} x {h} x {w} -> {tif_path} ({result.seconds:.1f} s, {rate:.2f} B-scans/s, {result.device})"
    return Outcome(line, bscans=n)


def run(args: argparse.Namespace) -> int:
    """Run ``octseg segment``; return 0 when every input of this share was written or up to date, else 1."""
    loaded = load_for_run(args)
    spec = BatchSpec(
        command="segment",
        # the sidecar last: it marks the input as done (see napari_octseg.batch)
        suffixes=(LABELS_SUFFIX, QC_SUFFIX) + ((UNCERTAINTY_SUFFIX,) if args.uncertainty else ()) + (SIDECAR_SUFFIX,),
        done_verb="segmented",
        load=read_input,
        process=lambda path, volume, targets, run, overwrite: _segment_one(
            path, volume, targets, run, overwrite, args, loaded
        ),
        model=model_identity(args.model),
        # what changes the labels (batch size and device do not)
        # (the mirror check only when on, so outputs made before the option existed stay up to date)
        options={
            "scale": args.scale,
            "reflectivity": args.reflectivity,
            "uncertainty": bool(args.uncertainty),
            **({"mirror_check": True} if args.mirror_check else {}),
        },
    )
    return run_batch(spec, args, [Path(p) for p in args.inputs])

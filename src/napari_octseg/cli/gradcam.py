"""``octseg gradcam``: per-class Grad-CAM heatmaps of OCT files, for batch work.

For each input, writes ``DIR/<stem>.gradcam.tif`` (an ImageJ hyperstack, n_bscans x classes x depth x width,
axes ``ZCYX``, with µm resolution tags when the scale is known; float32 in [0, 1], or uint16/uint8 with
``--dtype``) and ``DIR/<stem>.gradcam.json`` (class values and names in TIFF order, conv layer, score
definition or region, per-class table, model, input, scale in µm). Both are written atomically. ``--table
CSV`` also writes the per-class table of every input. The TIFF's sample type and tags come from
:func:`napari_octseg.explain.export.heatmap_tiff`. Re-running skips inputs whose outputs are up to date (same
model file, layer, classes, target, dtype, input) and redoes stale or partial ones; files octseg did not make
are kept unless ``--force``. ``--shard K/N`` / ``torchrun`` and the manifest ``DIR/octseg-manifest.jsonl``
work as for ``octseg segment``.

An input that cannot be processed is reported on one line and skipped (nothing written for it); the others are
still processed and the command exits 1 at the end. Problems that concern every input (model file, device,
classes, layer) stop before anything is written."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import InputError, OctsegError
from ..explain.export import HEATMAP_DTYPES, write_table
from ..explain.layers import DEFAULT_LAYER, REGION_NOTE, describe_layer
from ._batch import BatchSpec, Outcome, run_batch
from ._common import (
    add_input_options,
    add_run_options,
    check_run_memory,
    load_for_run,
    model_identity,
    read_input,
    run_entry,
    volume_source,
    with_scale_and_reflectivity,
)

if TYPE_CHECKING:
    from ..core.volume import OctVolume
    from ..explain import GradCamResult
    from ..models.checkpoint import LoadedModel

HEATMAP_SUFFIX = ".gradcam.tif"
SIDECAR_SUFFIX = ".gradcam.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``gradcam`` subcommand to the ``octseg`` parser."""

    p = subparsers.add_parser(
        "gradcam",
        help="per-class Grad-CAM heatmaps of OCT files",
        description=(
            "Explain the segmentation of OCT files with one Grad-CAM heatmap per class: which pixels, inside "
            "and outside the pixels scored, raised each class's score. Writes DIR/<stem>.gradcam.tif (ImageJ "
            "hyperstack, B-scans x classes x depth x width, µm tags) and DIR/<stem>.gradcam.json with the "
            "per-class table; re-running skips up-to-date outputs and redoes stale or partial ones; other "
            "existing files are kept unless --force. At the paper's layers 'decoder' and "
            "'final' only the 1x1 classifier follows, so the map is a rescaled class-score map (the same for "
            "every question); the default layer is a coarser decoder level whose maps carry context, chosen by "
            "benchmarks/bench_gradcam.py (deletion curves, region questions, randomisation, cost; README)."
        ),
    )
    add_input_options(p)
    p.add_argument(
        "--layer",
        default=DEFAULT_LAYER,
        metavar="NAME",
        help=(
            f"conv layer: {DEFAULT_LAYER} (default), decoder.<i> (decoder level i, 1/2**i resolution), "
            "bottleneck, or the paper's decoder (last 3x3 decoder conv) and final (1x1 classifier), where "
            "Grad-CAM is a rescaled class-score map"
        ),
    )
    p.add_argument(
        "--region",
        default=None,
        metavar="B,Y0,X0,Y1,X1",
        help=(
            "explain each class's score over this rectangle of B-scan B (rows Y0..Y1, columns X0..X1 in "
            "pixels, end excluded) instead of --target; only that B-scan is computed. At the context layers "
            f"{REGION_NOTE}"
        ),
    )
    p.add_argument("--table", type=Path, default=None, metavar="CSV", help="also write the per-class table as CSV")
    p.add_argument(
        "--classes",
        default=None,
        metavar="LIST",
        help="comma-separated class values or names, e.g. 1,2,3 or NFL,INL (default: every class)",
    )
    p.add_argument(
        "--target",
        default="predicted",
        choices=("predicted", "image"),
        help="pixels whose mean logit is a class's score: those predicted as the class (default), or all",
    )
    p.add_argument(
        "--dtype",
        default="float32",
        choices=HEATMAP_DTYPES,
        help="heatmap TIFF sample type: float32 in [0, 1] (default), uint16 0-65535 or uint8 0-255",
    )
    add_run_options(p, batch_size=1)
    p.set_defaults(func=run)


def parse_classes(text: str | None) -> list[str] | None:
    """``"1,2,NFL"`` -> ``["1", "2", "NFL"]`` (resolved against the model's class names later)."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise InputError(f"--classes {text!r}: empty item; give e.g. 1,2,3 or NFL,INL")
    return items


def heatmap_extra(result: GradCamResult, region: str | None = None) -> dict:
    """The Grad-CAM entries of a heatmap sidecar (beside the common ones :mod:`napari_octseg.io.heatmaps` writes)."""
    stats = {
        name: {k: float(f"{v:.7g}") for k, v in result.stats[c].items()}
        for c, name in zip(result.classes, result.class_names, strict=True)
    }
    return {
        "layer": result.layer,
        "target": result.target,
        "reduction": result.reduction,
        "region": region,
        "bscans_explained": list(result.bscans),
        # as in the labels sidecar: B-scans the network saw only around the retina (maps zero outside)
        "retina_window": {"bscans": result.window_bscans, "rerun_full_height": result.window_reruns},
        "layer_note": describe_layer(result.layer),
        "normalisation": "per class, by its maximum over the volume",
        "stats": stats,
        "stats_note": (
            "max/mean: raw Grad-CAM over the B-scans explained; mean_normalized: mean of the stored [0, 1] map; "
            "weight_sum/weight_max: sum and largest of the Grad-CAM channel (feature-importance) weights"
        ),
        "device": result.device,
        "seconds": round(result.seconds, 3),
    }


def _explain_one(
    path: Path,
    volume: OctVolume,
    targets: tuple[Path, ...],
    run: dict,
    overwrite: bool,
    args: argparse.Namespace,
    loaded: LoadedModel,
    classes: tuple[int, ...],
    table: list[dict],
) -> Outcome:
    """Grad-CAM of one (already read) input, outputs written; return the summary line."""
    from ..core.progress import tqdm_drain
    from ..explain import gradcam, parse_region
    from ..io.heatmaps import write_heatmaps_file

    tif_path, json_path = targets
    volume = with_scale_and_reflectivity(volume, args)
    check_run_memory(path, volume, args, loaded, "gradcam")
    try:
        region = parse_region(args.region, volume.shape) if args.region is not None else None
        gen = gradcam(
            volume,
            loaded,
            classes,
            args.layer,
            target=args.target,
            region=region,
            batch_size=args.batch_size,
            device=args.device,
        )
        result = tqdm_drain(gen, desc=f"Grad-CAM {path.name}", disable=args.quiet)
    except OctsegError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    write_heatmaps_file(
        tif_path,
        result.heatmaps,
        list(result.class_names),
        classes=list(result.classes),
        dtype=args.dtype,
        scale_um=volume.scale_um,
        source=volume_source(path, volume),
        model=loaded,
        force=overwrite,
        after_tiff=run_entry(run),
        **heatmap_extra(result, args.region),
    )
    table.extend({"input": str(path), **row} for row in result.stats_rows())
    c, n, h, w = result.heatmaps.shape
    line = f"{path}: {c} classes x {n} x {h} x {w} -> {tif_path} ({result.seconds:.1f} s, {result.device})"
    return Outcome(line, bscans=n)


def run(args: argparse.Namespace) -> int:
    """Run ``octseg gradcam``; return 0 when every input of this share was written or up to date, else 1."""
    from ..explain import layer_module, resolve_classes

    if args.table is not None:
        from ..core.atomic import check_writable

        check_writable(args.table, args.force)
    loaded = load_for_run(args)
    classes = resolve_classes(parse_classes(args.classes), loaded.class_names)
    layer_module(loaded.model, args.layer)
    table: list[dict] = []
    spec = BatchSpec(
        command="gradcam",
        suffixes=(HEATMAP_SUFFIX, SIDECAR_SUFFIX),
        done_verb="explained",
        load=read_input,
        process=lambda path, volume, targets, run, overwrite: _explain_one(
            path, volume, targets, run, overwrite, args, loaded, classes, table
        ),
        model=model_identity(args.model),
        options={
            "layer": args.layer,
            "classes": list(classes),
            "target": args.target,
            "dtype": args.dtype,
            "region": args.region,
            "scale": args.scale,
            "reflectivity": args.reflectivity,
        },
    )
    code = run_batch(spec, args, [Path(p) for p in args.inputs])
    if args.table is not None and table:
        write_table(args.table, table)
        print(f"per-class table of {len({r['input'] for r in table})} input(s) -> {args.table}")
    return code

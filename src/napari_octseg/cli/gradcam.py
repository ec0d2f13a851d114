"""``octseg gradcam``: per-class Grad-CAM heatmaps of OCT files, for batch work.

For each input, writes ``DIR/<stem>.gradcam.tif`` (ImageJ hyperstack, axes ``ZCYX`` = B-scan, class,
depth, A-scan, µm scale in its tags; float32 in [0, 1], or uint16/uint8 with ``--dtype``) and
``DIR/<stem>.gradcam.json`` (the labels file's schema, :mod:`napari_octseg.io.heatmaps`: class values and
names in channel order, source scan, model name + hash, scale in µm; plus conv layer, score definition and
per-class max/mean heatmap intensity). Both are written atomically.
Re-running skips inputs whose outputs are up to date (same model file, layer, classes, target, dtype,
input) and redoes stale or partial ones; files octseg did not make are kept unless ``--force``.
``--shard K/N`` / ``torchrun`` and the manifest ``DIR/octseg-manifest.jsonl`` work as for ``octseg segment``.

An input that cannot be processed is reported on one line and skipped (nothing written for it); the
others are still processed and the command exits 1 at the end. Problems that concern every input
(model file, device, classes, layer) stop before anything is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import InputError, OctsegError
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
            "Explain the segmentation of OCT files with one Grad-CAM heatmap per class. Writes "
            "DIR/<stem>.gradcam.tif (ImageJ hyperstack B-scan x class x depth x width at µm scale, float32 by "
            "default) and DIR/<stem>.gradcam.json with per-class max/mean heatmap intensity; re-running skips "
            "up-to-date outputs and redoes stale or partial ones; other existing files are kept unless --force."
        ),
    )
    add_input_options(p)
    p.add_argument(
        "--layer",
        default="decoder",
        metavar="NAME",
        help="conv layer: decoder (rectified last decoder conv, default), final (1x1 classifier), "
        "decoder.<i> (coarser)",
    )
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
        choices=("float32", "uint16", "uint8"),
        help="heatmap TIFF samples: float32 in [0, 1] (default), uint16 0-65535 or uint8 0-255 (all open in ImageJ)",
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


def heatmap_extra(result: GradCamResult) -> dict:
    """The Grad-CAM entries of a heatmap sidecar (beside the common ones :mod:`napari_octseg.io.heatmaps` writes)."""
    stats = {
        name: {k: float(f"{v:.7g}") for k, v in result.stats[c].items()}
        for c, name in zip(result.classes, result.class_names, strict=True)
    }
    return {
        "layer": result.layer,
        "target": result.target,
        "reduction": result.reduction,
        "normalisation": "per class, by its maximum over the volume",
        "stats": stats,
        "stats_note": "max/mean: raw Grad-CAM over the volume; mean_normalized: mean of the stored [0, 1] map",
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
) -> Outcome:
    """Grad-CAM of one (already read) input, outputs written; return the summary line."""
    from ..core.progress import tqdm_drain
    from ..explain import gradcam
    from ..io.heatmaps import write_heatmaps_file

    tif_path, json_path = targets
    check_run_memory(path, volume, args, loaded, "gradcam")
    gen = gradcam(
        volume, loaded, classes, args.layer, target=args.target, batch_size=args.batch_size, device=args.device
    )
    try:
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
        **heatmap_extra(result),
    )
    c, n, h, w = result.heatmaps.shape
    line = f"{path}: {c} classes x {n} x {h} x {w} -> {tif_path} ({result.seconds:.1f} s, {result.device})"
    return Outcome(line, bscans=n)


def run(args: argparse.Namespace) -> int:
    """Run ``octseg gradcam``; return 0 when every input of this share was written or up to date, else 1."""
    from ..explain import layer_module, resolve_classes

    loaded = load_for_run(args)
    classes = resolve_classes(parse_classes(args.classes), loaded.class_names)
    layer_module(loaded.model, args.layer)
    spec = BatchSpec(
        command="gradcam",
        suffixes=(HEATMAP_SUFFIX, SIDECAR_SUFFIX),
        done_verb="explained",
        load=read_input,
        process=lambda path, volume, targets, run, overwrite: _explain_one(
            path, volume, targets, run, overwrite, args, loaded, classes
        ),
        model=model_identity(args.model),
        options={"layer": args.layer, "classes": list(classes), "target": args.target, "dtype": args.dtype},
    )
    return run_batch(spec, args, [Path(p) for p in args.inputs])

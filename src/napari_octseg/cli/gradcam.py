"""``octseg gradcam``: per-class Grad-CAM heatmaps of OCT files, for batch work.

For each input, writes ``DIR/<stem>.gradcam.tif`` (classes x n_bscans x depth x width, axes ``CZYX``;
float16 in [0, 1], or uint8 0-255 with ``--dtype uint8``) and ``DIR/<stem>.gradcam.json`` (class values
and names in TIFF order, conv layer, score definition, per-class max/mean heatmap intensity, model,
input, scale in µm). Both are written atomically; existing outputs are kept unless ``--force``.

An input that cannot be processed is reported on one line and skipped (nothing written for it); the
others are still processed and the command exits 1 at the end. Problems that concern every input
(model file, device, classes, layer) stop before anything is written.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__
from ..core.errors import InputError, OctsegError
from ._common import (
    add_input_options,
    add_run_options,
    check_run_memory,
    load_for_run,
    output_paths,
    read_input,
    run_per_input,
    write_tiff_and_json,
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
            "DIR/<stem>.gradcam.tif (classes x n_bscans x depth x width) and DIR/<stem>.gradcam.json with "
            "per-class max/mean heatmap intensity; existing outputs are kept unless --force."
        ),
    )
    add_input_options(p)
    p.add_argument(
        "--layer",
        default="decoder",
        metavar="NAME",
        help="conv layer: decoder (rectified last decoder conv, default), final (1x1 classifier), decoder.<i> (coarser)",
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
    p.add_argument("--dtype", default="float16", choices=("float16", "uint8"), help="heatmap TIFF sample type")
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


def heatmap_sidecar(
    result: GradCamResult, volume: OctVolume, *, model: LoadedModel, input_path: Path, tif_name: str, dtype: str
) -> dict:
    """The JSON description written next to a heatmap TIFF."""
    stats = {
        name: {k: float(f"{v:.7g}") for k, v in result.stats[c].items()}
        for c, name in zip(result.classes, result.class_names, strict=True)
    }
    return {
        "napari_octseg_version": __version__,
        "input": str(input_path.resolve()),
        "heatmaps_file": tif_name,
        "axes": "CZYX",
        "shape": list(result.heatmaps.shape),
        "dtype": dtype,
        "value_range": [0, 1] if dtype == "float16" else [0, 255],
        "classes": list(result.classes),
        "class_names": list(result.class_names),
        "layer": result.layer,
        "target": result.target,
        "reduction": result.reduction,
        "normalisation": "per class, by its maximum over the volume",
        "stats": stats,
        "stats_note": "max/mean: raw Grad-CAM over the volume; mean_normalized: mean of the stored [0, 1] map",
        "model": model.source,
        "scale_um": list(volume.scale_um) if volume.scale_um else None,
        "device": result.device,
        "seconds": round(result.seconds, 3),
    }


def _explain_one(
    path: Path, args: argparse.Namespace, loaded: LoadedModel, classes: tuple[int, ...], out_dir: Path
) -> str:
    """Grad-CAM of one input, outputs written; return the summary line."""
    from ..core.progress import tqdm_drain
    from ..explain import gradcam

    tif_path, json_path = output_paths(path, out_dir, (HEATMAP_SUFFIX, SIDECAR_SUFFIX), args.force)
    volume = read_input(path)
    check_run_memory(path, volume, args, loaded, "gradcam")
    gen = gradcam(
        volume, loaded, classes, args.layer, target=args.target, batch_size=args.batch_size, device=args.device
    )
    try:
        result = tqdm_drain(gen, desc=f"Grad-CAM {path.name}", disable=args.quiet)
    except OctsegError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    heat = result.heatmaps
    if args.dtype == "uint8":
        heat = np.rint(heat.astype(np.float32) * 255.0).astype(np.uint8)
    sidecar = heatmap_sidecar(result, volume, model=loaded, input_path=path, tif_name=tif_path.name, dtype=args.dtype)
    write_tiff_and_json(tif_path, json_path, heat, sidecar, axes="CZYX", force=args.force)
    c, n, h, w = heat.shape
    return f"{path}: {c} classes x {n} x {h} x {w} -> {tif_path} ({result.seconds:.1f} s, {result.device})"


def run(args: argparse.Namespace) -> int:
    """Run ``octseg gradcam``; return 0 when every input was written, else 1."""
    from ..explain import layer_module, resolve_classes

    loaded = load_for_run(args)
    classes = resolve_classes(parse_classes(args.classes), loaded.class_names)
    layer_module(loaded.model, args.layer)
    return run_per_input("gradcam", args, lambda path: _explain_one(path, args, loaded, classes, args.out), "explained")

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
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_path, check_writable
from ..core.errors import InputError, OctsegError

LABELS_SUFFIX = ".labels.tif"
SIDECAR_SUFFIX = ".labels.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``segment`` subcommand to the ``octseg`` parser."""
    from ..models.device import DEVICE_CHOICES

    p = subparsers.add_parser(
        "segment",
        help="segment retinal layers of OCT files into label volumes",
        description=(
            "Segment the retinal layers of OCT files. Writes DIR/<stem>.labels.tif (uint8, n_bscans x depth x width) "
            "and DIR/<stem>.labels.json per input; existing outputs are kept unless --force. Inputs that fail are "
            "reported and skipped; the exit code is then 1."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="OCT files (any format octseg info reads)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--model", default=None, metavar="PATH", help="checkpoint file (default: the bundled model)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="auto = CUDA, then MPS, then CPU")
    p.add_argument("--batch-size", type=int, default=4, metavar="N", help="B-scans per forward pass (default 4)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _stem(path: Path) -> str:
    return path.name if path.is_dir() else path.stem


def _write_outputs(tif_path: Path, json_path: Path, labels: np.ndarray, sidecar: dict, force: bool) -> None:
    """Write the label TIFF and its sidecar atomically; if either fails, neither is written.

    Both temporaries are complete before either is renamed into place, so a failure (full disk,
    Ctrl-C) also leaves outputs that ``--force`` was about to replace intact.
    """
    import tifffile

    check_writable(tif_path, force)
    check_writable(json_path, force)
    with contextlib.ExitStack() as stack:
        tmp_tif = stack.enter_context(atomic_path(tif_path))
        tmp_json = stack.enter_context(atomic_path(json_path))
        tifffile.imwrite(tmp_tif, labels, photometric="minisblack", metadata={"axes": "ZYX"})
        tmp_json.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")


def _segment_one(path: Path, args: argparse.Namespace, loaded, out_dir: Path) -> str:
    """Segment one input and write its outputs; return the summary line."""
    from ..core.progress import tqdm_drain
    from ..inference import labels_sidecar, segment
    from ..io import read

    stem = _stem(path)
    tif_path = out_dir / f"{stem}{LABELS_SUFFIX}"
    json_path = out_dir / f"{stem}{SIDECAR_SUFFIX}"
    check_writable(tif_path, args.force)
    check_writable(json_path, args.force)
    try:
        volume = read(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    gen = segment(volume, loaded, batch_size=args.batch_size, device=args.device)
    result = tqdm_drain(gen, desc=path.name, disable=args.quiet)
    sidecar = labels_sidecar(
        result.labels,
        result.class_names,
        model=loaded,
        scale_um=volume.scale_um,
        input=str(path.resolve()),
        labels_file=tif_path.name,
        laterality=volume.laterality,
        scan_pattern=volume.scan_pattern,
        device=result.device,
        batch_size=result.batch_size,
        seconds=round(result.seconds, 3),
    )
    _write_outputs(tif_path, json_path, result.labels, sidecar, args.force)
    n, h, w = result.labels.shape
    rate = n / result.seconds if result.seconds > 0 else float("inf")
    return f"{path}: {n} x {h} x {w} -> {tif_path} ({result.seconds:.1f} s, {rate:.2f} B-scans/s, {result.device})"


def run(args: argparse.Namespace) -> int:
    """Run ``octseg segment``; return 0 when every input was written, else 1."""
    from ..models.device import select_device
    from ..models.registry import load_model

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1; got {args.batch_size}")
    out_dir: Path = args.out
    if out_dir.exists() and not out_dir.is_dir():
        raise OctsegError(f"--out {out_dir}: exists and is not a folder")
    select_device(args.device)  # an absent device fails here, before the model is read
    loaded = load_model(args.model, device="cpu")

    inputs = [Path(p) for p in args.inputs]
    seen: dict[str, Path] = {}
    failures = 0
    t0 = time.perf_counter()
    for path in inputs:
        stem = _stem(path)
        try:
            if stem in seen:
                raise InputError(f"{path}: same output name {stem!r} as {seen[stem]} (rename one)")
            seen[stem] = path
            out_dir.mkdir(parents=True, exist_ok=True)
            print(_segment_one(path, args, loaded, out_dir))
        except OctsegError as exc:
            failures += 1
            print(f"octseg segment: error: {exc}", file=sys.stderr)
    if len(inputs) > 1:
        done = len(inputs) - failures
        print(f"{done} of {len(inputs)} inputs segmented in {time.perf_counter() - t0:.1f} s")
    return 1 if failures else 0

"""What the per-input model commands (``octseg segment``, ``octseg gradcam``) share.

Their common options, the output names ``DIR/<stem><suffix>``, the checks that stop before anything
is written, the two-file atomic writer and the loop that reports a failing input on one line and goes
on with the others.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..core.atomic import atomic_paths, check_writable
from ..core.errors import InputError, OctsegError

if TYPE_CHECKING:
    from ..core.volume import OctVolume
    from ..models.checkpoint import LoadedModel


def add_input_options(p: argparse.ArgumentParser) -> None:
    """Add ``INPUT...``, ``--out``, ``--model`` and ``--device``."""
    from ..models.device import DEVICE_CHOICES

    p.add_argument("inputs", nargs="+", metavar="INPUT", help="OCT files (any format octseg info reads)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--model", default=None, metavar="PATH", help="checkpoint file (default: the bundled model)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="auto = CUDA, then MPS, then CPU")
    add_scale_options(p)


def add_scale_options(p: argparse.ArgumentParser) -> None:
    """Add ``--scale Z,Y,X`` and ``--reflectivity``: what the network is told about the image."""
    p.add_argument(
        "--scale",
        metavar="Z,Y,X",
        help="pixel spacing in µm (B-scan, depth, A-scan), overriding the file's; B-scans are resampled to "
        "the model's training spacing (unknown scale: the training spacing is assumed, and said)",
    )
    p.add_argument(
        "--reflectivity",
        default="auto",
        choices=("auto", "linear", "display"),
        help="grey values: linear reflectivity (shown as x**0.25), display grey values, or auto (the file "
        "format's word, else detected from the values; default)",
    )


def parse_scale(text: str | None) -> tuple[float, float, float] | None:
    """``--scale Z,Y,X`` in µm -> a validated tuple, or ``None``; a one-line InputError otherwise."""
    from ..grid import parse_scale as parse

    return parse(text, "--scale")


def with_scale_and_reflectivity(volume: OctVolume, args: argparse.Namespace) -> OctVolume:
    """``volume`` with ``--scale`` and ``--reflectivity`` applied (a new OctVolume sharing the data)."""
    import dataclasses

    from ..core.intensity import resolve_reflectivity

    scale = parse_scale(getattr(args, "scale", None)) or volume.scale_um
    kind, reason = resolve_reflectivity(getattr(args, "reflectivity", "auto"), volume.data[:4], volume.reflectivity)
    if kind == "linear" and volume.reflectivity != "linear":
        warn(f"{volume.meta.get('source', 'input')}: grey values read as linear reflectivity ({reason})")
    return dataclasses.replace(volume, scale_um=scale, reflectivity=kind)


def warn(message: str) -> None:
    """One warning line on stderr (assumptions the user should know about)."""
    print(f"octseg: warning: {message}", file=sys.stderr, flush=True)


def add_run_options(p: argparse.ArgumentParser, *, batch_size: int) -> None:
    """Add ``--batch-size`` (default ``batch_size``), ``--force`` and ``--quiet``."""
    p.add_argument(
        "--batch-size",
        type=int,
        default=batch_size,
        metavar="N",
        help=f"B-scans per forward pass (default {batch_size})",
    )
    add_force_quiet(p)


def add_force_quiet(
    p: argparse.ArgumentParser, *, force_help: str = "overwrite existing outputs", quiet_help: str = "no progress bar"
) -> None:
    """Add ``--force`` and ``--quiet``."""
    p.add_argument("--force", action="store_true", help=force_help)
    p.add_argument("--quiet", action="store_true", help=quiet_help)


def output_stem(path: Path) -> str:
    """The name outputs of ``path`` are called after: a folder's name (e.g. a DICOM series), else the stem."""
    return path.name if path.is_dir() else path.stem


def output_paths(path: Path, out_dir: Path, suffixes: Sequence[str], force: bool) -> tuple[Path, ...]:
    """``out_dir/<stem><suffix>`` for each suffix; raise if one exists and not ``force``."""
    stem = output_stem(path)
    targets = tuple(out_dir / f"{stem}{suffix}" for suffix in suffixes)
    for target in targets:
        check_writable(target, force)
    return targets


def load_for_run(args: argparse.Namespace) -> LoadedModel:
    """Check the options that concern every input, then load the model (on the CPU).

    An absent device, a bad ``--batch-size`` or an ``--out`` that is a file fail here, before the
    model is read and before anything is written.
    """
    from ..models.device import select_device
    from ..models.registry import load_model

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1; got {args.batch_size}")
    out_dir: Path = args.out
    if out_dir.exists() and not out_dir.is_dir():
        raise OctsegError(f"--out {out_dir}: exists and is not a folder")
    select_device(args.device)
    return load_model(args.model, device="cpu")


def read_input(path: Path) -> OctVolume:
    """Read one input; an OS error (permission, a folder that is no scan) becomes a one-line InputError."""
    from ..io import read

    try:
        return read(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def write_tiff_and_json(
    tif_path: Path, json_path: Path, data: np.ndarray, sidecar: dict, *, axes: str, force: bool
) -> None:
    """Write ``data`` as a TIFF (``axes`` e.g. ``"ZYX"``) and ``sidecar`` as JSON; both or neither.

    Both temporaries are complete before either is renamed into place, so a failure (full disk,
    Ctrl-C) also leaves outputs that ``--force`` was about to replace intact.
    """
    import tifffile

    check_writable(tif_path, force)
    check_writable(json_path, force)
    with atomic_paths(tif_path, json_path) as (tmp_tif, tmp_json):
        tifffile.imwrite(tmp_tif, data, photometric="minisblack", metadata={"axes": axes})
        tmp_json.write_text(json.dumps(sidecar, indent=2) + "\n", encoding="utf-8")


def run_per_input(command: str, args: argparse.Namespace, process: Callable[[Path], str], done_verb: str) -> int:
    """Call ``process(path)`` for each input and print the line it returns; return the exit code.

    A failing input (an OctsegError, including two inputs that would share an output name) is
    reported on one ``octseg <command>: error:`` line and skipped; the others are still processed.
    With several inputs a summary line ``k of n inputs <done_verb> in t s`` follows. Returns 1 if any
    input failed, else 0.
    """
    inputs = [Path(p) for p in args.inputs]
    out_dir: Path = args.out
    seen: dict[str, Path] = {}
    failures = 0
    t0 = time.perf_counter()
    for path in inputs:
        stem = output_stem(path)
        try:
            if stem in seen:
                raise InputError(f"{path}: same output name {stem!r} as {seen[stem]} (rename one)")
            seen[stem] = path
            out_dir.mkdir(parents=True, exist_ok=True)
            print(process(path))
        except OctsegError as exc:
            failures += 1
            print(f"octseg {command}: error: {exc}", file=sys.stderr)
    if len(inputs) > 1:
        done = len(inputs) - failures
        print(f"{done} of {len(inputs)} inputs {done_verb} in {time.perf_counter() - t0:.1f} s")
    return 1 if failures else 0

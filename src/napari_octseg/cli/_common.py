"""What the per-input model commands (``octseg segment``, ``octseg gradcam``) share.

Their common options, the output names ``DIR/<stem><suffix>``, the checks that stop before anything
is written, the model's identity (name + SHA-256), the source record of their sidecars and the run record
that later runs compare to skip up-to-date outputs. The per-input loop (resume, shards, manifest) is
:mod:`._batch`; the file format is :mod:`napari_octseg.io.labels` / :mod:`napari_octseg.io.heatmaps`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import InputError, OctsegError
from ..io._sidecar import OCT_CONTAINER_SUFFIXES

if TYPE_CHECKING:
    from ..core.volume import OctVolume
    from ..models.checkpoint import LoadedModel


def add_input_options(p: argparse.ArgumentParser) -> None:
    """Add ``INPUT...``, ``--out``, ``--model``, ``--device`` and ``--shard``."""
    from ..models.device import DEVICE_CHOICES
    from ._batch import add_shard_option

    p.add_argument("inputs", nargs="+", metavar="INPUT", help="OCT files (any format octseg info reads)")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created if needed)")
    p.add_argument(
        "--model",
        default=None,
        metavar="PATH|NAME",
        help="checkpoint file, or the name of a model in the model library (default: the bundled model)",
    )
    p.add_argument(
        "--device",
        default="auto",
        choices=DEVICE_CHOICES,
        help="auto = CUDA, then MPS, then CPU; under torchrun each rank takes cuda:LOCAL_RANK",
    )
    add_shard_option(p)
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
    """The name outputs of ``path`` are called after: a folder's name (e.g. a DICOM series), else the stem
    (without ``.oct`` for an OCT stack named ``S01.oct.tif``)."""
    if path.is_dir():
        return path.name
    if path.name.lower().endswith(OCT_CONTAINER_SUFFIXES):
        return path.name[: -len(path.suffix) - len(".oct")]
    return path.stem


def load_for_run(args: argparse.Namespace) -> LoadedModel:
    """Check the options that concern every input, then load the model (on the CPU).

    An absent device, a bad ``--batch-size`` or an ``--out`` that is a file fail here, before the
    model is read and before anything is written. Under ``torchrun`` ``args.device`` becomes this
    rank's own (``cuda:LOCAL_RANK``, or the CPU with its share of the cores).
    """
    from ..batch import launch_device, launch_env
    from ..models.device import select_device
    from ..models.registry import load_model

    args.device = launch_device(args.device, launch_env())

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1; got {args.batch_size}")
    out_dir: Path = args.out
    if out_dir.exists() and not out_dir.is_dir():
        raise OctsegError(f"--out {out_dir}: exists and is not a folder")
    select_device(args.device)
    return load_model(args.model, device="cpu")


def model_identity(spec: str | None) -> dict[str, str]:
    """``{"name", "sha256"}`` of the checkpoint ``--model`` names (a bundled name, else the file's stem)."""
    from ..batch import file_sha256
    from ..models.registry import BUNDLED, DEFAULT_MODEL, resolve_model_path

    path = resolve_model_path(spec)
    name = (spec or DEFAULT_MODEL) if spec is None or str(spec) in BUNDLED else path.stem
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise OctsegError(f"{path}: cannot read the model file ({exc.strerror or exc})") from None
    return {"name": str(name), "sha256": digest}


def read_input(path: Path) -> OctVolume:
    """Read one input; an OS error (permission, a folder that is no scan) becomes a one-line InputError."""
    from ..io import read

    try:
        return read(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None


def check_run_memory(path: Path, volume: OctVolume, args: argparse.Namespace, loaded: LoadedModel, job: str) -> None:
    """Refuse, before the network runs, a volume whose job would need more memory than available."""
    from ..models.device import select_device
    from ..models.memory import check_model_memory

    try:
        check_model_memory(volume.shape, loaded, args.batch_size, select_device(args.device), job)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None


def volume_source(path: Path, volume: OctVolume) -> dict:
    """The ``source`` record of an output's sidecar: the input file and what its reader knows of the scan."""
    from ..io._sidecar import scan_date, source_record

    return source_record(
        path, laterality=volume.laterality, scan_pattern=volume.scan_pattern, scan_date=scan_date(volume)
    )


def run_entry(run: dict | None, written: dict[str, Path] | None = None) -> Callable[[Path, str], dict] | None:
    """What the sidecar's ``"run"`` record gets once the TIFF is written: ``run`` plus the files' identity.

    ``run`` is a :func:`napari_octseg.batch.fingerprint`; the returned callable receives the written
    (temporary) TIFF and its final name and returns the sidecar entries to add. ``written``: other outputs
    of the same input, final name -> the (temporary) file holding it (QC table, uncertainty), recorded too.
    Later runs compare these records to skip up-to-date outputs.
    """
    if run is None:
        return None
    from ..batch import RUN_KEY, data_file_record

    others = {name: data_file_record(Path(p)) for name, p in (written or {}).items()}

    def entry(tmp_tif: Path, final_name: str) -> dict:
        return {RUN_KEY: {**run, "files": {**others, final_name: data_file_record(tmp_tif)}}}

    return entry

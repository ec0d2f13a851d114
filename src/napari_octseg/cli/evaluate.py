"""``octseg evaluate``: per-class accuracy, Dice and IoU of a label volume against ground truth.

Pure metrics, no model: compare a segmentation (e.g. ``octseg segment`` output) with manual labels.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import numpy as np

from ..core.atomic import atomic_write_text, check_writable, refuse_output_is_input
from ..core.classes import CLASS_NAMES, N_CLASSES
from ..core.errors import InputError, LabelError
from ..learning.metrics import confusion_matrix, format_table, score_rows, scores


def read_label_file(path: Path, what: str) -> np.ndarray:
    """Labels (uint8, classes 0..9) from ``.tif``/``.tiff``, ``.npy`` or ``.npz`` (key ``labels``).

    Goes through the readers' guards (header sizes against the file and the available memory,
    decompression bombs, never unpickles).
    """
    from ..io import read_labels
    from ..io.duke import load_npz_arrays

    if not path.is_file():
        raise InputError(f"{path}: no such {what} file")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff", ".npy"):
        dtype = _stored_dtype(path)
        if dtype is not None and dtype.kind not in "uib":
            raise LabelError(f"{path}: {what} has dtype {dtype}; integer class labels are needed")
        return read_labels(path)
    if suffix != ".npz":
        raise InputError(f"{path}: unsupported {what} format {suffix!r} (use .tif, .npy or .npz)")
    arr = load_npz_arrays(path, ("labels",), error=LabelError)["labels"]
    if not np.issubdtype(arr.dtype, np.integer):
        raise LabelError(f"{path}: {what} has dtype {arr.dtype}; integer class labels are needed")
    if arr.size and (arr.min() < 0 or arr.max() >= N_CLASSES):
        raise LabelError(f"{path}: {what} values must be within 0..{N_CLASSES - 1}; found {arr.min()}..{arr.max()}")
    return arr.astype(np.uint8, copy=False)


def _stored_dtype(path: Path) -> np.dtype | None:
    """The sample type a ``.npy``/TIFF header states (``None`` if unreadable: the reader then says why)."""
    try:
        if path.suffix.lower() == ".npy":
            from numpy.lib import format as npformat

            with open(path, "rb") as fh:
                version = npformat.read_magic(fh)
                header = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
                return np.dtype(header(fh)[2])
        import tifffile

        with tifffile.TiffFile(path) as tif:
            return np.dtype(tif.series[0].dtype) if tif.series else None
    except Exception:  # noqa: BLE001 - foreign bytes: read_labels reports them on one line
        return None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="per-class accuracy/Dice/IoU of a segmentation against ground truth",
        description="Compare predicted labels with ground-truth labels: per-class pixel accuracy, Dice and "
        "IoU; mean over the layers 1-7 and fluid 9; background classes 0 and 8 reported apart.",
    )
    p.add_argument("--pred", type=Path, required=True, help="predicted labels (.tif or .npy)")
    p.add_argument("--truth", type=Path, required=True, help="ground truth (.npz with 'labels', .tif or .npy)")
    p.add_argument("--csv", type=Path, help="write the per-class table to this CSV")
    p.add_argument("--force", action="store_true", help="overwrite an existing CSV")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.csv is not None:
        refuse_output_is_input([args.csv], [args.pred, args.truth])
        check_writable(args.csv, args.force)
    pred = read_label_file(args.pred, "prediction")
    truth = read_label_file(args.truth, "ground truth")
    if pred.shape != truth.shape:
        raise LabelError(f"prediction shape {pred.shape} differs from ground truth shape {truth.shape}")
    result = scores(confusion_matrix(pred, truth, N_CLASSES))
    print(f"{args.pred} vs {args.truth}: {truth.size} pixels")
    print(format_table(result, CLASS_NAMES))
    if args.csv is not None:
        buf = io.StringIO()
        rows = score_rows(result, CLASS_NAMES)
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(args.csv, buf.getvalue(), overwrite=args.force)
        print(f"wrote {args.csv}")
    return 0

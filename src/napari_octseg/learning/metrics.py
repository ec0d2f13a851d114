"""Segmentation metrics: confusion matrix, pixel accuracy, Dice and IoU per class; boundary errors.

The headline figure is ``mean_dice_scored``: the mean Dice over the seven retinal layers and fluid
(classes 1-7 and 9). The background classes above and below the retina (0 and 8) are huge and easy;
they are reported on their own and never enter a layer mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.classes import BACKGROUND_CLASSES, CLASS_NAMES, FLUID_CLASS, LAYER_CLASSES, SCORED_CLASSES
from ..core.errors import LabelError


def confusion_matrix(
    pred: np.ndarray,
    target: np.ndarray,
    n_classes: int,
    ignore_index: int | None = None,
) -> np.ndarray:
    """Count pixels per (true class, predicted class).

    Parameters
    ----------
    pred, target
        Integer label arrays of the same shape (any number of dimensions), values in
        ``0 .. n_classes - 1``. numpy arrays or torch tensors.
    n_classes
        Number of classes C.
    ignore_index
        Target value whose pixels are not counted (e.g. padding); ``None`` counts every pixel.

    Returns
    -------
    int64 array (C, C): ``cm[t, p]`` is the number of pixels of true class t predicted as p.

    Raises
    ------
    LabelError
        If the shapes differ or a value lies outside ``0 .. C - 1``.
    """
    pred = _as_numpy(pred).ravel()
    target = _as_numpy(target).ravel()
    if pred.shape != target.shape:
        raise LabelError(f"prediction has {pred.size} pixels but the ground truth has {target.size}")
    for arr in (pred, target):
        if arr.dtype.kind not in "uib":
            raise LabelError(f"labels must be integers, got {arr.dtype}")
    # Chunks of at most CHUNK pixels, codes in the smallest dtype: memory stays a few times CHUNK
    # bytes however big the volumes (an int64 copy of each would cost 16 bytes per pixel).
    code_dtype = np.uint8 if n_classes * n_classes <= 256 else np.int64
    cm = np.zeros(n_classes * n_classes, dtype=np.int64)
    for start in range(0, pred.size, _CHUNK):
        p = pred[start : start + _CHUNK]
        t = target[start : start + _CHUNK]
        if ignore_index is not None:
            keep = t != ignore_index
            p, t = p[keep], t[keep]
        for name, arr in (("prediction", p), ("ground truth", t)):
            if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
                raise LabelError(
                    f"{name} holds class {int(arr.max() if arr.max() >= n_classes else arr.min())}, "
                    f"outside 0..{n_classes - 1}"
                )
        codes = t.astype(code_dtype) * code_dtype(n_classes) + p.astype(code_dtype)
        cm += np.bincount(codes, minlength=n_classes * n_classes)
    return cm.reshape(n_classes, n_classes)


#: Pixels per chunk of :func:`confusion_matrix`.
_CHUNK = 1 << 22


def boundary_errors(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-boundary mean absolute and signed error, and the signed error of total retinal thickness.

    Parameters
    ----------
    pred, truth
        Boundary surfaces (n_boundaries, ...) in rows, as :func:`napari_octseg.core.boundaries.boundaries`
        returns them (ILM first, BM last); NaN where a boundary is absent (left out of every mean).

    Returns
    -------
    mae, bias
        float (n_boundaries,) arrays in rows; ``bias`` is prediction minus truth (+ = too deep).
    total
        Mean signed error of the ILM-to-BM distance, in rows.

    Multiply by the axial pixel size for µm.
    """
    diff = (pred - truth).reshape(pred.shape[0], -1)
    total = float(np.nanmean((pred[-1] - pred[0]) - (truth[-1] - truth[0])))
    return np.nanmean(np.abs(diff), axis=1), np.nanmean(diff, axis=1), total


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def scores(cm: np.ndarray) -> dict:
    """Per-class and summary scores from a confusion matrix.

    Parameters
    ----------
    cm
        (C, C) counts, rows = true class, columns = predicted class (see :func:`confusion_matrix`).

    Returns
    -------
    dict with
        ``pixel_accuracy`` (float, all pixels), ``accuracy`` (C,) per-class pixel accuracy (recall),
        ``dice`` (C,), ``iou`` (C,), ``support`` (C,) true pixels per class,
        ``mean_dice_scored`` (classes 1-7 and 9), ``mean_dice_layers`` (1-7), ``mean_iou_scored``,
        ``mean_accuracy_scored``, ``background_dice`` (mean over classes 0 and 8, reported apart).
        A class absent from both truth and prediction has NaN scores and is left out of the means.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(support + predicted > 0, 2 * tp / (support + predicted), np.nan)
        union = support + predicted - tp
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(support > 0, tp / support, np.nan)
    total = cm.sum()
    n = cm.shape[0]
    scored = [c for c in SCORED_CLASSES if c < n]
    layers = [c for c in LAYER_CLASSES if c < n]
    background = [c for c in BACKGROUND_CLASSES if c < n]
    return {
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "accuracy": acc,
        "dice": dice,
        "iou": iou,
        "support": support.astype(np.int64),
        "mean_dice_scored": _nanmean(dice[scored]),
        "mean_dice_layers": _nanmean(dice[layers]),
        "mean_iou_scored": _nanmean(iou[scored]),
        "mean_accuracy_scored": _nanmean(acc[scored]),
        "background_dice": _nanmean(dice[background]),
    }


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def score_rows(result: dict, class_names: Sequence[str] = CLASS_NAMES) -> list[dict]:
    """One row per class plus summary rows, ready for a CSV (``csv.DictWriter``) or a table.

    Each row: ``class`` (index or summary name), ``name``, ``group`` ('layer', 'fluid', 'background',
    'summary'), ``accuracy``, ``dice``, ``iou``, ``support``.
    """
    rows = []
    for c in range(len(result["dice"])):
        group = "layer" if c in LAYER_CLASSES else "fluid" if c == FLUID_CLASS else "background"
        rows.append(
            {
                "class": c,
                "name": class_names[c] if c < len(class_names) else str(c),
                "group": group,
                "accuracy": float(result["accuracy"][c]),
                "dice": float(result["dice"][c]),
                "iou": float(result["iou"][c]),
                "support": int(result["support"][c]),
            }
        )
    for key, label in (
        ("mean_dice_layers", "mean layers 1-7"),
        ("mean_dice_scored", "mean layers 1-7 + fluid 9"),
        ("background_dice", "background 0+8 (apart)"),
    ):
        rows.append(
            {
                "class": key,
                "name": label,
                "group": "summary",
                "accuracy": float("nan"),
                "dice": result[key],
                "iou": float("nan"),
                "support": 0,
            }
        )
    rows[-3]["iou"] = _nanmean(result["iou"][[c for c in LAYER_CLASSES if c < len(result["iou"])]])
    rows[-2]["iou"] = result["mean_iou_scored"]
    rows[-2]["accuracy"] = result["mean_accuracy_scored"]
    rows.append(
        {
            "class": "pixel_accuracy",
            "name": "pixel accuracy (all pixels)",
            "group": "summary",
            "accuracy": result["pixel_accuracy"],
            "dice": float("nan"),
            "iou": float("nan"),
            "support": int(np.sum(result["support"])),
        }
    )
    return rows


def format_table(result: dict, class_names: Sequence[str] = CLASS_NAMES) -> str:
    """A plain-text per-class table: layers and fluid, their means, then background apart."""

    def f(v: float) -> str:
        return "   -  " if v != v else f"{v:6.3f}"

    lines = [f"{'class':>5}  {'name':<26} {'acc':>6} {'dice':>6} {'iou':>6} {'pixels':>10}"]
    rows = score_rows(result, class_names)
    per_class = [r for r in rows if r["group"] != "summary"]
    order = [r for r in per_class if r["group"] != "background"] + [r for r in per_class if r["group"] == "background"]
    for i, r in enumerate(order):
        if i and r["group"] == "background" and order[i - 1]["group"] != "background":
            lines.append("  -- background (not in the means) --")
        lines.append(
            f"{r['class']:>5}  {r['name']:<26} {f(r['accuracy'])} {f(r['dice'])} {f(r['iou'])} {r['support']:>10}"
        )
    lines.append("")
    for r in rows:
        if r["group"] == "summary":
            lines.append(f"{'':>5}  {r['name']:<26} {f(r['accuracy'])} {f(r['dice'])} {f(r['iou'])}")
    return "\n".join(lines)

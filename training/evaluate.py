"""Score a checkpoint on Duke DME validation subjects, write per-class CSV, plot training curves.

Examples
--------
::

    python training/evaluate.py --model src/napari_octseg/models/weights/octseg_default.pt \\
        --subjects 7 8 --csv training/results/default_val_per_class.csv \\
        --log runs/default/log.csv --plot training/results/default_curves.png --speed

Whole B-scans are segmented (no crops) through ``napari_octseg.inference.segment``, i.e. exactly as
``octseg segment`` and the napari widget do. Scores are pooled over all pixels of all validation
B-scans; the background classes (0 above the retina, 8 below) are reported apart and never enter the
layer mean; the headline is the mean Dice over classes 1-7 and 9.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch

from napari_octseg.core.atomic import atomic_path, atomic_write_text
from napari_octseg.core.progress import run_generator
from napari_octseg.inference import segment
from napari_octseg.learning import confusion_matrix, format_table, score_rows, scores
from napari_octseg.learning.datasets import duke_files
from napari_octseg.models import load_model

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "duke_dme"


def evaluate(model_spec: str | None, data: Path, subjects: list[int], device: str = "cpu") -> dict:
    """Segment the subjects' B-scans; return pooled and per-subject scores."""
    loaded = load_model(model_spec, device=device)
    n = loaded.n_classes
    pooled = np.zeros((n, n), np.int64)
    per_subject = {}
    for path in duke_files(data, subjects):
        with np.load(path, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
        result = run_generator(segment(images, loaded, batch_size=2, device=device))
        cm = confusion_matrix(result.labels, labels, n)
        per_subject[path.stem] = scores(cm)
        pooled += cm
    return {
        "pooled": scores(pooled),
        "per_subject": per_subject,
        "class_names": loaded.class_names,
        "training": loaded.training,
    }


def write_csv(path: Path, ev: dict) -> None:
    buf = io.StringIO()
    fields = ["scope", "class", "name", "group", "accuracy", "dice", "iou", "support"]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for scope, res in [("pooled", ev["pooled"]), *ev["per_subject"].items()]:
        for row in score_rows(res, ev["class_names"]):
            w.writerow({"scope": scope, **{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()}})
    atomic_write_text(path, buf.getvalue())


def plot_curves(log_csv: Path, out_png: Path) -> None:
    """Training/validation loss, validation Dice (mean 1-7+9 and per class) and lr per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    ep = [int(r["epoch"]) for r in rows]
    col = lambda k: [float(r[k]) for r in rows]  # noqa: E731
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    ax[0].plot(ep, col("train_loss"), label="train (augmented crops)")
    ax[0].plot(ep, col("val_loss"), label="validation (whole B-scans)")
    ax[0].set(xlabel="epoch", ylabel="CE + 0.5 (1 - soft Dice)", title="loss")
    ax[0].legend()
    dice_cols = [k for k in rows[0] if k.startswith("val_dice_")]
    for k in dice_cols:
        c = int(k.split("_")[2])
        if c in (0, 8):
            continue
        ax[1].plot(ep, col(k), lw=0.8, label=k.split("_", 3)[3])
    ax[1].plot(ep, col("val_mean_dice_scored"), "k", lw=2, label="mean 1-7 + fluid")
    ax[1].set(xlabel="epoch", ylabel="Dice", title="validation Dice (Subject_07-08)", ylim=(0, 1))
    ax[1].legend(fontsize=7, ncol=2)
    ax[2].semilogy(ep, col("lr"))
    ax[2].set(xlabel="epoch", ylabel="learning rate", title="ReduceLROnPlateau")
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def measure_speed(model_spec: str | None, threads: int = 2, n: int = 8) -> float:
    """B-scans/s of the model on 496 x 512 B-scans on CPU (``inference_mode``, ``threads`` threads)."""
    torch.set_num_threads(threads)
    loaded = load_model(model_spec, device="cpu")
    rng = np.random.default_rng(0)
    vol = rng.integers(0, 255, (n, 496, 512)).astype(np.uint8)
    run_generator(segment(vol[:2], loaded, batch_size=1, device="cpu"))  # warm-up
    t0 = time.perf_counter()
    run_generator(segment(vol, loaded, batch_size=1, device="cpu"))
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="checkpoint file (default: the bundled model)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--subjects", type=int, nargs="+", default=[7, 8])
    p.add_argument("--csv", type=Path, help="write the per-class table (pooled and per subject)")
    p.add_argument("--log", type=Path, help="training log.csv to plot")
    p.add_argument("--plot", type=Path, help="PNG of the training curves (needs --log)")
    p.add_argument("--speed", action="store_true", help="also measure B-scans/s at 496 x 512 on 2 CPU threads")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    ev = evaluate(args.model, args.data, args.subjects)
    print(f"model: {args.model or 'bundled default'}; subjects {args.subjects}; whole B-scans, pooled pixels")
    print(format_table(ev["pooled"], ev["class_names"]))
    for name, res in ev["per_subject"].items():
        print(
            f"{name}: mean Dice 1-7+9 {res['mean_dice_scored']:.4f}, layers 1-7 {res['mean_dice_layers']:.4f}, "
            f"fluid {res['dice'][9]:.4f}"
        )
    if args.csv:
        write_csv(args.csv, ev)
        print(f"wrote {args.csv}")
    if args.plot:
        if not args.log:
            p.error("--plot needs --log")
        plot_curves(args.log, args.plot)
        print(f"wrote {args.plot}")
    if args.speed:
        print(
            f"speed: {measure_speed(args.model, args.threads):.2f} B-scans/s (496 x 512, CPU, "
            f"{args.threads} threads, inference_mode)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

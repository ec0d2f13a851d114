"""Grad-CAM: speed against segmentation, and where each class's heatmap mass lies (Duke DME 07-08).

1. Speed: wall time of Grad-CAM for ALL classes of one 496 x 512 B-scan (one forward pass; layers
   other than "decoder" and "final" add one vectorised backward pass) against the time to segment the
   same B-scan, on CPU (target <= 3x).
   The median of ``--repeats`` alternated runs of each; timing does not depend on the weights, so a
   randomly initialised light SegNet is used when no trained model is available.
2. Localisation: on the validation subjects (Subject_07, Subject_08; never trained on by the bundled
   model), for each class the fraction of its heatmap mass (sum over all B-scans of the [0, 1] map)
   lying within ``--radius`` px (Euclidean, within the B-scan) of the pixels PREDICTED as that class,
   and, for comparison, of its ground-truth region. This needs a trained model: the bundled one, or
   ``--model PATH``; without one the table is skipped (a random network's maps mean nothing).

The CPU may be shared with other work: the load average is printed with the timings.

Usage::

    python benchmarks/bench_gradcam.py [--model PATH] [--layers decoder final] [--radius 5]
        [--threads 2] [--repeats 3] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from napari_octseg.core.classes import CLASS_NAMES, SCORED_CLASSES
from napari_octseg.core.errors import CheckpointError
from napari_octseg.core.progress import run_generator
from napari_octseg.core.volume import OctVolume
from napari_octseg.explain import gradcam, mass_near_region
from napari_octseg.inference import segment
from napari_octseg.models import PRESETS, LoadedModel, SegNet, load_model

ROOT = Path(__file__).resolve().parents[1]
DUKE = ROOT.parent / "shared" / "data" / "duke_dme"
VALIDATION = (7, 8)


def _model(spec: str | None) -> tuple[LoadedModel, bool]:
    """(model, trained?): the given/bundled checkpoint, else a random light SegNet for timing only."""
    try:
        return load_model(spec, device="cpu"), True
    except CheckpointError as exc:
        if spec is not None:
            raise
        print(f"note: {exc}; timing with a randomly initialised light SegNet, no localisation table")
        torch.manual_seed(0)
        return LoadedModel(model=SegNet(PRESETS["light"]).eval(), source="<random light SegNet>"), False


def bench_speed(model: LoadedModel, layers: list[str], repeats: int) -> list[dict]:
    """Median seconds per 496 x 512 B-scan: segmentation vs Grad-CAM of all classes per layer."""
    rng = np.random.default_rng(0)
    if (DUKE / "Subject_07.npz").is_file():
        with np.load(DUKE / "Subject_07.npz") as z:
            img = z["images"][5].astype(np.float32)
        bscan = np.pad(img, ((0, 0), (0, max(0, 512 - img.shape[1]))), mode="edge")[:, :512]
    else:
        bscan = rng.random((496, 512)).astype(np.float32)
    volume = OctVolume(data=bscan[None])
    run_generator(segment(volume, model, batch_size=1, device="cpu"))  # warm-up (allocator, kernels)
    run_generator(gradcam(volume, model, device="cpu"))
    times: dict[str, list[float]] = {"segment": [], **{f"gradcam {layer}": [] for layer in layers}}
    for _ in range(repeats):
        t0 = time.perf_counter()
        run_generator(segment(volume, model, batch_size=1, device="cpu"))
        times["segment"].append(time.perf_counter() - t0)
        for layer in layers:
            t0 = time.perf_counter()
            run_generator(gradcam(volume, model, None, layer, device="cpu"))
            times[f"gradcam {layer}"].append(time.perf_counter() - t0)
    seg, seg_min = statistics.median(times["segment"]), min(times["segment"])
    rows = []
    for name, values in times.items():
        med = statistics.median(values)
        rows.append(
            {
                "task": name,
                "classes": "-" if name == "segment" else model.n_classes,
                "median_s": round(med, 3),
                "min_s": round(min(values), 3),
                "ratio_median": round(med / seg, 2),
                "ratio_min": round(min(values) / seg_min, 2),
            }
        )
    return rows


def bench_mass(model: LoadedModel, layer: str, radius: float) -> list[dict]:
    """Per class: fraction of heatmap mass near the predicted / ground-truth region, pooled over 07-08."""
    classes = tuple(range(model.n_classes))
    near_pred = {c: [0.0, 0.0] for c in classes}  # class -> [mass near, total mass]
    near_true = {c: [0.0, 0.0] for c in classes}
    stats_max = {c: [] for c in classes}
    stats_mean = {c: [] for c in classes}
    for subject in VALIDATION:
        with np.load(DUKE / f"Subject_{subject:02d}.npz") as z:
            volume = OctVolume(data=z["images"].astype(np.float32))
            truth = z["labels"].astype(np.uint8)
        result = run_generator(gradcam(volume, model, classes, layer, device="cpu"))
        total = result.heatmaps.astype(np.float64).sum(axis=(1, 2, 3))
        for labels, acc in ((result.labels, near_pred), (truth, near_true)):
            fraction = mass_near_region(result.heatmaps, labels, classes, radius)
            for k, c in enumerate(classes):
                if np.isfinite(fraction[k]):
                    acc[c][0] += fraction[k] * total[k]
                acc[c][1] += total[k]
        for c in classes:
            stats_max[c].append(result.stats[c]["max"])
            stats_mean[c].append(result.stats[c]["mean_normalized"])
    rows = []
    for c in classes:
        rows.append(
            {
                "layer": layer,
                "class": c,
                "name": model.class_names[c] if c < len(model.class_names) else CLASS_NAMES[c],
                "scored": c in SCORED_CLASSES,
                f"mass_within_{radius:g}px_of_predicted": round(near_pred[c][0] / near_pred[c][1], 3)
                if near_pred[c][1]
                else "",
                f"mass_within_{radius:g}px_of_truth": round(near_true[c][0] / near_true[c][1], 3)
                if near_true[c][1]
                else "",
                "raw_max": float(f"{max(stats_max[c]):.4g}"),
                "mean_normalized": round(float(np.mean(stats_mean[c])), 4),
            }
        )
    return rows


def _print_table(rows: list[dict]) -> None:
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths)))
    for r in rows:
        print("  ".join(str(r[k]).ljust(w) for k, w in zip(keys, widths)))


def _write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    parser.add_argument("--layers", nargs="+", default=["decoder", "final"])
    parser.add_argument("--radius", type=float, default=5.0, help="px around the class region")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--skip-speed", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, trained = _model(args.model)
    print(f"model: {model.source}; torch threads {args.threads}; load average {os.getloadavg()[0]:.1f}")
    if not args.skip_speed:
        rows = bench_speed(model, args.layers, args.repeats)
        print(f"\nOne 496 x 512 B-scan on CPU (median of {args.repeats}; load average now {os.getloadavg()[0]:.1f}):")
        _print_table(rows)
        _write_csv(rows, args.out / "gradcam_speed.csv")
    if not trained:
        print("\nlocalisation table skipped: no trained model (bundled model missing; pass --model PATH)")
        return
    if not DUKE.is_dir():
        print(f"\nlocalisation table skipped: {DUKE} is absent")
        return
    for layer in args.layers:
        rows = bench_mass(model, layer, args.radius)
        print(
            f"\nHeatmap mass within {args.radius:g} px of the class region, Duke Subject_07-08 "
            f"(22 B-scans), layer {layer!r}:"
        )
        _print_table(rows)
        _write_csv(rows, args.out / f"gradcam_mass_{layer}.csv")


def _print_peak_rss() -> None:
    """The process's peak resident memory (Linux ``ru_maxrss`` is in KiB; macOS reports bytes)."""
    import resource
    import sys as _sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_bytes = peak if _sys.platform == "darwin" else peak * 1024
    print(f"peak RSS of this run (whole process): {peak_bytes / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
    _print_peak_rss()

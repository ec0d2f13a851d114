"""Grad-CAM: is it faithful, which layer explains best, and what does it cost (Duke DME 07-08).

1. Deletion curves (faithfulness), per candidate layer and class (layers 1-7 and fluid): on
   ``--bscans`` B-scans of each validation subject (Subject_07, Subject_08: they chose the bundled
   model's checkpoint, the network never trained on them), remove the pixels a map ranks highest
   first (replaced by a Gaussian-blurred copy of the B-scan, sigma 8 px) at ``--fractions`` of the
   B-scan, and track the explained score (the class's mean logit over the pixels predicted as it in the
   intact B-scan) relative to the intact score. Area under that curve (lower: the map found what the
   score depends on), against random order and against the class-score map itself (what Grad-CAM is at
   the paper's ``decoder`` and ``final`` layers). The B-scans with the most ground-truth fluid are used,
   so that fluid is present.
2. Model randomisation (Adebayo et al. 2018): Spearman rank correlation between each class's map of
   the trained network and of the same network with every weight re-initialised (median over classes
   and B-scans; whole-B-scan scores, so that the random network's maps are not empty); near 0 = the
   maps depend on the learned weights.
3. Region vs whole B-scan: for each class on ``--region-bscans`` B-scans per subject, two rectangles a
   user might draw over it (96 columns, the class's rows there +- 8 px); the region's map (Seg-Grad-CAM,
   the class's mean logit over the box) against the maps for the class's own pixels (the default
   question) and for every pixel (the dock's "whole B-scan"): Spearman rank correlation, and the share
   of each map's mass inside the box.
4. Cost: wall time of Grad-CAM for ALL classes of one 496 x 512 B-scan per layer against the time to
   segment it (median of ``--repeats`` alternated runs), and the same for Subject_07's 11 B-scans as one
   volume (``--volume-repeats``; both run the network on the retina window after the first B-scan; skip
   with ``--skip-volume``). The CPU may be shared: the load average is printed and recorded.

Results: ``benchmarks/results/gradcam_deletion.csv`` (per layer and class), ``gradcam_layers.csv`` (per
layer: the summary used to choose the default), ``gradcam_deletion_rows_<subjects>.csv`` (every curve's
area), ``gradcam_region.csv`` (per layer) and ``gradcam_region_rows_<subjects>.csv`` (every question),
``gradcam_randomisation.csv``, ``gradcam_speed.csv``. On a shared CPU the parts can run as separate
processes (``--subjects 7 --skip-speed --skip-randomisation``, ...) and ``--summarise`` merges the rows.

Usage::

    python benchmarks/bench_gradcam.py [--model PATH] [--layers decoder.1 decoder.2 decoder.3 bottleneck]
        [--bscans 2] [--region-bscans 2] [--fractions 0.01 0.03 0.1 0.3] [--threads 1] [--repeats 3]
        [--skip-deletion] [--skip-region] [--skip-randomisation] [--skip-speed] [--out benchmarks/results]

The figures in the README: ``--bscans 2`` (deletion), then ``--region-bscans 1 --skip-deletion`` (region
and randomisation), then ``--repeats 5`` with the other parts skipped (cost).
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
from _gradcam_region import bench_region, summarise_region
from torch import nn

from napari_octseg.core.classes import CLASS_NAMES, SCORED_CLASSES
from napari_octseg.core.progress import run_generator
from napari_octseg.core.volume import OctVolume
from napari_octseg.explain import gradcam
from napari_octseg.explain.faithfulness import (
    DELETION_FRACTIONS,
    blurred,
    curve_area,
    deletion_curves,
    deletion_order,
    rank_correlation,
)
from napari_octseg.inference import SegmentationResult, segment
from napari_octseg.models import LoadedModel, load_model
from napari_octseg.models.normalization import normalize_bscans
from napari_octseg.models.runtime import inference_network

ROOT = Path(__file__).resolve().parents[1]
DUKE = ROOT.parent / "shared" / "data" / "duke_dme"
VALIDATION = (7, 8)
CANDIDATES = ["decoder.1", "decoder.2", "decoder.3", "bottleneck"]


def _bscans(subject: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` B-scans of a subject with the most ground-truth fluid: (images, indices)."""
    with np.load(DUKE / f"Subject_{subject:02d}.npz") as z:
        images, truth = z["images"].astype(np.float32), z["labels"]
    order = np.argsort(-(truth == 9).sum(axis=(1, 2)), kind="stable")[:k]
    return images[np.sort(order)], np.sort(order)


def bench_deletion(
    model: LoadedModel, layers: list[str], k: int, fractions: tuple[float, ...], subjects: tuple[int, ...]
) -> list[dict]:
    """One row per (layer or baseline, class, B-scan): the deletion curve's area."""
    dev = torch.device("cpu")
    fast = inference_network(model.model, dev)
    classes = list(SCORED_CLASSES)
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    for subject in subjects:
        images, indices = _bscans(subject, k)
        for img, b in zip(images, indices, strict=True):
            t0 = time.perf_counter()
            x = normalize_bscans(OctVolume(data=img[None]).display_data(), model.normalization)[0]
            fill = blurred(x)
            with torch.inference_mode():
                logits = fast(torch.from_numpy(x[None, None]))[0].float().numpy()
            pred = logits.argmax(0)
            present = [c for c in classes if (pred == c).any()]
            weights = np.stack([(pred == c) / max(int((pred == c).sum()), 1) for c in present]).astype(np.float32)
            orders: dict[str, np.ndarray] = {
                "random": deletion_order(rng.random(x.shape), rng)[None],
                "score map": np.stack([deletion_order(logits[c], rng) for c in present]),
            }
            for layer in layers:
                heat = run_generator(gradcam(img[None], model, present, layer, device="cpu")).heatmaps[:, 0]
                orders[layer] = np.stack([deletion_order(h, rng) for h in heat.astype(np.float32)])
            for name, order in orders.items():
                curves = deletion_curves(fast, x, present, weights, order, fill, dev, fractions)
                for c, area in zip(present, curve_area(curves, fractions), strict=True):
                    rows.append({"order": name, "class": c, "subject": subject, "bscan": int(b), "area": area})
            print(f"  Subject_{subject:02d} B-scan {b}: {time.perf_counter() - t0:.0f} s", flush=True)
    return rows


def summarise_deletion(rows: list[dict], class_names: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """Per (order, class): mean area, and how often it beats random / the score map on the same B-scan."""
    by = {(r["order"], r["class"], r["subject"], r["bscan"]): r["area"] for r in rows}
    orders = list(dict.fromkeys(r["order"] for r in rows))
    per_class, per_layer = [], []
    for name in orders:
        wins_r = wins_s = n_all = 0
        means = []
        for c in SCORED_CLASSES:
            keys = [k for k in by if k[0] == name and k[1] == c and np.isfinite(by[k])]
            if not keys:
                continue
            area = np.array([by[k] for k in keys])
            rand = np.array([by[("random", *k[1:])] for k in keys])
            score = np.array([by[("score map", *k[1:])] for k in keys])
            means.append(area.mean())
            wins_r += int((area < rand).sum())
            wins_s += int((area < score).sum())
            n_all += len(keys)
            per_class.append(
                {
                    "order": name,
                    "class": c,
                    "name": class_names[c],
                    "n_bscans": len(keys),
                    "area": round(float(area.mean()), 4),
                    "area_random": round(float(rand.mean()), 4),
                    "area_score_map": round(float(score.mean()), 4),
                    "beats_random": bool(area.mean() < rand.mean()),
                    "beats_score_map": bool(area.mean() < score.mean()),
                }
            )
        per_layer.append(
            {
                "order": name,
                "mean_area": round(float(np.mean(means)), 4),
                "classes_beating_random": sum(r["beats_random"] for r in per_class if r["order"] == name),
                "classes_beating_score_map": sum(r["beats_score_map"] for r in per_class if r["order"] == name),
                "bscan_wins_vs_random": f"{wins_r}/{n_all}",
                "bscan_wins_vs_score_map": f"{wins_s}/{n_all}",
            }
        )
    return per_class, per_layer


def _randomised(net: nn.Module) -> nn.Module:
    """A copy with every weight re-initialised (seeded), BatchNorm statistics reset."""
    import copy

    fresh = copy.deepcopy(net)
    torch.manual_seed(0)
    for m in fresh.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
    return fresh.eval()


def bench_randomisation(model: LoadedModel, layers: list[str], subjects: tuple[int, ...]) -> list[dict]:
    """Per layer: median Spearman correlation of trained vs randomised maps (classes 1-7, 9)."""
    rand = LoadedModel(model=_randomised(model.model), class_names=model.class_names, normalization=model.normalization)
    rows = []
    for layer in layers:
        rhos = []
        for subject in subjects:
            img = _bscans(subject, 1)[0]
            # whole-B-scan scores: a random network predicts one or two classes, so with the default
            # target most of its maps would be zero and the comparison empty
            a = run_generator(gradcam(img, model, list(SCORED_CLASSES), layer, target="image", device="cpu"))
            b = run_generator(gradcam(img, rand, list(SCORED_CLASSES), layer, target="image", device="cpu"))
            a, b = a.heatmaps[:, 0], b.heatmaps[:, 0]
            rhos += [rank_correlation(a[k].astype(np.float32), b[k].astype(np.float32)) for k in range(len(a))]
        finite = [r for r in rhos if np.isfinite(r)]
        rows.append(
            {
                "layer": layer,
                "median_spearman_trained_vs_random": round(float(np.median(finite)), 3) if finite else "",
                "max_abs_spearman": round(float(np.max(np.abs(finite))), 3) if finite else "",
                "maps_compared": len(finite),
                "maps": len(rhos),
            }
        )
    return rows


def _duke_bscans(index: slice) -> np.ndarray:
    """Subject_07's B-scans ``index`` as float32 (n, 496, 512): padded (edge) or cropped to 512 columns."""
    with np.load(DUKE / "Subject_07.npz") as z:
        images = z["images"][index].astype(np.float32)
    return np.pad(images, ((0, 0), (0, 0), (0, max(0, 512 - images.shape[2]))), mode="edge")[..., :512]


def bench_speed(model: LoadedModel, layers: list[str], repeats: int, volume: bool = False) -> list[dict]:
    """Median seconds: segmentation vs Grad-CAM of all classes per layer, each with its defaults.

    ``volume=False``: one 496 x 512 B-scan (Subject_07 #5; a single B-scan is always run at full height).
    ``volume=True``: Subject_07's 11 B-scans as one volume, where segmentation (batch size 4) and Grad-CAM
    (batch size 1) run the network on the retina window after the first B-scan; ``windowed`` is Grad-CAM's
    (or segmentation's) count of windowed / refused B-scans.
    """
    images = _duke_bscans(slice(None)) if volume else _duke_bscans(slice(5, 6))
    vol = OctVolume(data=images)

    def seg_run() -> SegmentationResult:
        return run_generator(segment(vol, model, batch_size=4 if volume else 1, device="cpu"))

    seg_run()  # warm-up (allocator, kernels)
    run_generator(gradcam(vol, model, device="cpu"))
    times: dict[str, list[float]] = {"segment": [], **{f"gradcam {layer}": [] for layer in layers}}
    windowed: dict[str, str] = {}
    for _ in range(repeats):
        t0 = time.perf_counter()
        seg = seg_run()
        times["segment"].append(time.perf_counter() - t0)
        windowed["segment"] = f"{seg.window_bscans}/{seg.window_reruns}"
        for layer in layers:
            t0 = time.perf_counter()
            res = run_generator(gradcam(vol, model, None, layer, device="cpu"))
            times[f"gradcam {layer}"].append(time.perf_counter() - t0)
            windowed[f"gradcam {layer}"] = f"{res.window_bscans}/{res.window_reruns}"
    seg_median, seg_min = statistics.median(times["segment"]), min(times["segment"])
    shape = "x".join(str(s) for s in images.shape)
    return [
        {
            "task": name,
            "classes": "-" if name == "segment" else model.n_classes,
            "median_s": round(statistics.median(v), 3),
            "min_s": round(min(v), 3),
            "ratio_median": round(statistics.median(v) / seg_median, 2),
            "ratio_min": round(min(v) / seg_min, 2),
            "input": f"volume {shape}" if volume else f"B-scan {shape}",
            "windowed_refused": windowed[name],
            "repeats": repeats,
            "load_average": round(os.getloadavg()[0], 1),
        }
        for name, v in times.items()
    ]


def _print_table(rows: list[dict]) -> None:
    keys = list(rows[0])
    widths = [max(len(k), *(len(str(r[k])) for r in rows)) for k in keys]
    print("  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r[k]).ljust(w) for k, w in zip(keys, widths, strict=True)))


def _write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    parser.add_argument("--layers", nargs="+", default=CANDIDATES, help="candidate layers")
    parser.add_argument("--bscans", type=int, default=2, help="B-scans per validation subject")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(DELETION_FRACTIONS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-volume", action="store_true", help="cost on one B-scan only, not on a volume")
    parser.add_argument("--volume-repeats", type=int, default=2, help="repeats of the volume cost")
    parser.add_argument("--skip-deletion", action="store_true")
    parser.add_argument("--skip-randomisation", action="store_true")
    parser.add_argument("--skip-region", action="store_true")
    parser.add_argument("--region-bscans", type=int, default=2, help="B-scans per subject for region vs whole")
    parser.add_argument("--subjects", type=int, nargs="+", default=list(VALIDATION), help="Duke subjects to use")
    parser.add_argument(
        "--summarise",
        action="store_true",
        help="only merge the per-subject deletion rows already in --out (runs split over processes) into the tables",
    )
    args = parser.parse_args()
    subjects = tuple(args.subjects)
    tag = "_".join(f"{s:02d}" for s in subjects)
    if args.summarise:
        rows = []
        for path in sorted(args.out.glob("gradcam_deletion_rows_*.csv")):
            with path.open() as f:
                rows += [{**r, "class": int(r["class"]), "area": float(r["area"])} for r in csv.DictReader(f)]
        per_class, per_layer = summarise_deletion(rows, CLASS_NAMES)
        _print_table(per_class)
        print()
        _print_table(per_layer)
        _write_csv(per_class, args.out / "gradcam_deletion.csv")
        _write_csv(per_layer, args.out / "gradcam_layers.csv")
        return
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    print(f"model: {model.source}; torch threads {args.threads}; load average {os.getloadavg()[0]:.1f}", flush=True)
    if not args.skip_deletion:
        print(f"\nDeletion curves, {args.bscans} B-scan(s) of each of subjects {subjects}, fractions {args.fractions}:")
        rows = bench_deletion(model, args.layers, args.bscans, tuple(args.fractions), subjects)
        _write_csv(rows, args.out / f"gradcam_deletion_rows_{tag}.csv")
        per_class, per_layer = summarise_deletion(rows, model.class_names)
        _print_table(per_class)
        print()
        _print_table(per_layer)
        _write_csv(per_class, args.out / "gradcam_deletion.csv")
        _write_csv(per_layer, args.out / "gradcam_layers.csv")
    if not args.skip_region:
        print(f"\nRegion vs whole B-scan, {args.region_bscans} B-scan(s) of each of subjects {subjects}:")
        scans = [(s, int(b), img) for s in subjects for img, b in zip(*_bscans(s, args.region_bscans), strict=True)]
        rows = bench_region(model, ["decoder", *args.layers], scans)
        _write_csv(rows, args.out / f"gradcam_region_rows_{tag}.csv")
        rows = summarise_region(rows)
        _print_table(rows)
        _write_csv(rows, args.out / "gradcam_region.csv")
    if not args.skip_randomisation:
        rows = bench_randomisation(model, ["decoder", *args.layers], subjects)
        print("\nModel randomisation (trained vs re-initialised network, Spearman of the maps):")
        _print_table(rows)
        _write_csv(rows, args.out / "gradcam_randomisation.csv")
    if not args.skip_speed:
        speed_layers = ["decoder", "final", *args.layers]
        rows = bench_speed(model, speed_layers, args.repeats)
        print(f"\nOne 496 x 512 B-scan on CPU (median of {args.repeats}; load average now {os.getloadavg()[0]:.1f}):")
        _print_table(rows)
        if not args.skip_volume:
            volume_rows = bench_speed(model, speed_layers, args.volume_repeats, volume=True)
            print(
                f"\nSubject_07 as one volume (11 B-scans), retina window on (median of {args.volume_repeats}; "
                f"load average now {os.getloadavg()[0]:.1f}):"
            )
            _print_table(volume_rows)
            rows += volume_rows
        _write_csv(rows, args.out / "gradcam_speed.csv")


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

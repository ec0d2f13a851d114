"""Robustness of the segmentation to other devices: controlled shifts of Duke B-scans and real .vol files.

For each model configuration, every B-scan of Duke Subject_07-08 (validation: they chose the checkpoint)
is shifted the way another device or export would change it, segmented through ``inference.segment``
exactly as ``octseg segment`` does (with the shifted image's true pixel spacing), and scored against the
grader's labels carried through the same shift:

* mean Dice over classes 1-7 and fluid (pixels pooled over the B-scans);
* boundary MAE and signed bias in µm (prediction minus grader; positive = too deep) of the 8 boundaries
  (``core.boundaries``), and the signed bias of total retinal thickness (ILM -> BM);

plus, on the two genuine Heidelberg ``.vol`` files, the MAE and bias of our ILM and BM against the lines
the device stored in the file, and B-scans/s of the whole pipeline on 496 x 512 B-scans.

Shifts: ``axial x0.75`` (rows scaled by 0.75: 5.2 µm/px), ``axial x2`` (1.9 µm/px), ``lateral x0.4``
(28 µm/px), ``lateral x2`` (5.7 µm/px), speckle as 1, 3 or 10 averaged frames (linear-domain gamma noise),
gamma 0.5 and 2 on the grey values, histogram equalisation.

Run::

    python benchmarks/bench_robustness.py --model old=../octseg_default_v1.pt:legacy \\
        --model new=src/napari_octseg/models/weights/octseg_default.pt --out benchmarks/results/robustness

``NAME=PATH`` scores a checkpoint with the current pipeline, one B-scan per call (so the network sees every
row); ``:legacy`` scores it as the pipeline was before physical-scale input (no resampling, raw argmax),
``:grid`` injects the Duke training spacing into a checkpoint that lacks it; ``:stack`` segments each
subject's shifted B-scans as one volume, as a user's volume is segmented (the retina window applies), and
``:stack-full`` does the same with the window off::

    python benchmarks/bench_robustness.py --model window=:stack --model full=:stack-full \
        --out benchmarks/results/robustness_window
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
from _shifts import SHIFTS, apply_shift

from napari_octseg.core.atomic import atomic_write_text
from napari_octseg.core.boundaries import boundaries
from napari_octseg.core.classes import BOUNDARY_NAMES
from napari_octseg.core.progress import run_generator
from napari_octseg.core.volume import OctVolume
from napari_octseg.inference import segment
from napari_octseg.io import read
from napari_octseg.learning import boundary_errors, confusion_matrix, scores
from napari_octseg.learning.datasets import duke_files
from napari_octseg.models import load_model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DUKE_SPACING = (3.87, 11.3)


def load_spec(spec: str):
    """``NAME=PATH[:legacy|:grid]`` -> (name, loaded model, segment keyword arguments)."""
    name, _, rest = spec.partition("=")
    path, _, mode = rest.partition(":")
    loaded = load_model(path or None, device="cpu")
    kwargs: dict = {}
    if mode == "legacy":
        loaded.normalization.pop("pixel_spacing_um", None)
        kwargs["ordered"] = False
    elif mode == "grid":
        loaded.normalization["pixel_spacing_um"] = list(DUKE_SPACING)
    elif mode in ("stack", "stack-full"):
        # each subject's shifted B-scans as one volume, so the retina window (segment(window=True)) applies;
        # "stack-full" runs every row, to show what the window changes
        kwargs["stack"] = True
        kwargs["window"] = mode == "stack"
    return name, loaded, kwargs


def _score_stack(images, labels, shift: str, path: Path, loaded, kwargs: dict):
    """Segment one subject's shifted B-scans as one volume: (labels, truth, axial µm, lateral µm, seconds)."""
    shifted = [apply_shift(images[i], labels[i], shift, seed=1000 * i + len(path.stem)) for i in range(len(images))]
    ay, ax = shifted[0][2]
    x = np.stack([s[0] for s in shifted])
    truth = np.stack([s[1] for s in shifted])
    t0 = time.perf_counter()
    res = run_generator(segment(OctVolume(data=x, scale_um=(120.0, ay, ax)), loaded, device="cpu", **kwargs))
    return res.labels, truth, ay, time.perf_counter() - t0


def score_duke(loaded, kwargs: dict, shifts: tuple[str, ...], subjects: list[int]) -> list[dict]:
    rows = []
    kwargs = dict(kwargs)
    stack = kwargs.pop("stack", False)
    files = duke_files(DATA / "duke_dme", subjects)
    for shift in shifts:
        cm = np.zeros((10, 10), np.int64)
        maes, biases, totals, seconds, n = [], [], [], 0.0, 0
        for path in files:
            with np.load(path, allow_pickle=False) as npz:
                images, labels = npz["images"], npz["labels"]
            if stack:
                pred, truth, ay, dt = _score_stack(images, labels, shift, path, loaded, kwargs)
                seconds += dt
                n += len(pred)
                cm += confusion_matrix(pred, truth, 10)
                for k in range(len(pred)):
                    mae, bias, total = boundary_errors(boundaries(pred[k : k + 1]), boundaries(truth[k : k + 1]))
                    maes.append(mae * ay)
                    biases.append(bias * ay)
                    totals.append(total * ay)
                continue
            for i in range(len(images)):
                x, lab, (ay, ax) = apply_shift(images[i], labels[i], shift, seed=1000 * i + len(path.stem))
                vol = OctVolume(data=x[None], scale_um=(120.0, ay, ax))
                t0 = time.perf_counter()
                res = run_generator(segment(vol, loaded, batch_size=1, device="cpu", **kwargs))
                seconds += time.perf_counter() - t0
                n += 1
                cm += confusion_matrix(res.labels, lab[None], 10)
                mae, bias, total = boundary_errors(boundaries(res.labels), boundaries(lab[None]))
                mae, bias, total = mae * ay, bias * ay, total * ay
                maes.append(mae)
                biases.append(bias)
                totals.append(total)
        sc = scores(cm)
        mae, bias = np.nanmean(maes, axis=0), np.nanmean(biases, axis=0)
        rows.append(
            {
                "shift": shift,
                "dice_1_7_9": sc["mean_dice_scored"],
                "dice_per_class": [float(d) for d in sc["dice"]],
                "mae_um": mae.tolist(),
                "bias_um": bias.tolist(),
                "mean_mae_um": float(np.mean(mae)),
                "total_bias_um": float(np.nanmean(totals)),
                "bscans_per_s": n / seconds,
            }
        )
        print(
            f"  {shift:18s} Dice {sc['mean_dice_scored']:.3f}  boundary MAE {np.mean(mae):5.2f} µm  "
            f"max |bias| {np.max(np.abs(bias)):5.2f} µm  total bias {np.nanmean(totals):+6.2f} µm",
            flush=True,
        )
    return rows


def score_vol(loaded, kwargs: dict) -> list[dict]:
    rows = []
    for path in sorted((DATA / "heyex_vol").glob("*.vol")):
        vol = read(path)
        res = run_generator(segment(vol, loaded, batch_size=1, device="cpu", **kwargs))
        ours = boundaries(res.labels)
        ay = vol.scale_um[1]
        row = {"file": path.name}
        for name, k in (("ILM", 0), ("BM", 7)):
            d = (ours[k] - vol.layers[name]) * ay
            row[f"{name}_mae_um"] = float(np.nanmean(np.abs(d)))
            row[f"{name}_bias_um"] = float(np.nanmean(d))
            row[f"{name}_coverage"] = float(np.mean(np.isfinite(d)))
        rows.append(row)
        print(
            f"  {path.name:22s} ILM MAE {row['ILM_mae_um']:6.2f} µm (bias {row['ILM_bias_um']:+6.2f})  "
            f"BM MAE {row['BM_mae_um']:6.2f} µm (bias {row['BM_bias_um']:+6.2f})",
            flush=True,
        )
    return rows


def pipeline_speed(loaded, kwargs: dict, n: int = 16) -> float:
    """B-scans/s of ``segment`` on a 496 x 512 volume at the Duke spacing (resampling is then a no-op)."""
    rng = np.random.default_rng(0)
    vol = OctVolume(data=rng.random((n, 496, 512), dtype=np.float32), scale_um=(120.0, 3.87, 11.3))
    run_generator(segment(OctVolume(data=vol.data[:2], scale_um=vol.scale_um), loaded, device="cpu", **kwargs))
    t0 = time.perf_counter()
    run_generator(segment(vol, loaded, device="cpu", **kwargs))
    return n / (time.perf_counter() - t0)


def write_tables(results: dict, out: Path) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["model", "shift", "dice_1_7_9", "mean_boundary_mae_um", "total_thickness_bias_um", "bscans_per_s"]
        + [f"bias_{b}_um" for b in BOUNDARY_NAMES]
        + [f"mae_{b}_um" for b in BOUNDARY_NAMES]
    )
    for name, res in results.items():
        for r in res["duke"]:
            w.writerow(
                [name, r["shift"], f"{r['dice_1_7_9']:.4f}", f"{r['mean_mae_um']:.2f}", f"{r['total_bias_um']:+.2f}"]
                + [f"{r['bscans_per_s']:.2f}"]
                + [f"{b:+.2f}" for b in r["bias_um"]]
                + [f"{m:.2f}" for m in r["mae_um"]]
            )
    atomic_write_text(out.with_suffix(".csv"), buf.getvalue())
    lines = ["# Robustness (benchmarks/bench_robustness.py)", ""]
    names = list(results)
    lines.append("mean Dice 1-7 + fluid / mean boundary MAE (µm) / total retinal thickness bias (µm), Subject_07-08")
    lines.append("")
    lines.append("| shift | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for i, shift in enumerate(r["shift"] for r in results[names[0]]["duke"]):
        cells = []
        for name in names:
            r = results[name]["duke"][i]
            cells.append(f"{r['dice_1_7_9']:.3f} / {r['mean_mae_um']:.1f} / {r['total_bias_um']:+.1f}")
        lines.append(f"| {shift} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Signed bias per boundary, clean Subject_07-08 (µm; + = too deep):")
    lines.append("")
    lines.append("| model | " + " | ".join(BOUNDARY_NAMES) + " | total |")
    lines.append("|---|" + "---|" * (len(BOUNDARY_NAMES) + 1))
    for name in names:
        r = results[name]["duke"][0]
        lines.append(f"| {name} | " + " | ".join(f"{b:+.2f}" for b in r["bias_um"]) + f" | {r['total_bias_um']:+.2f} |")
    lines.append("")
    lines.append("Heidelberg .vol files against the device's own lines (µm):")
    lines.append("")
    lines.append("| model | file | ILM MAE | ILM bias | BM MAE | BM bias |")
    lines.append("|---|---|---|---|---|---|")
    for name in names:
        for r in results[name]["vol"]:
            lines.append(
                f"| {name} | {r['file']} | {r['ILM_mae_um']:.2f} | {r['ILM_bias_um']:+.2f} | "
                f"{r['BM_mae_um']:.2f} | {r['BM_bias_um']:+.2f} |"
            )
    lines.append("")
    lines.append("Whole pipeline (display, resampling, network, ordering), 496 x 512 B-scans, CPU:")
    lines.append("")
    for name in names:
        lines.append(f"- {name}: {results[name]['speed']:.2f} B-scans/s")
    text = "\n".join(lines) + "\n"
    atomic_write_text(out.with_suffix(".md"), text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, help="NAME=PATH[:legacy|:grid] (repeatable)")
    p.add_argument("--subjects", type=int, nargs="+", default=[7, 8])
    p.add_argument("--shifts", nargs="+", default=list(SHIFTS), help="subset of the shifts (names as printed)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "robustness")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not (DATA / "duke_dme").is_dir():
        print(f"needs {DATA / 'duke_dme'}", file=sys.stderr)
        return 1
    results = {}
    for spec in args.model:
        name, loaded, kwargs = load_spec(spec)
        print(f"{name}: {spec}", flush=True)
        per_bscan = {k: v for k, v in kwargs.items() if k != "stack"}
        results[name] = {
            "duke": score_duke(loaded, kwargs, tuple(args.shifts), args.subjects),
            "vol": score_vol(loaded, per_bscan),
            "speed": pipeline_speed(loaded, per_bscan),
        }
        print(f"  pipeline {results[name]['speed']:.2f} B-scans/s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    print(write_tables(results, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does the per-B-scan quality know when not to trust the segmentation? And which B-scans to correct first?

Data: Duke DME Subject_07-08 (validation subjects) under the controlled shifts of ``_shifts.py`` (axial x0.75 / x2,
lateral x0.4 / x2, speckle of 10 / 3 / 1 frames, gamma 0.5 / 2, histogram equalisation; the same shifts as
``bench_robustness.py``) plus the two HEYEX ``.vol`` files. Every B-scan is segmented with ``--model`` exactly as
``octseg segment --uncertainty`` does (with its true pixel spacing, so resampled to the model's grid); its quality
statistics are the pipeline's own and are compared with the true per-B-scan mean Dice (classes 1-7 and fluid):

* Spearman correlation quality vs mean Dice (target >= 0.7), AUROC of (1 - quality) for mean Dice < 0.75
  (target >= 0.9), per shift: mean Dice, mean quality and the fraction flagged;
* ``valid.vol`` (a circle scan the model was not made for) flagged, ``Willis_B_716_0.vol`` (a macular line scan) not;
* the reference is also re-calibrated on the training subjects (Subject_01-06 as they are, Subject_01 and 05 under
  the shifts; see ``_quality_calib.py``) and scored the same way, so a new model gets its own numbers;
* ``--cost`` (alone): seconds of ``segment`` for labels alone and for labels + uncertainty + quality on the same
  22 B-scans in the same process, into ``results/quality_cost.txt``.

Which B-scans to correct first (ranked vs random, fine-tuned): ``bench_active_learning.py``.

Segmenting 22 x 11 B-scans takes minutes; ``--rows-val`` / ``--rows-train`` reuse measurements written by an
earlier run (``benchmarks/results/quality_rows_*.csv``).

Usage::

    python benchmarks/bench_quality.py [--model PATH] [--rows-val CSV] [--rows-train CSV...]
        [--out benchmarks/results/quality.txt]
    python benchmarks/bench_quality.py --cost [--cost-out benchmarks/results/quality_cost.txt]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _quality_calib import BAD_DICE, auroc, calibrate, describe, score_rows
from _quality_data import DUKE, collect, collect_vols, read_rows, write_report, write_rows
from _shifts import DUKE_SCALE_UM, SHIFTS
from scipy.stats import spearmanr

from napari_octseg.core.progress import run_generator
from napari_octseg.core.volume import OctVolume
from napari_octseg.inference import segment
from napari_octseg.models import load_model
from napari_octseg.quality import DEFAULT_REFERENCE

RESULTS = Path(__file__).resolve().parent / "results"


def evaluate(rows: list[dict], reference, title: str, out: list[str]) -> None:
    """Spearman, AUROC, the per-shift table and the .vol verdicts of ``reference`` on ``rows``."""
    scores, reasons = score_rows(rows, reference)
    duke = np.array([r["shift"] != "device" for r in rows])
    dice = np.array([r["dice"] for r in rows])
    rho = spearmanr(scores[duke], dice[duke]).statistic
    area = auroc(dice[duke] < BAD_DICE, 1 - scores[duke])
    flagged = scores < reference.flag_below
    out.append(f"\n## {title} (flag below {reference.flag_below:.3f})")
    out.append(f"Spearman(quality, mean Dice) = {rho:.3f} (target >= 0.7) over {int(duke.sum())} B-scans")
    out.append(f"AUROC(1 - quality, mean Dice < {BAD_DICE}) = {area:.3f} (target >= 0.9)")
    unc = np.array([r["uncertainty"] for r in rows])[duke]
    out.append(
        f"for comparison, the per-B-scan uncertainty alone: Spearman {-spearmanr(unc, dice[duke]).statistic:.3f}, "
        f"AUROC {auroc(dice[duke] < BAD_DICE, unc):.3f}"
    )
    bad = dice[duke] < BAD_DICE
    out.append(
        f"flagged: {flagged[duke][bad].mean():.2f} of B-scans with Dice < {BAD_DICE} ({int(bad.sum())}), "
        f"{flagged[duke][~bad].mean():.2f} of the others ({int((~bad).sum())})"
    )
    out.append(f"{'shift':<18}{'mean Dice':>10}{'quality':>9}{'flagged':>9}  commonest reasons")
    for shift in dict.fromkeys(r["shift"] for r in rows if r["shift"] != "device"):
        idx = [i for i, r in enumerate(rows) if r["shift"] == shift]
        counts: dict[str, int] = {}
        for i in idx:
            for why in reasons[i]:
                counts[why] = counts.get(why, 0) + 1
        common = ", ".join(f"{k} ({v})" for k, v in sorted(counts.items(), key=lambda t: -t[1])[:2])
        mean_dice, mean_q, frac = np.nanmean(dice[idx]), np.mean(scores[idx]), flagged[idx].mean()
        out.append(f"{shift:<18}{mean_dice:>10.3f}{mean_q:>9.3f}{frac:>9.2f}  {common}")
    low = [i for i, r in enumerate(rows) if r["shift"] != "device" and r["dice"] < BAD_DICE]
    out.append(
        f"B-scans with Dice < {BAD_DICE}: "
        + "; ".join(
            f"{rows[i]['source']} #{int(rows[i]['bscan'])} {rows[i]['shift']} (Dice {dice[i]:.3f}, q {scores[i]:.2f})"
            for i in low
        )
    )
    for i, r in enumerate(rows):
        if r["shift"] == "device":
            verdict = "FLAGGED" if flagged[i] else "not flagged"
            out.append(f"{r['source']}: quality {scores[i]:.3f} {verdict}; {', '.join(reasons[i]) or 'no reason'}")


def cost(model, repeats: int = 5) -> list[str]:
    """Labels alone vs labels + uncertainty + quality on Subject_07 + 08 (22 B-scans), same process, interleaved.

    On a shared machine the wall time swings by 2x from run to run, so the comparison is made on the process's
    CPU time (one torch thread, so it is the work done; best of ``repeats``); wall times are listed too. The CPU
    time inside ``QualityAccumulator.add`` (the per-B-scan statistics) is measured separately, so what is left
    is the uncertainty map itself (top-2 margin of the softmax, resampling to the native grid, float16 copy).
    """
    from napari_octseg.quality import score as score_module

    images = []
    for s in (7, 8):
        with np.load(DUKE / f"Subject_{s:02d}.npz") as z:
            images.append(z["images"][:, :, :500].astype(np.float32))
    volume = OctVolume(data=np.concatenate(images), scale_um=DUKE_SCALE_UM)
    add = score_module.QualityAccumulator.add
    stats_cpu = [0.0]

    def timed_add(self, *a, **k):  # type: ignore[no-untyped-def]
        t0 = time.process_time()
        add(self, *a, **k)
        stats_cpu[0] += time.process_time() - t0

    score_module.QualityAccumulator.add = timed_add  # type: ignore[method-assign]
    run_generator(segment(OctVolume(data=volume.data[:2], scale_um=DUKE_SCALE_UM), model, device="cpu"))  # warm-up
    cpu: dict[bool, list[float]] = {False: [], True: []}
    wall: dict[bool, list[float]] = {False: [], True: []}
    in_stats: list[float] = []
    for _ in range(repeats):
        for unc in (False, True):
            stats_cpu[0] = 0.0
            t0, c0 = time.perf_counter(), time.process_time()
            run_generator(segment(volume, model, device="cpu", return_uncertainty=unc))
            cpu[unc].append(time.process_time() - c0)
            wall[unc].append(time.perf_counter() - t0)
            if unc:
                in_stats.append(stats_cpu[0])
    score_module.QualityAccumulator.add = add  # type: ignore[method-assign]
    a, b = min(cpu[False]), min(cpu[True])
    stats = in_stats[int(np.argmin(cpu[True]))]
    n = volume.n_bscans
    h, w = volume.data.shape[1:]
    return [
        f"# bench_quality.py --cost, model {model.source}, torch threads {torch.get_num_threads()}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        f"{n} B-scans {h} x {w} (Duke Subject_07 + 08), CPU, {repeats} interleaved runs each, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
        f"CPU time, best run: labels alone {a:.2f} s; labels + uncertainty + quality {b:.2f} s; "
        f"ratio {b / a:.3f} (target <= 1.3)",
        f"of the difference {b - a:+.2f} s: per-B-scan statistics (QualityAccumulator.add) {stats:.2f} s, "
        f"uncertainty map and the rest {b - a - stats:+.2f} s",
        f"median CPU-time ratio of the {repeats} pairs: {np.median(np.array(cpu[True]) / np.array(cpu[False])):.3f}",
        "CPU s: labels "
        + ", ".join(f"{t:.2f}" for t in cpu[False])
        + "; with quality "
        + ", ".join(f"{t:.2f}" for t in cpu[True]),
        "wall s: labels "
        + ", ".join(f"{t:.2f}" for t in wall[False])
        + "; with quality "
        + ", ".join(f"{t:.2f}" for t in wall[True]),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    parser.add_argument("--rows-val", type=Path, help="reuse validation measurements (CSV) instead of segmenting")
    parser.add_argument("--rows-train", type=Path, nargs="*", help="reuse training-subject measurements (CSV)")
    parser.add_argument(
        "--cost", action="store_true", help="only time labels alone vs labels + uncertainty + quality (--cost-out)"
    )
    parser.add_argument("--cost-out", type=Path, default=RESULTS / "quality_cost.txt")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.txt")
    args = parser.parse_args()
    if not DUKE.is_dir():
        print(f"skipped: {DUKE} is absent (the Duke data lives outside the project)")
        return 0
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    log = lambda s: print(s, flush=True)  # noqa: E731
    if args.cost:
        text = "\n".join(cost(model)) + "\n"
        print(text)
        args.cost_out.parent.mkdir(parents=True, exist_ok=True)
        args.cost_out.write_text(text, encoding="utf-8")
        print(f"written {args.cost_out}")
        return 0
    out = [f"# bench_quality.py, model {model.source}, torch threads {args.threads}, {time.strftime('%Y-%m-%d %H:%M')}"]
    if args.rows_val:
        val = read_rows(args.rows_val)
    else:
        val = collect_vols(model) + collect(model, (7, 8), SHIFTS, log=log)
        write_rows(RESULTS / "quality_rows_val.csv", val)
    if args.rows_train:
        train = [r for path in args.rows_train for r in read_rows(path)]
    else:
        train = collect(model, range(1, 7), ["clean"], log=log)
        train += collect(model, (1, 5), [s for s in SHIFTS if s != "clean"], log=log)
        write_rows(RESULTS / "quality_rows_train.csv", train)
    evaluate(val, DEFAULT_REFERENCE, f"Shipped reference ({DEFAULT_REFERENCE.source})", out)
    plain = [r for r in train if r["shift"] == "clean"]
    shifted = [r for r in train if r["shift"] != "clean"]
    calibrated = calibrate(plain, shifted)
    evaluate(val, calibrated, "Reference re-calibrated on Subject_01-06 for this model", out)
    out.append("calibrated reference:\n" + describe(calibrated))
    write_report(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

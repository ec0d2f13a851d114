"""Does the per-B-scan quality know when not to trust the segmentation? And which B-scans to correct first?

Data: Duke DME Subject_07-08 (validation subjects) under the controlled shifts of ``_shifts.py`` (axial x0.75 / x2,
lateral x0.4 / x2, speckle 1-3, gamma 0.5 / 2, histogram equalisation) plus the two HEYEX ``.vol`` files. Every
B-scan is segmented with ``--model`` (the network sees it on its native grid, with its own pixel spacing); its
quality comes from the statistics of :mod:`napari_octseg.quality` and is compared with the true per-B-scan mean
Dice (classes 1-7 and fluid):

* Spearman correlation quality vs mean Dice (target >= 0.7), AUROC of (1 - quality) for mean Dice < 0.75
  (target >= 0.9), per shift: mean Dice, mean quality and the fraction flagged;
* ``valid.vol`` (a circle scan the model was not made for) flagged, ``Willis_B_716_0.vol`` (a macular line scan) not;
* the reference is also re-calibrated on the training subjects (Subject_01-06 as they are, Subject_01 and 05 under
  the shifts; see ``_quality_calib.py``) and scored the same way, so a new model gets its own numbers;
* ``--cost``: seconds of ``segment`` for labels alone and for labels + uncertainty + quality (22 B-scans);
* ``--active-learning``: on Subject_08 under ``--al-shift``, fine-tune (short recipe) on the 2 B-scans
  :func:`~napari_octseg.quality.correction_candidates` picks and on 2 random B-scans (``--draws`` draws); mean Dice
  of the other 9 B-scans before and after.

Segmenting 22 x 11 B-scans takes minutes; ``--rows-val`` / ``--rows-train`` reuse measurements written by an
earlier run (``benchmarks/results/quality_rows_*.csv``).

Usage::

    python benchmarks/bench_quality.py [--model PATH] [--rows-val CSV] [--rows-train CSV...] [--cost]
        [--active-learning] [--al-shift NAME] [--draws 3] [--out benchmarks/results/quality.txt]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _quality_calib import BAD_DICE, auroc, calibrate, describe, score_rows
from _quality_data import DUKE, bscan_dice, collect, collect_vols, read_rows, write_rows
from _shifts import DUKE_SCALE_UM, SHIFTS, apply_shift
from scipy.stats import spearmanr

from napari_octseg.core.progress import run_generator
from napari_octseg.core.volume import OctVolume
from napari_octseg.inference import segment
from napari_octseg.models import load_model
from napari_octseg.quality import DEFAULT_REFERENCE, correction_candidates

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
    bad = dice[duke] < BAD_DICE
    out.append(
        f"flagged: {flagged[duke][bad].mean():.2f} of B-scans with Dice < {BAD_DICE} ({int(bad.sum())}), "
        f"{flagged[duke][~bad].mean():.2f} of the others ({int((~bad).sum())})"
    )
    out.append(f"{'shift':<14}{'mean Dice':>10}{'quality':>9}{'flagged':>9}  commonest reasons")
    for shift in dict.fromkeys(r["shift"] for r in rows if r["shift"] != "device"):
        idx = [i for i, r in enumerate(rows) if r["shift"] == shift]
        counts: dict[str, int] = {}
        for i in idx:
            for why in reasons[i]:
                counts[why] = counts.get(why, 0) + 1
        common = ", ".join(f"{k} ({v})" for k, v in sorted(counts.items(), key=lambda t: -t[1])[:2])
        mean_dice, mean_q, frac = np.nanmean(dice[idx]), np.mean(scores[idx]), flagged[idx].mean()
        out.append(f"{shift:<14}{mean_dice:>10.3f}{mean_q:>9.3f}{frac:>9.2f}  {common}")
    for i, r in enumerate(rows):
        if r["shift"] == "device":
            verdict = "FLAGGED" if flagged[i] else "not flagged"
            out.append(f"{r['source']}: quality {scores[i]:.3f} {verdict}; {', '.join(reasons[i]) or 'no reason'}")


def cost(model, out: list[str]) -> None:
    """Seconds of labels alone vs labels + uncertainty + quality on Subject_07 + 08 (best of 2, interleaved)."""
    images = []
    for s in (7, 8):
        with np.load(DUKE / f"Subject_{s:02d}.npz") as z:
            images.append(z["images"][:, :, :500].astype(np.float32))
    volume = OctVolume(data=np.concatenate(images), scale_um=DUKE_SCALE_UM)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(2):
        for unc in (False, True):
            t0 = time.perf_counter()
            run_generator(segment(volume, model, device="cpu", return_uncertainty=unc))
            times[unc].append(time.perf_counter() - t0)
    a, b = min(times[False]), min(times[True])
    out.append(f"\n## Cost ({volume.n_bscans} B-scans 496 x 500, CPU, load average {os.getloadavg()[0]:.1f})")
    out.append(f"labels alone {a:.2f} s; labels + uncertainty + quality {b:.2f} s; ratio {b / a:.2f} (target <= 1.3)")


def active_learning(model, shift: str, draws: int, out: list[str], log) -> None:
    """Fine-tune on the 2 ranked vs 2 random B-scans of a shifted validation subject."""
    from napari_octseg.learning.finetune import FinetuneOptions, finetune

    with np.load(DUKE / "Subject_08.npz") as z:
        images, labels = z["images"].astype(np.float32), z["labels"].astype(np.uint8)
    x, y, scale = apply_shift(shift, images, labels, DUKE_SCALE_UM, seed=8)
    volume = OctVolume(data=x, scale_um=scale)
    base = run_generator(segment(volume, model, device="cpu", return_uncertainty=True))
    base_dice = bscan_dice(base.labels, y)
    ranked = correction_candidates(base.quality, 2)
    rng = np.random.default_rng(0)
    picks = [("ranked", ranked)] + [
        (f"random {d + 1}", sorted(rng.choice(len(x), 2, replace=False).tolist())) for d in range(draws)
    ]
    opts = FinetuneOptions(samples_per_epoch=8, self_replay_bscans=4, seed=0)
    out.append(f"\n## Active learning: Subject_08 under '{shift}', fine-tuned 4 epochs on 2 B-scans (short recipe)")
    out.append(f"{'pick':<10}{'B-scans':<10}{'their Dice':>11}{'others before':>15}{'after':>8}{'gain':>8}{'s':>6}")
    gains: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, chosen in picks:
            others = [i for i in range(len(x)) if i not in chosen]
            t0 = time.perf_counter()
            gen = finetune(
                volume,
                y,
                chosen,
                model,
                out_path=Path(tmp) / f"{name}.pt",
                epochs=4,
                freeze_encoder_epochs=1,
                device="cpu",
                options=opts,
            )
            tuned = run_generator(gen).model
            after = bscan_dice(
                run_generator(segment(OctVolume(data=x[others], scale_um=scale), tuned, device="cpu")).labels, y[others]
            )
            before = float(np.nanmean(base_dice[others]))
            gains[name] = float(np.nanmean(after)) - before
            out.append(
                f"{name:<10}{','.join(map(str, chosen)):<10}{np.nanmean(base_dice[chosen]):>11.3f}{before:>15.3f}"
                f"{np.nanmean(after):>8.3f}{gains[name]:>+8.3f}{time.perf_counter() - t0:>6.0f}"
            )
            log(out[-1])
    random_gain = np.mean([v for k, v in gains.items() if k != "ranked"])
    out.append(f"ranked gain {gains['ranked']:+.3f} vs random gain {random_gain:+.3f} (mean of {draws} draws)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint (default: the bundled model)")
    parser.add_argument("--rows-val", type=Path, help="reuse validation measurements (CSV) instead of segmenting")
    parser.add_argument("--rows-train", type=Path, nargs="*", help="reuse training-subject measurements (CSV)")
    parser.add_argument("--cost", action="store_true", help="time labels alone vs labels + uncertainty + quality")
    parser.add_argument("--active-learning", action="store_true", help="ranked vs random B-scans for fine-tuning")
    parser.add_argument("--al-shift", default="axial x0.75", choices=list(SHIFTS))
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.txt")
    args = parser.parse_args()
    if not DUKE.is_dir():
        print(f"skipped: {DUKE} is absent (the Duke data lives outside the project)")
        return 0
    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    log = lambda s: print(s, flush=True)  # noqa: E731
    out = [f"# bench_quality.py, model {model.source}, torch threads {args.threads}, {time.strftime('%Y-%m-%d %H:%M')}"]
    if args.rows_val:
        val = read_rows(args.rows_val)
    else:
        val = collect_vols(model, DEFAULT_REFERENCE.layer_thickness_um) + collect(
            model, (7, 8), list(SHIFTS), DEFAULT_REFERENCE.layer_thickness_um, log=log
        )
        write_rows(RESULTS / "quality_rows_val.csv", val)
    if args.rows_train:
        train = [r for path in args.rows_train for r in read_rows(path)]
    else:
        train = collect(model, range(1, 7), ["none"], DEFAULT_REFERENCE.layer_thickness_um, log=log)
        train += collect(
            model, (1, 5), [s for s in SHIFTS if s != "none"], DEFAULT_REFERENCE.layer_thickness_um, log=log
        )
        write_rows(RESULTS / "quality_rows_train.csv", train)
    evaluate(val, DEFAULT_REFERENCE, f"Shipped reference ({DEFAULT_REFERENCE.source})", out)
    plain = [r for r in train if r["shift"] == "none"]
    shifted = [r for r in train if r["shift"] != "none"]
    calibrated = calibrate(plain, shifted)
    evaluate(val, calibrated, "Reference re-calibrated on Subject_01-06 for this model", out)
    out.append("calibrated reference:\n" + describe(calibrated))
    if args.cost:
        cost(model, out)
    if args.active_learning:
        active_learning(model, args.al_shift, args.draws, out, log)
    text = "\n".join(out) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does a mirrored second pass tell the quality what the uncertainty misses? (``segment(mirror_check=True)``)

A confident error often depends on where a structure sits in the B-scan; segmenting the B-scan mirrored
left-right and mirroring the labels back moves every structure, so the two label maps disagree where the
network's answer is fragile. ``mirror_disagreement`` is one minus their mean Dice (classes 1-7 and fluid);
its rule in :data:`napari_octseg.quality.DEFAULT_REFERENCE` gives the penalty
``weight * clip((disagreement - low) / soft, 0, 1)``.

Data and protocol (as ``bench_quality.py``): the training rows are Duke Subject_01-06 as they are plus Subject_01 and
05 under the shifts of ``_shifts.py``; the validation rows Subject_07-08 under every shift, plus the two HEYEX
``.vol`` files. Every B-scan is segmented as ``octseg segment --mirror-check`` does. ``low`` is the smallest
disagreement of an unshifted training B-scan; ``soft`` and ``weight`` maximise the Spearman correlation of the
quality with the true per-B-scan Dice on the training rows; only then are the validation rows scored.
Reported: Spearman and AUROC (Dice < 0.75) of the uncertainty alone, the disagreement alone, the quality without
and with the mirror rule (the shipped reference), the flagged fractions, the .vol verdicts, and the fitted rule.

Usage::

    python benchmarks/bench_mirror_check.py [--rows-train CSV --rows-val CSV]
        [--out benchmarks/results/mirror_check.txt]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from _quality_calib import BAD_DICE, auroc, score_rows, youden_threshold
from _quality_data import DUKE, collect, collect_vols, read_rows, write_report, write_rows
from _shifts import SHIFTS
from scipy.stats import spearmanr

from napari_octseg.models import load_model
from napari_octseg.quality import DEFAULT_REFERENCE

RESULTS = Path(__file__).resolve().parent / "results"
SOFTS = (0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3)
WEIGHTS = (0.25, 0.5, 1.0)


def _with_rule(low: float, soft: float, weight: float):
    rules = tuple(
        replace(r, high=low, soft=soft, weight=weight) if r.statistic == "mirror_disagreement" else r
        for r in DEFAULT_REFERENCE.rules
    )
    return replace(DEFAULT_REFERENCE, rules=rules)


def per_class_agreement(model) -> list[str]:
    """Which classes change when each HEYEX .vol file's B-scans are mirrored: pixels per pass and Dice per class."""
    from dataclasses import replace as with_data

    from _quality_data import VOLS

    from napari_octseg.core.classes import CLASS_NAMES, SCORED_CLASSES
    from napari_octseg.core.progress import run_generator
    from napari_octseg.inference import segment
    from napari_octseg.io import read

    out = []
    for path in sorted(VOLS.glob("*.vol")):
        volume = read(path)
        a = run_generator(segment(volume, model, device="cpu")).labels
        mirrored = with_data(volume, data=np.ascontiguousarray(volume.data[:, :, ::-1]))
        b = run_generator(segment(mirrored, model, device="cpu")).labels[:, :, ::-1]
        parts = []
        for c in SCORED_CLASSES:
            na, nb, both = int((a == c).sum()), int((b == c).sum()), int(((a == c) & (b == c)).sum())
            parts.append(f"{CLASS_NAMES[c]} {na}/{nb} px Dice {2 * both / max(1, na + nb):.2f}")
        out.append(f"{path.name}, plain / mirrored pass: " + "; ".join(parts))
    return out


def _without_mirror(rows: list[dict]) -> list[dict]:
    return [{**r, "mirror_disagreement": np.nan} for r in rows]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows-train", type=Path, help="reuse training measurements with the mirror check (CSV)")
    parser.add_argument("--rows-val", type=Path, help="reuse validation measurements with the mirror check (CSV)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "mirror_check.txt")
    args = parser.parse_args()
    if not DUKE.is_dir():
        print(f"skipped: {DUKE} is absent (the Duke data lives outside the project)")
        return 0
    torch.set_num_threads(args.threads)
    model = load_model(None, device="cpu")
    log = lambda s: print(s, flush=True)  # noqa: E731
    if args.rows_train:
        train = read_rows(args.rows_train)
    else:
        train = collect(model, range(1, 7), ["clean"], log=log, mirror_check=True)
        train += collect(model, (1, 5), [s for s in SHIFTS if s != "clean"], log=log, mirror_check=True)
        write_rows(RESULTS / "quality_rows_mirror_train.csv", train)
    if args.rows_val:
        val = read_rows(args.rows_val)
    else:
        val = collect_vols(model, mirror_check=True) + collect(model, (7, 8), SHIFTS, log=log, mirror_check=True)
        write_rows(RESULTS / "quality_rows_mirror_val.csv", val)

    dice_t = np.array([r["dice"] for r in train])
    dis_t = np.array([r["mirror_disagreement"] for r in train])
    low = float(np.nanmin(dis_t[np.array([r["shift"] == "clean" for r in train])]))
    fits = [
        (spearmanr(score_rows(train, _with_rule(low, soft, w))[0], dice_t).statistic, soft, w)
        for soft in SOFTS
        for w in WEIGHTS
    ]
    _, soft, weight = max(fits)
    fitted = _with_rule(low, soft, weight)
    # the flag threshold with the mirror check: Youden's J on the training rows, as calibrate() chooses flag_below
    flag_fit = youden_threshold(score_rows(train, fitted)[0], dice_t, DEFAULT_REFERENCE.flag_below)
    fitted = replace(fitted, flag_below_mirror=flag_fit)
    shipped_flag = DEFAULT_REFERENCE.flag_below_mirror or DEFAULT_REFERENCE.flag_below
    shipped = next(r for r in DEFAULT_REFERENCE.rules if r.statistic == "mirror_disagreement")
    lines = [
        f"# bench_mirror_check.py, model {model.source}, torch threads {args.threads}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        f"fitted on the training rows: Rule('mirror_disagreement', -inf, {low:.4g}, {soft:g}, weight={weight:g})",
        f"  flag below {flag_fit:.3f} with the mirror check (Youden's J on the training rows)",
        f"shipped: Rule('mirror_disagreement', -inf, {shipped.high:.4g}, {shipped.soft:g}, weight={shipped.weight:g}), "
        f"flag below {shipped_flag:.3f} with the mirror check, {DEFAULT_REFERENCE.flag_below:.3f} without",
        f"{'rows':<44}{'n':>5}{'Spearman':>10}{'AUROC':>8}{'flagged bad':>13}{'flagged ok':>12}",
    ]
    for name, rows in (("training", train), ("validation", val)):
        duke = [r for r in rows if r["shift"] != "device"]
        dice = np.array([r["dice"] for r in duke])
        bad = dice < BAD_DICE
        unc = np.array([r["uncertainty"] for r in duke])
        dis = np.array([r["mirror_disagreement"] for r in duke])
        plain = score_rows(_without_mirror(duke), DEFAULT_REFERENCE)[0]
        with_mirror = score_rows(duke, DEFAULT_REFERENCE)[0]
        with_fitted = score_rows(duke, fitted)[0]
        for label, score, flag in (
            ("uncertainty alone", -unc, None),
            ("mirror disagreement alone", -dis, None),
            ("quality without the mirror check", plain, plain < DEFAULT_REFERENCE.flag_below),
            ("quality with it (shipped reference)", with_mirror, with_mirror < shipped_flag),
            ("quality with it (rule fitted here)", with_fitted, with_fitted < flag_fit),
        ):
            rho = spearmanr(score, dice).statistic
            flags = f"{flag[bad].mean():>13.2f}{flag[~bad].mean():>12.2f}" if flag is not None else ""
            lines.append(f"{name + ': ' + label:<44}{len(duke):>5}{rho:>10.3f}{auroc(bad, -score):>8.3f}{flags}")
        lines.append(f"  ({int(bad.sum())} of {len(duke)} B-scans with Dice < {BAD_DICE})")
    for r, q, why in zip(val, *score_rows(val, DEFAULT_REFERENCE)):
        if r["shift"] == "device":
            verdict = "FLAGGED" if q < shipped_flag else "not flagged"
            lines.append(
                f"{r['source']}: mirror disagreement {r['mirror_disagreement']:.3f}, quality {q:.3f} {verdict}; "
                f"{', '.join(why) or 'no reason'}"
            )
    lines += per_class_agreement(model)
    write_report(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())

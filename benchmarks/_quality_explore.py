"""Which uncertainty summary drives the quality best? Compared on the training subjects only (never 07-08).

Each variant re-calibrates the reference (``_quality_calib.calibrate``) with another per-B-scan uncertainty
summary standing in for ``uncertainty`` and is scored on the training rows (Subject_01-06 as they are plus
Subject_01 and 05 under the shifts): Spearman with the true Dice and AUROC for Dice < 0.75.

Usage::

    python benchmarks/_quality_explore.py benchmarks/results/quality_rows_train.csv
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from _quality_calib import BAD_DICE, auroc, calibrate, score_rows
from _quality_data import read_rows
from scipy.stats import spearmanr

VARIANTS = {
    "band mean of 1 - margin (shipped)": {},
    "whole-B-scan mean of 1 - margin": {"uncertainty": "uncertainty_all"},
    "band mean of normalised entropy": {"uncertainty": "uncertainty_entropy"},
    # 1 - the soft "expected Dice" of the labels against the network's probabilities, a class left out below
    # 0 / 200 pixels of probability mass: better here (Spearman 0.64 vs 0.37), but not on
    # Subject_07-08 (bench_quality.py rows: 0.62 vs 0.68 alone, AUROC 0.50 vs 0.67), so not used
    "1 - expected Dice": {"uncertainty": "uncertainty_edice0"},
    "1 - expected Dice (classes over 200 px)": {"uncertainty": "uncertainty_edice200"},
}


def main(path: str) -> int:
    rows = read_rows(Path(path))
    plain = [r for r in rows if r["shift"] == "clean"]
    shifted = [r for r in rows if r["shift"] != "clean"]
    dice = np.array([r["dice"] for r in rows])
    print(f"{len(rows)} training B-scans, {int((dice < BAD_DICE).sum())} with Dice < {BAD_DICE}")
    for name, key_map in VARIANTS.items():
        ref = calibrate(plain, shifted, key_map)
        scores = score_rows(rows, ref, key_map)[0]
        rho = spearmanr(scores, dice).statistic
        area = auroc(dice < BAD_DICE, 1 - scores)
        print(f"{name:<36} Spearman {rho:.3f}  AUROC {area:.3f}  flag below {ref.flag_below:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

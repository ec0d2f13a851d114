"""Calibrate the quality reference on the training subjects and score it against the true Dice.

Recipe (only the model's training subjects, Duke Subject_01-06; the validation subjects 07-08 are never used):

* input statistics (noise, grey-value median and IQR) are two-sided: no penalty within [min, max] of the training
  B-scans as they are and under the controlled shifts (the model was trained with augmentation spanning them),
  full penalty one (p95 - p5) beyond; saturation one-sided, the same way;
* the total thickness is two-sided on the training B-scans as they are; the layer-thickness deviation one-sided
  (max, one doubling beyond);
* the anatomy fractions (fluid outside, edge, missing) are one-sided: no penalty up to the training maximum
  + 0.10 (about 50 of 512 A-scans: borders and shadows of other devices' scans), full penalty 0.30 beyond;
* uncertainty is graded from the training minimum over a soft width no smaller than the training range (so a
  B-scan as uncertain as any training B-scan keeps a graded, non-zero score); that width and the weight of the
  input rules (the model tolerates some noise and contrast change, so an unusual input alone lowers the score by
  at most its weight) are chosen on the training subjects under the controlled shifts to maximise the Spearman
  correlation with the true mean Dice, and so are the weights of the axial and lateral spacing rules when the
  network saw other spacings (a model that records its training spacing sees every B-scan resampled to it: the
  base weights are kept); then the flag threshold maximising Youden's J for "mean Dice < 0.75".
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from scipy.stats import spearmanr

from napari_octseg.quality.score import (
    DEFAULT_REFERENCE,
    INPUT_RULES,
    QualityReference,
    Rule,
    quality_from_statistics,
    spacing_deviation,
)
from napari_octseg.quality.stats import STATISTICS

BAD_DICE = 0.75


def auroc(bad: np.ndarray, risk: np.ndarray) -> float:
    """Area under the ROC curve of ``risk`` for detecting ``bad`` (Mann-Whitney, ties count half)."""
    bad = np.asarray(bad, bool)
    pos, neg = np.asarray(risk)[bad], np.asarray(risk)[~bad]
    if not len(pos) or not len(neg):
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def stats_of(rows: list[dict], key_map: dict[str, str] | None = None) -> dict[str, np.ndarray]:
    key_map = key_map or {}
    # rows measured without the mirror check (or before it existed) have no mirror_disagreement: NaN, no penalty
    return {k: np.array([r.get(key_map.get(k, k), np.nan) for r in rows], float) for k in STATISTICS}


def score_rows(rows: list[dict], reference: QualityReference, key_map: dict[str, str] | None = None):
    """Quality of every row, each at its own pixel spacing (the network saw the native grid)."""
    scores = np.empty(len(rows))
    reasons: list[list[str]] = [[] for _ in rows]
    stats = stats_of(rows, key_map)
    groups: dict[tuple[float, float], list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault((r["axial_um"], r["lateral_um"]), []).append(i)
    for spacing, idx in groups.items():
        report = quality_from_statistics({k: v[idx] for k, v in stats.items()}, spacing, reference)
        scores[idx] = report.score
        for j, i in enumerate(idx):
            reasons[i] = report.reasons[j]
    return scores, reasons


def _spread(v: np.ndarray) -> float:
    p5, p95 = np.nanpercentile(v, [5, 95])
    return float(max(p95 - p5, 1e-6))


def calibrate(plain: list[dict], shifted: list[dict], key_map: dict[str, str] | None = None) -> QualityReference:
    """The reference from training rows as they are (``plain``) and under the shifts (``shifted``)."""
    s = stats_of(plain, key_map)
    rules: list[Rule] = []
    base = {r.statistic: r for r in DEFAULT_REFERENCE.rules}
    u = s["uncertainty"]
    rules.append(Rule("uncertainty", -math.inf, float(np.nanmin(u)), 1.0, reason_high=base["uncertainty"].reason_high))
    # The model was trained with augmentation spanning these shifts (speckle, gamma, equalisation...), so the
    # input statistics are judged against the training B-scans as they are *and* under the shifts: an input
    # the model was taught to handle is not "unlike the training data".
    seen = stats_of(plain + shifted, key_map)
    for name in ("noise", "intensity_median", "intensity_iqr"):
        v = seen[name]
        rules.append(replace(base[name], low=float(np.nanmin(v)), high=float(np.nanmax(v)), soft=_spread(v)))
    v = s["total_thickness_p95_um"]
    rules.append(
        replace(base["total_thickness_p95_um"], low=float(np.nanmin(v)), high=float(np.nanmax(v)), soft=_spread(v))
    )
    v = seen["saturation"]
    rules.append(replace(base["saturation"], high=float(np.nanmax(v)), soft=_spread(v)))
    rules.append(replace(base["axial_spacing"]))
    rules.append(replace(base["lateral_spacing"]))
    for name in ("fluid_outside_fraction", "edge_fraction", "missing_fraction"):
        rules.append(replace(base[name], high=float(np.nanmax(s[name])) + 0.10, soft=0.30))
    rules.append(replace(base["layer_thickness_deviation"], high=float(np.nanmax(s["layer_thickness_deviation"]))))
    rules.append(replace(base["mirror_disagreement"]))  # fitted by bench_mirror_check.py (needs the mirrored pass)
    reference = replace(DEFAULT_REFERENCE, rules=tuple(rules), source="calibrated on Duke Subject_01-06")
    # the uncertainty's soft width, then the flag threshold, on the shifted training subjects
    rows = plain + shifted
    dice = np.array([r["dice"] for r in rows])
    # The spacing weights can only be chosen where the network saw other spacings: a model that records its
    # training spacing sees every B-scan resampled to it, so the deviation is 0 on every row and the weights
    # of the base reference are kept (they matter for checkpoints without a spacing).
    spacing = np.array([spacing_deviation((r["axial_um"], r["lateral_um"]), reference.spacing_um) for r in rows])
    axial_choices = (0.25, 0.5, 1.0) if np.ptp(spacing[:, 0]) > 0.05 else (base["axial_spacing"].weight,)
    lateral_choices = (0.1, 0.25, 0.5, 1.0) if np.ptp(spacing[:, 1]) > 0.05 else (base["lateral_spacing"].weight,)
    # The uncertainty ramp must not reach zero quality within the range of the training B-scans (under the
    # shifts): a score stuck at 0 loses the order that ranks the B-scans to correct first.
    span = float(np.nanmax(stats_of(rows, key_map)["uncertainty"]) - np.nanmin(u))
    softs = [v for v in (0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6) if v >= span] or [0.6]
    best: tuple = (-2.0,)
    for soft in softs:
        for weight in (0.1, 0.2, 0.3, 0.5):
            for axial in axial_choices:
                for lateral in lateral_choices:
                    ref = _with_uncertainty_soft(reference, soft, weight, axial, lateral)
                    rho = spearmanr(score_rows(rows, ref, key_map)[0], dice).statistic
                    if rho > best[0]:
                        best = (rho, soft, weight, axial, lateral)
    reference = _with_uncertainty_soft(reference, *best[1:])
    flag = youden_threshold(score_rows(rows, reference, key_map)[0], dice, DEFAULT_REFERENCE.flag_below)
    return replace(reference, flag_below=flag)


def youden_threshold(scores: np.ndarray, dice: np.ndarray, default: float) -> float:
    """The flag threshold (scores rounded to 0.001) maximising Youden's J for "mean Dice < BAD_DICE";
    ``default`` when the rows hold no bad or no good B-scan."""
    bad = dice < BAD_DICE
    candidates = np.unique(np.round(scores, 3))
    j = [((scores < t)[bad].mean() - (scores < t)[~bad].mean(), t) for t in candidates if 0 < t < 1]
    return float(max(j)[1]) if j and bad.any() and (~bad).any() else default


def _with_uncertainty_soft(
    reference: QualityReference, soft: float, input_weight: float, axial_weight: float, lateral_weight: float
) -> QualityReference:
    weights = {"axial_spacing": axial_weight, "lateral_spacing": lateral_weight}
    rules = []
    for r in reference.rules:
        if r.statistic == "uncertainty":
            r = replace(r, soft=soft)
        elif r.statistic in weights:
            r = replace(r, weight=weights[r.statistic])
        elif r.statistic in INPUT_RULES:
            r = replace(r, weight=input_weight)
        rules.append(r)
    return replace(reference, rules=tuple(rules))


def _num(v: float) -> str:
    return "-math.inf" if v == -math.inf else "math.inf" if v == math.inf else f"{v:.4g}"


def describe(reference: QualityReference) -> str:
    """The reference as Python source for :data:`napari_octseg.quality.score.DEFAULT_REFERENCE` (rules, threshold)."""
    lines = [f"flag_below={reference.flag_below:.3f},", "rules=("]
    for r in reference.rules:
        args = [repr(r.statistic), _num(r.low), _num(r.high), _num(r.soft)]
        if r.reason_low:
            args.append(f"reason_low={r.reason_low!r}")
        if r.reason_high:
            args.append(f"reason_high={r.reason_high!r}")
        if r.weight != 1.0:
            args.append(f"weight={r.weight:g}")
        lines.append(f"    Rule({', '.join(args)}),")
    lines.append("),")
    return "\n".join(lines)

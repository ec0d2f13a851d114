"""Per-B-scan quality in [0, 1] with named reasons, and which B-scans to correct first.

A quality score is a product of factors, one per rule; each factor is 1 while its statistic lies in the
range seen on the training data and falls linearly to 0 over a "soft" margin beyond it:

    quality = prod_r (1 - penalty_r),   penalty_r = weight_r * clip(distance outside [low_r, high_r] / soft_r, 0, 1)

A rule whose penalty reaches :data:`REASON_PENALTY` of its weight names its reason ("high noise", "fluid outside the
retina"...). A B-scan is *flagged* when its quality is below :attr:`QualityReference.flag_below`. The
ranges are calibrated on the model's training subjects (``benchmarks/bench_quality.py --calibrate``
prints them); :data:`DEFAULT_REFERENCE` holds the values for the bundled model, documented in the README.

The quality never changes the labels: it only says which of them to trust.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from .stats import STATISTICS

#: A rule names its reason in a B-scan's list from this penalty on.
REASON_PENALTY = 0.25
#: Rules about the input (the image is unlike the training data), as opposed to the output.
INPUT_RULES = ("noise", "intensity_median", "intensity_iqr", "saturation", "axial_spacing", "lateral_spacing")
#: Derived statistics: ``|log2(pixel spacing as the network saw it / the model's)|``, axial and lateral.
SPACING_STATISTICS = ("axial_spacing", "lateral_spacing")


@dataclass(frozen=True)
class Rule:
    """One factor of the quality score.

    Attributes
    ----------
    statistic
        A key of :data:`~napari_octseg.quality.stats.STATISTICS`, or one of :data:`SPACING_STATISTICS`
        (``|log2(pixel spacing / the model's)|``).
    low, high
        The range with no penalty (``-inf`` / ``inf``: one-sided).
    soft
        Distance beyond the range at which the penalty reaches 1.
    reason_low, reason_high
        What a B-scan below / above the range is told.
    weight
        The largest penalty the rule can give (input statistics the model tolerates well get less than 1).
    """

    statistic: str
    low: float
    high: float
    soft: float
    reason_low: str = ""
    reason_high: str = ""
    weight: float = 1.0

    def penalty(self, values: np.ndarray) -> np.ndarray:
        """Penalty in [0, ``weight``] of each value (NaN: no penalty)."""
        v = np.asarray(values, dtype=np.float64)
        below = np.where(v < self.low, (self.low - v) / self.soft, 0.0)
        above = np.where(v > self.high, (v - self.high) / self.soft, 0.0)
        return self.weight * np.nan_to_num(np.clip(np.maximum(below, above), 0.0, 1.0), nan=0.0)

    def reason(self, value: float) -> str:
        return self.reason_low if value < self.low else self.reason_high


@dataclass(frozen=True)
class QualityReference:
    """What "like the training data" means for one model, and when to flag.

    Attributes
    ----------
    spacing_um
        (axial, lateral) pixel spacing the model was trained at, µm.
    rules
        The factors of the score.
    layer_thickness_um
        Class -> median thickness of that layer on the training labels, µm (for
        ``layer_thickness_deviation``).
    flag_below
        B-scans with a lower quality are flagged.
    flag_below_mirror
        The threshold when the mirror check ran (its rule lowers every score a little); ``None``: ``flag_below``.
    volume_flag_fraction
        A whole volume "looks out of distribution" when at least this fraction of its B-scans is flagged.
    source
        How the numbers were obtained.
    """

    spacing_um: tuple[float, float]
    rules: tuple[Rule, ...]
    layer_thickness_um: dict[int, float] = field(default_factory=dict)
    flag_below: float = 0.5
    volume_flag_fraction: float = 0.5
    source: str = ""
    flag_below_mirror: float | None = None

    def with_spacing(self, spacing_um: tuple[float, float]) -> QualityReference:
        return replace(self, spacing_um=(float(spacing_um[0]), float(spacing_um[1])))


#: Calibrated for the bundled model (the physical-scale model: every B-scan resampled to 3.87 x 11.3 µm) on Duke
#: Subject_01-06 (its training subjects; Subject_01 and 05 also under the controlled shifts of
#: benchmarks/_shifts.py) by benchmarks/bench_quality.py (_quality_calib.py): the ranges are those of the training
#: B-scans (the input statistics': as they are and under the shifts, which the training augmentation spans, so an
#: input the model was taught to handle is not called unlike its training data), the uncertainty width and the
#: input-rule weight maximise the Spearman correlation with the true Dice and the flag threshold Youden's J for
#: "mean Dice < 0.75" on those subjects. The spacing-rule weights are kept from the calibration of the previous
#: model, which saw B-scans at their native spacing (a checkpoint that records no training spacing still does).
#: Never fitted on the validation subjects 07-08.
DEFAULT_REFERENCE = QualityReference(
    spacing_um=(3.87, 11.3),
    rules=(
        Rule("uncertainty", -math.inf, 0.1383, 0.5, reason_high="uncertain segmentation"),
        Rule("noise", 0.0009582, 0.05922, 0.038, "unusually smooth (blurred or enlarged)", "high noise", 0.1),
        Rule("intensity_median", 0.004444, 0.4863, 0.4497, "unusually dark", "unusually bright", 0.1),
        Rule("intensity_iqr", 0.01081, 0.5569, 0.4804, "low contrast", "unusual contrast", 0.1),
        Rule("saturation", -math.inf, 0.1189, 0.104, reason_high="saturated", weight=0.1),
        Rule("axial_spacing", -math.inf, 0.32, 0.68, reason_high="axial pixel spacing unlike the model's"),
        Rule(
            "lateral_spacing", -math.inf, 0.32, 0.68, reason_high="lateral pixel spacing unlike the model's", weight=0.1
        ),
        Rule("fluid_outside_fraction", -math.inf, 0.128, 0.3, reason_high="fluid outside the retina"),
        Rule("edge_fraction", -math.inf, 0.1, 0.3, reason_high="retina cut off at the image edge"),
        Rule("missing_fraction", -math.inf, 0.1, 0.3, reason_high="layers missing"),
        Rule("total_thickness_p95_um", 301.9, 731.2, 363.8, "retina implausibly thin", "retina implausibly thick"),
        Rule("layer_thickness_deviation", -math.inf, 1.048, 1.0, reason_high="a layer out of its usual thickness"),
        # only with the mirror check (segment(mirror_check=True)); NaN, no penalty, without it. Range start: the
        # least disagreement of an unshifted training B-scan; width and weight: benchmarks/bench_mirror_check.py
        Rule(
            "mirror_disagreement",
            -math.inf,
            0.021,
            0.05,
            reason_high="labels change when the B-scan is mirrored",
            weight=0.5,
        ),
    ),
    # typical thickness per layer class (µm), close to the medians on Subject_01-06's labels
    # (38.7, 71.6, 34.8, 31.0, 89.0, 31.0, 27.1)
    layer_thickness_um={1: 40.0, 2: 80.0, 3: 35.0, 4: 30.0, 5: 90.0, 6: 30.0, 7: 25.0},
    flag_below=0.768,
    flag_below_mirror=0.511,  # Youden's J with the mirror rule, same training rows (bench_mirror_check.py)
    volume_flag_fraction=0.5,
    source="calibrated on Duke Subject_01-06 for the bundled physical-scale model (benchmarks/bench_quality.py)",
)


def reference_for_model(
    pixel_spacing_um: tuple[float, float] | None, base: QualityReference | None = None
) -> QualityReference:
    """The reference for a checkpoint: ``base`` (:data:`DEFAULT_REFERENCE`) at the spacing it was trained at.

    ``pixel_spacing_um`` is the checkpoint's (axial, lateral) training spacing in µm
    (``LoadedModel.pixel_spacing_um``); ``None`` keeps the Duke training spacing.
    """
    reference = base or DEFAULT_REFERENCE
    if pixel_spacing_um is None:
        return reference
    values = [float(v) for v in pixel_spacing_um]
    if len(values) == 2 and all(math.isfinite(v) and v > 0 for v in values):
        return reference.with_spacing((values[0], values[1]))
    return reference


@dataclass
class QualityReport:
    """Per-B-scan quality of a segmentation.

    Attributes
    ----------
    score
        float64 (n_bscans,) in [0, 1]; 1 = nothing unusual.
    reasons
        Per B-scan, the named reasons, worst first (empty when nothing is unusual).
    statistics
        Statistic name -> float64 (n_bscans,) measurement (see :data:`STATISTICS`, plus :data:`SPACING_STATISTICS`).
    penalties
        Rule statistic -> float64 (n_bscans,) penalty in [0, 1].
    flag_below
        The threshold the flags use.
    volume_flag_fraction
        Fraction of flagged B-scans from which the whole volume is out of distribution.
    """

    score: np.ndarray
    reasons: list[list[str]]
    statistics: dict[str, np.ndarray]
    penalties: dict[str, np.ndarray]
    flag_below: float = 0.5
    volume_flag_fraction: float = 0.5

    @property
    def flagged(self) -> np.ndarray:
        """bool (n_bscans,): quality below the threshold."""
        return np.asarray(self.score) < self.flag_below

    @property
    def volume_out_of_distribution(self) -> bool:
        """Whether so many B-scans are flagged that the whole volume looks unlike the training data."""
        n = len(self.score)
        return n > 0 and int(self.flagged.sum()) >= max(1, math.ceil(self.volume_flag_fraction * n))

    def summary(self) -> dict:
        """JSON-serialisable record for the labels sidecar."""
        return {
            "score": [round(float(s), 4) for s in self.score],
            "flagged": [int(i) for i in np.flatnonzero(self.flagged)],
            "reasons": self.reasons,
            "flag_below": self.flag_below,
            "volume_out_of_distribution": self.volume_out_of_distribution,
            "mean": round(float(np.mean(self.score)), 4) if len(self.score) else None,
            "min": round(float(np.min(self.score)), 4) if len(self.score) else None,
        }


def spacing_deviation(spacing_um: tuple[float, float] | None, reference_um: tuple[float, float]) -> tuple[float, float]:
    """``|log2(spacing / reference)|`` for (axial, lateral); 0 where the spacing is unknown."""
    if spacing_um is None:
        return (0.0, 0.0)
    devs = [abs(math.log2(s / r)) if s > 0 and r > 0 else 0.0 for s, r in zip(spacing_um, reference_um)]
    return (devs[0], devs[1])


def quality_from_statistics(
    statistics: dict[str, np.ndarray],
    spacing_um: tuple[float, float] | None = None,
    reference: QualityReference = DEFAULT_REFERENCE,
) -> QualityReport:
    """Combine per-B-scan statistics into a :class:`QualityReport`.

    Parameters
    ----------
    statistics
        Each name of :data:`STATISTICS` -> float (n_bscans,), as
        :func:`~napari_octseg.quality.stats.bscan_statistics` returns.
    spacing_um
        (axial, lateral) spacing of the B-scans *as the network saw them*, µm; ``None`` when unknown (no
        penalty: the caller says that the scale is unknown).
    reference
        The model's reference ranges.
    """
    missing = [s for s in STATISTICS if s not in statistics]
    if missing:
        raise ValueError(f"missing statistics: {', '.join(missing)}")
    n = len(np.asarray(statistics[STATISTICS[0]]))
    stats = {k: np.asarray(v, dtype=np.float64).reshape(n) for k, v in statistics.items()}
    axial, lateral = spacing_deviation(spacing_um, reference.spacing_um)
    stats["axial_spacing"], stats["lateral_spacing"] = np.full(n, axial), np.full(n, lateral)
    score = np.ones(n)
    penalties: dict[str, np.ndarray] = {}
    for rule in reference.rules:
        p = rule.penalty(stats[rule.statistic])
        penalties[rule.statistic] = p
        score *= 1.0 - p
    reasons: list[list[str]] = []
    for i in range(n):
        named = sorted(
            (
                (penalties[r.statistic][i] / r.weight if r.weight > 0 else 0.0, r.reason(stats[r.statistic][i]))
                for r in reference.rules
            ),
            key=lambda t: -t[0],
        )
        reasons.append([text for p, text in named if p >= REASON_PENALTY and text])
    # the mirror check ran where its statistic was measured: its rule lowers every score, so its own threshold
    mirrored = bool(np.isfinite(stats.get("mirror_disagreement", np.nan)).any())
    flag_below = reference.flag_below
    if mirrored and reference.flag_below_mirror is not None:
        flag_below = reference.flag_below_mirror
    return QualityReport(score, reasons, stats, penalties, flag_below, reference.volume_flag_fraction)


def correction_candidates(quality: np.ndarray | QualityReport, k: int, min_gap: int | None = None) -> list[int]:
    """The ``k`` B-scans to correct first: lowest quality, spread across the volume.

    Greedy: take the lowest-quality B-scan, then the lowest among those at least ``min_gap`` B-scans
    from every one already taken; when none is left that far, the gap halves. Ties go to the lower
    index. Neighbouring B-scans look alike, so one corrected B-scan teaches the model about its
    neighbours as well: spreading the picks covers more of what the model gets wrong.

    Parameters
    ----------
    quality
        float (n_bscans,) quality per B-scan, or a :class:`QualityReport`.
    k
        How many to propose (at most n_bscans).
    min_gap
        Minimum distance between picks; default ``max(1, n_bscans // (2 * k))``.

    Returns
    -------
    list of int
        B-scan indices in the order to correct them (worst first).
    """
    q = np.asarray(quality.score if isinstance(quality, QualityReport) else quality, dtype=np.float64)
    n = len(q)
    k = max(0, min(int(k), n))
    if k == 0:
        return []
    gap = max(1, n // (2 * k)) if min_gap is None else max(1, int(min_gap))
    order = [int(i) for i in np.lexsort((np.arange(n), np.nan_to_num(q, nan=-1.0)))]
    picked: list[int] = []
    while len(picked) < k:
        for i in order:
            if len(picked) == k:
                break
            if i not in picked and all(abs(i - j) >= gap for j in picked):
                picked.append(i)
        gap = max(1, gap // 2) if gap > 1 else gap
    return picked


def flag_wording(reasons: Sequence[Sequence[str]]) -> tuple[str, list[str]]:
    """How to word flagged B-scans, from their reasons: ``("look unlike the training data", ...)`` when every one
    of the (up to 3) commonest reasons is about the input, else ``("look unreliable", ...)``; and those reasons.
    """
    counts: dict[str, int] = {}
    for bscan in reasons:
        for reason in bscan:
            counts[reason] = counts.get(reason, 0) + 1
    common = sorted(counts, key=lambda r: (-counts[r], r))[:3]
    input_reasons = {r.reason_low for r in DEFAULT_REFERENCE.rules if r.statistic in INPUT_RULES} | {
        r.reason_high for r in DEFAULT_REFERENCE.rules if r.statistic in INPUT_RULES
    }
    kind = "look unlike the training data" if common and set(common) <= input_reasons else "look unreliable"
    return kind, common


def warning_line(report: QualityReport, name: str = "") -> str | None:
    """One line naming the flagged B-scans and their commonest reasons, or ``None`` when none is flagged.

    E.g. ``"B-scans 3, 7 of 49 look unlike the training data: high noise; check before using their thickness"``.
    """
    flagged = [int(i) for i in np.flatnonzero(report.flagged)]
    if not flagged:
        return None
    kind, common = flag_wording([report.reasons[i] for i in flagged])
    n = len(report.score)
    shown = ", ".join(str(i) for i in flagged[:12]) + (", ..." if len(flagged) > 12 else "")
    noun, verb = ("B-scan", kind.replace("look ", "looks ", 1)) if len(flagged) == 1 else ("B-scans", kind)
    why = ", ".join(common) if common else "low quality"
    prefix = f"{name}: " if name else ""
    return f"{prefix}{noun} {shown} of {n} {verb}: {why}; check before using their thickness"


class QualityAccumulator:
    """Collects per-batch statistics during segmentation and turns them into a :class:`QualityReport`.

    Parameters
    ----------
    axial_um
        Axial spacing of the labels' grid in µm (the model's when the volume's is unknown).
    network_spacing_um
        (axial, lateral) spacing of the B-scans as the network saw them, or ``None`` when unknown.
    reference
        The model's reference.
    """

    def __init__(
        self,
        axial_um: float,
        network_spacing_um: tuple[float, float] | None,
        reference: QualityReference = DEFAULT_REFERENCE,
    ) -> None:
        self.axial_um = float(axial_um)
        self.network_spacing_um = network_spacing_um
        self.reference = reference
        self._parts: list[dict[str, np.ndarray]] = []

    @classmethod
    def for_grid(
        cls,
        native_um: tuple[float, float] | None,
        model_grid_um: tuple[float, float] | None,
        trained_um: tuple[float, float] | None,
    ) -> QualityAccumulator:
        """Bookkeeping for a segmentation whose labels are on the native grid (``native_um``, or unknown).

        The network saw the model's grid spacing (``model_grid_um``) when the B-scans were resampled to it,
        the native spacing when the checkpoint records none, and an unknown one otherwise (no penalty; the
        segmentation's notes say that the scale was assumed). ``trained_um`` is the checkpoint's training
        spacing (``None``: the Duke spacing of :data:`DEFAULT_REFERENCE`).
        """
        reference = reference_for_model(trained_um)
        seen = model_grid_um if native_um is not None and model_grid_um is not None else native_um
        axial = native_um[0] if native_um is not None else reference.spacing_um[0]
        return cls(axial, seen, reference)

    def add(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        uncertainty: np.ndarray,
        mirrored_labels: np.ndarray | None = None,
    ) -> None:
        """Measure one batch: normalised network input, labels and uncertainty (n, depth, width), and the
        labels of the mirrored B-scans mirrored back when the mirror check ran."""
        from .stats import bscan_statistics

        self._parts.append(
            bscan_statistics(
                images, labels, uncertainty, self.axial_um, self.reference.layer_thickness_um, mirrored_labels
            )
        )

    def report(self) -> QualityReport:
        """The quality of every B-scan added so far."""
        stats = {k: np.concatenate([p[k] for p in self._parts]) if self._parts else np.zeros(0) for k in STATISTICS}
        return quality_from_statistics(stats, self.network_spacing_um, self.reference)


__all__ = [
    "DEFAULT_REFERENCE",
    "QualityAccumulator",
    "QualityReference",
    "QualityReport",
    "REASON_PENALTY",
    "Rule",
    "SPACING_STATISTICS",
    "correction_candidates",
    "flag_wording",
    "quality_from_statistics",
    "reference_for_model",
    "spacing_deviation",
    "warning_line",
]

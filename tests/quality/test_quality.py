"""Quality: per-pixel uncertainty, per-B-scan statistics, the score with reasons, the correction ranking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_octseg.quality.score import (
    QualityReference,
    QualityReport,
    Rule,
    correction_candidates,
    quality_from_statistics,
    spacing_deviation,
    warning_line,
)
from napari_octseg.quality.stats import (
    STATISTICS,
    anatomy_statistics,
    input_statistics,
    noise_level,
    pixel_uncertainty,
    uncertainty_statistics,
)


def test_pixel_uncertainty_entropy_and_margin_exact():
    p = np.array(
        [
            [0.25, 0.25, 0.25, 0.25],  # uniform: maximal
            [1.0, 0.0, 0.0, 0.0],  # certain
            [0.5, 0.5, 0.0, 0.0],  # two classes tie
            [0.7, 0.2, 0.1, 0.0],
        ],
        dtype=np.float32,
    ).T[None]  # (1, C=4, 4 pixels)
    ent = pixel_uncertainty(p, "entropy")
    mar = pixel_uncertainty(p, "margin")
    assert ent.shape == (1, 4) and ent.dtype == np.float32
    expected_last = -(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(4)
    np.testing.assert_allclose(ent[0], [1.0, 0.0, 0.5, expected_last], atol=1e-6)
    np.testing.assert_allclose(mar[0], [1.0, 0.0, 1.0, 0.5], atol=1e-6)
    with pytest.raises(ValueError):
        pixel_uncertainty(p, "variance")


def test_noise_level_ignores_planes_and_measures_a_checkerboard():
    yy, xx = np.mgrid[0:6, 0:7].astype(np.float32)
    assert noise_level(np.full((6, 7), 3.0))[0] == 0.0
    assert noise_level(2 * yy + 0.5 * xx)[0] == pytest.approx(0.0, abs=1e-6)
    checker = np.where((yy + xx) % 2 == 0, 1.0, -1.0)
    assert noise_level(checker)[0] == pytest.approx(math.sqrt(math.pi / 2) * 16 / 6)


def test_input_statistics_exact():
    x = np.zeros((1, 4, 5), np.float32)
    x[0, 0] = 1.0  # 5 of 20 pixels saturated
    x[0, 1] = 0.5
    s = input_statistics(x)
    assert s["saturation"][0] == pytest.approx(0.25)
    assert s["intensity_median"][0] == pytest.approx(0.25)  # between the 10th (0) and 11th (0.5) of 20 values
    assert s["intensity_iqr"][0] == pytest.approx(0.625)  # q75 at rank 14.25: 0.5 + 0.25 x 0.5; q25 = 0


def _column() -> np.ndarray:
    col = np.zeros(20, np.uint8)
    for k, c in enumerate(range(1, 8)):
        col[5 + 2 * k : 7 + 2 * k] = c
    col[19] = 8
    return col


def test_anatomy_statistics_exact():
    lab = np.stack([_column()] * 4, axis=1)[None]  # (1, 20, 4)
    lab[0, 2, 1] = 9  # fluid in the vitreous of A-scan 1
    lab[0, 0, 2] = 1  # retina at the top edge of A-scan 2
    lab[0, :, 3] = 0  # no retina in A-scan 3
    ref = {c: 4.0 for c in range(1, 8)}
    ref[1] = 16.0
    s = anatomy_statistics(lab, axial_um=2.0, reference_thickness_um=ref)
    assert s["fluid_outside_fraction"][0] == pytest.approx(0.25)
    assert s["edge_fraction"][0] == pytest.approx(0.25)
    assert s["missing_fraction"][0] == pytest.approx(0.25)
    assert s["total_thickness_p95_um"][0] == pytest.approx(np.percentile([28.0, 30.0, 30.0], 95))
    assert s["layer_thickness_deviation"][0] == pytest.approx(2.0)  # NFL 4 µm against 16 µm: log2 4
    none = anatomy_statistics(np.zeros((1, 5, 3), np.uint8), 2.0)
    assert math.isnan(none["total_thickness_p95_um"][0]) and none["missing_fraction"][0] == 1.0


def test_anatomy_missing_outer_layer_counts():
    lab = np.stack([_column()] * 2, axis=1)[None]
    lab[0, lab[0, :, 1] == 6, 1] = 5  # EZ+OS absent in A-scan 1
    assert anatomy_statistics(lab, 1.0)["missing_fraction"][0] == pytest.approx(0.5)


def test_uncertainty_statistics_band_only():
    lab = np.zeros((1, 6, 2), np.uint8)
    lab[0, 2:4] = 3  # retina rows 2-3 in both A-scans
    u = np.zeros((1, 6, 2), np.float32)
    u[0, 0] = 1.0  # vitreous: outside the band, ignored
    u[0, 2, 0] = 0.8
    u[0, 3, 1] = 0.2
    s = uncertainty_statistics(u, lab)
    assert s["uncertainty"][0] == pytest.approx(0.25)
    assert s["uncertain_fraction"][0] == pytest.approx(0.25)
    empty = uncertainty_statistics(u, np.zeros_like(lab))
    assert empty["uncertainty"][0] == pytest.approx(u.mean())


def test_rule_penalty_ramps_and_reasons():
    rule = Rule("noise", 1.0, 2.0, 0.5, "smooth", "noisy")
    np.testing.assert_allclose(rule.penalty(np.array([0.0, 0.75, 1.5, 2.25, 9.0, np.nan])), [1, 0.5, 0, 0.5, 1, 0])
    assert rule.reason(0.5) == "smooth" and rule.reason(3.0) == "noisy"


def _stats(n: int, **values: list[float]) -> dict[str, np.ndarray]:
    s = {k: np.zeros(n) for k in STATISTICS}
    for k, v in values.items():
        s[k] = np.asarray(v, dtype=float)
    return s


def test_quality_from_statistics_product_and_reasons():
    ref = QualityReference(
        spacing_um=(4.0, 10.0),
        rules=(
            Rule("uncertainty", -math.inf, 0.1, 0.2, reason_high="uncertain segmentation"),
            Rule("noise", -math.inf, 1.0, 1.0, reason_high="high noise"),
            Rule("axial_spacing", -math.inf, 0.5, 0.5, reason_high="axial pixel spacing unlike the model's"),
            Rule(
                "lateral_spacing",
                -math.inf,
                0.5,
                1.0,
                reason_high="lateral pixel spacing unlike the model's",
                weight=0.5,
            ),
        ),
        flag_below=0.5,
    )
    report = quality_from_statistics(_stats(3, uncertainty=[0.1, 0.2, 0.3], noise=[0.0, 1.5, 3.0]), None, ref)
    np.testing.assert_allclose(report.score, [1.0, 0.5 * 0.5, 0.0])
    assert report.reasons[0] == []
    assert set(report.reasons[1]) == {"uncertain segmentation", "high noise"}
    assert report.flagged.tolist() == [False, True, True]
    assert report.volume_out_of_distribution  # 2 of 3 flagged >= half
    # spacing: twice the model's axial spacing is log2(2) = 1 -> penalty 1
    doubled = quality_from_statistics(_stats(1), (8.0, 10.0), ref)
    assert doubled.score[0] == 0.0 and doubled.reasons[0] == ["axial pixel spacing unlike the model's"]
    # lateral x4: log2 4 = 2, (2 - 0.5) / 1 -> clipped to 1, times the weight 0.5
    wide = quality_from_statistics(_stats(1), (4.0, 40.0), ref)
    assert wide.score[0] == pytest.approx(0.5) and wide.reasons[0] == ["lateral pixel spacing unlike the model's"]
    assert spacing_deviation(None, (4.0, 10.0)) == (0.0, 0.0)
    assert spacing_deviation((2.0, 40.0), (4.0, 10.0)) == pytest.approx((1.0, 2.0))
    with pytest.raises(ValueError):
        quality_from_statistics({"uncertainty": np.zeros(2)}, None, ref)


def test_correction_candidates_lowest_first_and_spread():
    q = np.array([0.9, 0.1, 0.15, 0.2, 0.9, 0.9, 0.9, 0.9, 0.3, 0.9])
    # k=2 -> gap 10 // 4 = 2: 1 first; 2 is too close; 3 is 2 away -> taken
    assert correction_candidates(q, 2) == [1, 3]
    assert correction_candidates(q, 2, min_gap=5) == [1, 8]
    assert correction_candidates(q, 3, min_gap=1) == [1, 2, 3]
    # more than fit at the gap: the gap halves until k are found
    assert sorted(correction_candidates(q, 10)) == list(range(10))
    assert correction_candidates(q, 0) == [] and correction_candidates(np.array([]), 3) == []
    report = QualityReport(q, [[] for _ in q], {}, {})
    assert correction_candidates(report, 1) == [1]
    assert correction_candidates(np.array([0.5, 0.5, 0.5]), 1) == [0]  # ties: lower index


def test_warning_line_names_bscans_and_reasons():
    q = np.array([0.9, 0.2, 0.95, 0.1])
    reasons = [[], ["high noise"], [], ["high noise", "fluid outside the retina"]]
    report = QualityReport(q, reasons, {}, {}, flag_below=0.5)
    assert warning_line(report, "a.vol") == (
        "a.vol: B-scans 1, 3 of 4 look unreliable: high noise, fluid outside the retina; "
        "check before using their thickness"
    )
    only_input = QualityReport(q, [[], ["high noise"], [], ["high noise"]], {}, {}, flag_below=0.5)
    assert warning_line(only_input) == (
        "B-scans 1, 3 of 4 look unlike the training data: high noise; check before using their thickness"
    )
    assert warning_line(QualityReport(np.ones(3), [[]] * 3, {}, {})) is None
    one = QualityReport(np.array([0.9, 0.2]), [[], ["high noise"]], {}, {}, flag_below=0.5)
    assert warning_line(one) == (
        "B-scan 1 of 2 looks unlike the training data: high noise; check before using their thickness"
    )

"""Metrics: exact values on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest

from napari_octseg.core.errors import LabelError
from napari_octseg.learning.metrics import confusion_matrix, format_table, score_rows, scores


def test_confusion_matrix_counts_true_by_predicted():
    target = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    cm = confusion_matrix(pred, target, 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])


def test_confusion_matrix_ignore_index_and_torch_input():
    torch = pytest.importorskip("torch")
    target = torch.tensor([0, 255, 1, 1])
    pred = torch.tensor([0, 1, 1, 0])
    cm = confusion_matrix(pred, target, 2, ignore_index=255)
    np.testing.assert_array_equal(cm, [[1, 0], [1, 1]])


@pytest.mark.parametrize(
    "pred, target",
    [(np.array([0, 3]), np.array([0, 1])), (np.array([0, 1]), np.array([0, -1])), (np.zeros(3), np.zeros(2))],
)
def test_confusion_matrix_rejects_bad_labels(pred, target):
    with pytest.raises(LabelError):
        confusion_matrix(pred.astype(int), target.astype(int), 3)


def test_scores_exact_values():
    # 10 classes; class 1: tp 3, fp 1, fn 1 -> dice 6/8, iou 3/5; class 9: tp 1, fn 1 -> dice 2/3.
    cm = np.zeros((10, 10), np.int64)
    cm[0, 0] = 10
    cm[1, 1] = 3
    cm[1, 2] = 1
    cm[0, 1] = 1
    cm[9, 9] = 1
    cm[9, 8] = 1
    cm[8, 8] = 4
    s = scores(cm)
    assert s["pixel_accuracy"] == pytest.approx(18 / 21)
    assert s["dice"][1] == pytest.approx(0.75)
    assert s["iou"][1] == pytest.approx(0.6)
    assert s["accuracy"][1] == pytest.approx(0.75)
    assert s["dice"][9] == pytest.approx(2 / 3)
    assert s["dice"][2] == 0.0  # predicted but never true
    assert np.isnan(s["dice"][3])  # absent from truth and prediction: left out of the means
    # scored mean over classes present among 1-7 and 9: classes 1, 2, 9
    assert s["mean_dice_scored"] == pytest.approx((0.75 + 0.0 + 2 / 3) / 3)
    assert s["mean_dice_layers"] == pytest.approx(0.375)
    # background (0 and 8) reported apart: class 0 dice 20/21, class 8 dice 8/9
    assert s["background_dice"] == pytest.approx((20 / 21 + 8 / 9) / 2)


def test_perfect_prediction_scores_one():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 10, (20, 30))
    s = scores(confusion_matrix(lab, lab, 10))
    assert s["pixel_accuracy"] == 1.0
    assert s["mean_dice_scored"] == 1.0
    np.testing.assert_array_equal(s["iou"], np.ones(10))


def test_table_and_rows_keep_background_apart():
    lab = np.arange(10).repeat(4)
    s = scores(confusion_matrix(lab, lab, 10))
    rows = score_rows(s)
    assert [r["group"] for r in rows[:10]].count("background") == 2
    names = [r["name"] for r in rows if r["group"] == "summary"]
    assert "mean layers 1-7 + fluid 9" in names
    text = format_table(s)
    assert text.index("background (not in the means)") > text.index("fluid")
    assert "choroid" in text.split("background (not in the means)")[1]


def test_boundary_errors_are_signed_per_boundary_and_skip_gaps():
    from napari_octseg.learning import boundary_errors

    truth = np.zeros((3, 2, 4), np.float32)
    truth[1], truth[2] = 10.0, 20.0
    pred = truth.copy()
    pred[0] += 1.0  # the top boundary 1 row too deep everywhere ...
    pred[2, 0] -= 2.0  # ... the bottom one 2 rows too high on the first B-scan
    pred[1, 1, 0] = np.nan  # a gap is left out
    mae, bias, total = boundary_errors(pred, truth)
    np.testing.assert_allclose(mae, [1.0, 0.0, 1.0])
    np.testing.assert_allclose(bias, [1.0, 0.0, -1.0])
    assert total == pytest.approx(-2.0)  # thinner by 1 everywhere and by 2 more on half the A-scans

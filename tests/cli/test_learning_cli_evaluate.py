"""``octseg evaluate``: pure metrics from label files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_octseg.cli import main


def _labels():
    truth = np.zeros((2, 6, 5), np.uint8)
    truth[:, 2:4] = 1
    truth[:, 4:] = 8
    pred = truth.copy()
    pred[0, 2, 0] = 0  # one NFL pixel missed
    return pred, truth


def test_evaluate_prints_table_and_writes_csv(tmp_path, capsys):
    pred, truth = _labels()
    tifffile.imwrite(tmp_path / "pred.tif", pred)
    np.savez(tmp_path / "truth.npz", labels=truth, images=np.zeros_like(truth))
    out = tmp_path / "scores.csv"
    args = ["evaluate", "--pred", str(tmp_path / "pred.tif"), "--truth", str(tmp_path / "truth.npz"), "--csv", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "NFL" in text and "background (not in the means)" in text
    rows = out.read_text().splitlines()
    nfl = next(r for r in rows if r.startswith("1,NFL"))
    # NFL: 20 true pixels, 19 found, none extra -> Dice 38/39
    assert float(nfl.split(",")[4]) == pytest.approx(38 / 39)
    # refuses to overwrite without --force
    assert main(args) == 1


@pytest.mark.parametrize("case", ["shape", "class", "pickle", "missing", "float", "nokey"])
def test_evaluate_bad_input_one_line_error(tmp_path, capsys, case):
    pred, truth = _labels()
    np.save(tmp_path / "truth.npy", truth)
    p = tmp_path / "pred.npy"
    if case == "shape":
        np.save(p, pred[:1])
    elif case == "class":
        np.save(p, np.where(pred == 8, 12, pred).astype(np.uint8))
    elif case == "pickle":
        np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif case == "float":
        np.save(p, pred.astype(np.float32))
    elif case == "nokey":
        p = tmp_path / "pred.npz"
        np.savez(p, other=pred)
    truth_arg = tmp_path / ("absent.npy" if case == "missing" else "truth.npy")
    assert main(["evaluate", "--pred", str(p), "--truth", str(truth_arg)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("octseg evaluate: error:") and "\n" not in err and "Traceback" not in err

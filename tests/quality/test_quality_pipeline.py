"""Uncertainty and quality from ``segment`` and ``octseg segment``: same pass, same labels, files and warning."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
import torch

from napari_octseg.cli import main
from napari_octseg.core.progress import run_generator
from napari_octseg.core.volume import OctVolume
from napari_octseg.inference import segment
from napari_octseg.quality import STATISTICS, pixel_uncertainty
from napari_octseg.quality.report import QC_COLUMNS, quality_from_sidecar


def test_uncertainty_in_the_same_pass_leaves_the_labels_unchanged(rng, varied_model):
    volume = OctVolume(data=rng.random((5, 37, 53)).astype(np.float32), scale_um=(50.0, 3.87, 11.3))
    plain = run_generator(segment(volume, varied_model, batch_size=2, device="cpu"))
    full = run_generator(
        segment(volume, varied_model, batch_size=2, device="cpu", return_probabilities=True, return_uncertainty=True)
    )
    assert plain.uncertainty is None and plain.quality is None
    np.testing.assert_array_equal(plain.labels, full.labels)
    assert full.uncertainty.shape == (5, 37, 53) and full.uncertainty.dtype == np.float16
    expected = pixel_uncertainty(full.probabilities.astype(np.float32), "margin")
    np.testing.assert_allclose(full.uncertainty.astype(np.float32), expected, atol=4e-3)
    q = full.quality
    assert q.score.shape == (5,) and np.all((q.score >= 0) & (q.score <= 1))
    assert set(STATISTICS) <= set(q.statistics) and len(q.reasons) == 5
    assert q.statistics["axial_spacing"][0] == pytest.approx(0.0)  # the model's own spacing
    assert q.statistics["lateral_spacing"][0] == pytest.approx(0.0)
    # batch size changes nothing
    again = run_generator(segment(volume, varied_model, batch_size=5, device="cpu", return_uncertainty=True))
    np.testing.assert_allclose(again.quality.score, q.score, atol=1e-6)


def test_pixel_spacing_far_from_the_models_is_a_reason(rng, varied_model):
    volume = OctVolume(data=rng.random((2, 37, 53)).astype(np.float32), scale_um=(50.0, 3.87 / 4, 11.3))
    q = run_generator(segment(volume, varied_model, device="cpu", return_uncertainty=True)).quality
    assert q.statistics["axial_spacing"][0] == pytest.approx(2.0)
    assert all("axial pixel spacing unlike the model's" in r for r in q.reasons)
    assert q.flagged.all() and q.volume_out_of_distribution


def test_cli_writes_qc_table_uncertainty_and_one_warning_line(tmp_path, oct_inputs, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    args = ["segment", str(oct_inputs / "vol.npy"), "--out", str(out), "--model", str(tiny_checkpoint)]
    assert main([*args, "--uncertainty", "--quiet", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir() if p.name != "octseg-manifest.jsonl") == [
        "vol.labels.json",
        "vol.labels.tif",
        "vol.qc.csv",
        "vol.uncertainty.tif",
    ]
    labels = tifffile.imread(out / "vol.labels.tif")
    unc = tifffile.imread(out / "vol.uncertainty.tif")
    assert unc.shape == labels.shape == (3, 40, 36) and unc.dtype == np.float16
    assert float(unc.min()) >= 0 and float(unc.max()) <= 1
    info = json.loads((out / "vol.labels.json").read_text())
    scores = quality_from_sidecar(info, 3)
    assert scores is not None and info["qc_file"] == "vol.qc.csv" and info["uncertainty_file"] == "vol.uncertainty.tif"
    rows = list(csv.DictReader((out / "vol.qc.csv").open()))
    assert tuple(rows[0]) == QC_COLUMNS and [int(r["bscan"]) for r in rows] == [0, 1, 2]
    np.testing.assert_allclose([float(r["quality"]) for r in rows], scores, atol=1e-4)
    flagged = [int(r["bscan"]) for r in rows if r["flagged"] == "1"]
    assert flagged == info["quality"]["flagged"]
    warnings = [line for line in captured.err.splitlines() if "check before using" in line]
    if flagged:  # a random network: its uncertainty is far above the training range
        assert len(warnings) == 1 and warnings[0].startswith("octseg: warning: vol.npy: B-scan")
        assert warnings[0].endswith("check before using their thickness")
    else:
        assert warnings == []


def test_cli_without_uncertainty_writes_no_uncertainty_file(tmp_path, oct_inputs, tiny_checkpoint):
    out = tmp_path / "out"
    args = ["segment", str(oct_inputs / "bscan.npy"), "--out", str(out), "--model", str(tiny_checkpoint), "--quiet"]
    assert main(args) == 0
    assert sorted(p.name for p in out.iterdir() if p.name != "octseg-manifest.jsonl") == [
        "bscan.labels.json",
        "bscan.labels.tif",
        "bscan.qc.csv",
    ]


def test_existing_uncertainty_file_is_kept_and_nothing_written(tmp_path, oct_inputs, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "vol.uncertainty.tif").write_bytes(b"user's file")
    args = ["segment", str(oct_inputs / "vol.npy"), "--out", str(out), "--model", str(tiny_checkpoint), "--quiet"]
    assert main([*args, "--uncertainty"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already exists" in err
    assert sorted(p.name for p in out.iterdir() if p.name != "octseg-manifest.jsonl") == ["vol.uncertainty.tif"]
    assert (out / "vol.uncertainty.tif").read_bytes() == b"user's file"


def test_bundled_reference_flags_the_circle_scan_not_the_line_scan(vol_dir):
    """The shipped calibration on the two genuine Heidelberg files: the circle scan (a pattern the model was not
    made for) is flagged with anatomical reasons, the macular line scan is not (measured: quality 0.00 vs 0.89)."""
    from napari_octseg.io import read
    from napari_octseg.models import load_model

    model = load_model(None, device="cpu")
    circle = run_generator(segment(read(vol_dir / "valid.vol"), model, device="cpu", return_uncertainty=True))
    line = run_generator(segment(read(vol_dir / "Willis_B_716_0.vol"), model, device="cpu", return_uncertainty=True))
    assert circle.quality.flagged.all() and circle.quality.score.max() < 0.2
    assert "layers missing" in circle.quality.reasons[0]
    assert not line.quality.flagged.any() and line.quality.score.min() > 0.7


def test_margin_uncertainty_equals_top2_of_the_softmax():
    from napari_octseg.forward import margin_uncertainty

    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(3, 10, 7, 5), dim=1)
    probs[0, :, 0, 0] = 0.1  # a ten-way tie: uncertainty 1
    probs[1, :, 0, 0] = 0.0
    probs[1, 4, 0, 0] = 1.0  # certain: uncertainty 0
    top2 = probs.topk(2, dim=1).values
    expected = (1.0 - (top2[:, 0] - top2[:, 1])).clamp(0.0, 1.0)
    got = margin_uncertainty(probs)
    assert torch.equal(got, expected)
    assert got[0, 0, 0] == 1.0 and got[1, 0, 0] == 0.0
    np.testing.assert_allclose(got.numpy(), pixel_uncertainty(probs.numpy(), "margin"), atol=1e-6)


def test_mirror_check_measures_how_the_mirrored_labels_differ(rng, varied_model):
    """segment(mirror_check=True): the labels are those of the plain pass; mirror_disagreement is 1 - the mean
    Dice against the labels of the mirrored volume mirrored back (the same as segmenting it separately), NaN
    and no penalty without the check."""
    from napari_octseg.quality.stats import label_agreement

    volume = OctVolume(data=rng.random((3, 37, 53)).astype(np.float32), scale_um=(50.0, 3.87, 11.3))
    # the raw argmax (a random network's ordered decoding finds no layers at all, so nothing could change)
    kwargs = {"batch_size": 2, "device": "cpu", "return_uncertainty": True, "window": False, "ordered": False}
    plain = run_generator(segment(volume, varied_model, **kwargs))
    checked = run_generator(segment(volume, varied_model, mirror_check=True, **kwargs))
    np.testing.assert_array_equal(plain.labels, checked.labels)
    assert np.isnan(plain.quality.statistics["mirror_disagreement"]).all()
    assert plain.quality.penalties["mirror_disagreement"].tolist() == [0.0, 0.0, 0.0]
    mirrored = OctVolume(data=np.ascontiguousarray(volume.data[:, :, ::-1]), scale_um=volume.scale_um)
    back = run_generator(segment(mirrored, varied_model, batch_size=2, device="cpu", ordered=False)).labels[:, :, ::-1]
    expected = 1.0 - label_agreement(checked.labels, back)
    np.testing.assert_allclose(checked.quality.statistics["mirror_disagreement"], expected)
    assert 0 < expected.max() <= 1  # a random network's labels do change when mirrored
    assert np.all(checked.quality.score <= plain.quality.score + 1e-12)
    # the mirror rule lowers every score a little: its own flag threshold
    from napari_octseg.quality import DEFAULT_REFERENCE

    assert plain.quality.flag_below == DEFAULT_REFERENCE.flag_below
    assert checked.quality.flag_below == DEFAULT_REFERENCE.flag_below_mirror < DEFAULT_REFERENCE.flag_below
    worst = int(np.argmax(expected))
    if checked.quality.penalties["mirror_disagreement"][worst] >= 0.25 * 0.5:
        assert "labels change when the B-scan is mirrored" in checked.quality.reasons[worst]


def test_label_agreement():
    from napari_octseg.quality.stats import label_agreement

    a = np.zeros((2, 4, 4), np.uint8)
    a[:, 1] = 1
    a[:, 2] = 2
    assert label_agreement(a, a).tolist() == [1.0, 1.0]
    b = a.copy()
    b[0, 2] = 1  # B-scan 0: class 1 covers both rows, class 2 is gone
    np.testing.assert_allclose(label_agreement(a, b), [(2 * 4 / 12 + 0.0) / 2, 1.0])
    assert label_agreement(np.zeros((3, 3), np.uint8), np.zeros((3, 3), np.uint8)).tolist() == [1.0]
    with pytest.raises(ValueError, match="different shapes"):
        label_agreement(a, a[:, :3])


def test_cli_mirror_check_fills_its_qc_column(tmp_path, oct_inputs, tiny_checkpoint):
    base = ["segment", str(oct_inputs / "vol.npy"), "--model", str(tiny_checkpoint), "--quiet", "--device", "cpu"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--mirror-check"]) == 0
    plain = list(csv.DictReader((tmp_path / "a" / "vol.qc.csv").open()))
    checked = list(csv.DictReader((tmp_path / "b" / "vol.qc.csv").open()))
    assert [r["mirror_disagreement"] for r in plain] == ["", "", ""]
    assert all(0.0 <= float(r["mirror_disagreement"]) <= 1.0 for r in checked)
    np.testing.assert_array_equal(
        tifffile.imread(tmp_path / "a" / "vol.labels.tif"), tifffile.imread(tmp_path / "b" / "vol.labels.tif")
    )

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
    made for) is flagged with anatomical reasons, the macular line scan is not (measured: quality 0.00 vs 0.79)."""
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

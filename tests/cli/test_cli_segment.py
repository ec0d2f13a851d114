"""``octseg segment``: outputs, sidecar, no overwrite, and one-line errors with nothing half-written."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch

from napari_octseg.batch import MANIFEST_NAME
from napari_octseg.cli import main
from napari_octseg.core.progress import run_generator
from napari_octseg.inference import segment
from napari_octseg.models import load_checkpoint
from napari_octseg.models.registry import bundled_path


def _files(folder):
    """Output files, the run manifest aside (tests/cli/test_batch_cli.py checks it)."""
    return sorted(p.name for p in folder.iterdir() if p.name != MANIFEST_NAME) if folder.exists() else []


def test_writes_labels_and_sidecar_per_input(tmp_path, oct_inputs, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    paths = [oct_inputs / "vol.npy", oct_inputs / "bscan.npy", oct_inputs / "stack.tif"]
    code = main(["segment", *map(str, paths), "--out", str(out), "--model", str(tiny_checkpoint), "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    assert _files(out) == sorted(
        f"{stem}.{ext}" for stem in ("vol", "bscan", "stack") for ext in ("labels.tif", "labels.json", "qc.csv")
    )
    model = load_checkpoint(tiny_checkpoint)
    for path, shape in zip(paths, [(3, 40, 36), (1, 33, 47), (2, 32, 32)]):
        labels = tifffile.imread(out / f"{path.stem}.labels.tif")
        if labels.ndim == 2:  # tifffile squeezes a single page on reading
            labels = labels[None]
        assert labels.shape == shape and labels.dtype == np.uint8
        from napari_octseg.io import read

        expected = run_generator(segment(read(path), model, device="cpu")).labels
        np.testing.assert_array_equal(labels, expected)
        info = json.loads((out / f"{path.stem}.labels.json").read_text())
        assert info["shape"] == list(shape) and info["class_names"][1] == "NFL"
        assert info["format"] == "napari-octseg labels" and info["format_version"] == 2
        assert info["source"]["file"] == str(path.resolve()) and info["file"] == f"{path.stem}.labels.tif"
        assert info["source"]["name"] == path.stem
        assert info["model"]["source"] == str(tiny_checkpoint) and info["model"]["name"] == tiny_checkpoint.stem
        assert info["model"]["short_hash"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()[:12]
        assert info["edits"]["edited_bscans"] == [] and len(info["edits"]["bscan_hashes"]) == shape[0]
        assert info["model"]["training"] == {"data": "none (random test model)", "epochs": 2}
        assert info["device"] == "cpu" and info["seconds"] >= 0
        assert "scale_um" in info and sum(info["pixel_counts"].values()) == int(np.prod(shape))
    assert "3 of 3 inputs segmented" in capsys.readouterr().out


def test_refuses_to_overwrite_without_force(tmp_path, oct_inputs, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    args = ["segment", str(oct_inputs / "vol.npy"), "--out", str(out), "--model", str(tiny_checkpoint), "--quiet"]
    assert main(args) == 0
    (out / "vol.labels.tif").write_bytes(b"user's file")
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already exists" in err and "--force" in err
    assert (out / "vol.labels.tif").read_bytes() == b"user's file"
    assert main([*args, "--force"]) == 0
    assert tifffile.imread(out / "vol.labels.tif").shape == (3, 40, 36)
    assert _files(out) == ["vol.labels.json", "vol.labels.tif", "vol.qc.csv"]  # no temporary files left


def test_bad_inputs_are_reported_and_the_rest_processed(tmp_path, oct_inputs, tiny_checkpoint, capsys):
    (oct_inputs / "foreign.vol").write_bytes(os.urandom(4096))
    np.save(oct_inputs / "nan.npy", np.full((2, 16, 16), np.nan, np.float32))
    (oct_inputs / "empty.tif").write_bytes(b"")
    out = tmp_path / "out"
    names = ["foreign.vol", "nan.npy", "vol.npy", "missing.npy", "empty.tif"]
    args = ["--out", str(out), "--model", str(tiny_checkpoint), "--quiet"]
    code = main(["segment", *(str(oct_inputs / n) for n in names), *args])
    assert code == 1
    captured = capsys.readouterr()
    # the quality warning of the one input that was segmented is not an error
    lines = [line for line in captured.err.strip().splitlines() if not line.startswith("octseg: warning:")]
    assert len(lines) == 4 and all(line.startswith("octseg segment: error: ") for line in lines)
    assert "foreign.vol" in lines[0] and "NaN" in lines[1] and "missing.npy" in lines[2] and "empty.tif" in lines[3]
    assert "Traceback" not in captured.err
    assert _files(out) == ["vol.labels.json", "vol.labels.tif", "vol.qc.csv"]
    assert "1 of 5 inputs segmented" in captured.out


def test_duplicate_output_names_are_refused(tmp_path, oct_inputs, tiny_checkpoint, capsys):
    other = tmp_path / "other"
    other.mkdir()
    np.save(other / "vol.npy", np.zeros((1, 16, 16), np.float32))
    out = tmp_path / "out"
    code = main(["segment", str(oct_inputs / "vol.npy"), str(other / "vol.npy"), "--out", str(out),
                 "--model", str(tiny_checkpoint), "--quiet"])  # fmt: skip
    assert code == 1 and "same output name" in capsys.readouterr().err
    assert tifffile.imread(out / "vol.labels.tif").shape == (3, 40, 36)  # the first input's, kept


class _WritesAFile:
    """Unpickling this would create a file: a stand-in for a checkpoint that runs code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_model_file_that_would_run_code_is_refused(tmp_path, oct_inputs, tiny_checkpoint, capsys):
    marker = tmp_path / "pwned.txt"
    evil = tmp_path / "evil.pt"
    payload = torch.load(tiny_checkpoint, weights_only=True)
    payload["training"] = {"note": _WritesAFile(marker)}
    torch.save(payload, evil)
    out = tmp_path / "out"
    code = main(["segment", str(oct_inputs / "vol.npy"), "--out", str(out), "--model", str(evil), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "refused for safety" in err
    assert not marker.exists() and not out.exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 garbage", b"\x80\x02K\x01."])
def test_invalid_model_files_are_refused(tmp_path, oct_inputs, content, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    out = tmp_path / "out"
    assert main(["segment", str(oct_inputs / "vol.npy"), "--out", str(out), "--model", str(bad), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("octseg segment: error: ") and err.count("\n") == 0 and "checkpoint" in err
    assert not out.exists()


def test_absent_device_and_bad_options(tmp_path, oct_inputs, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    base = ["segment", str(oct_inputs / "vol.npy"), "--out", str(out), "--model", str(tiny_checkpoint), "--quiet"]
    if not torch.cuda.is_available():
        assert main([*base, "--device", "cuda"]) == 1
        assert "not available" in capsys.readouterr().err
    assert main([*base, "--batch-size", "0"]) == 1
    assert "--batch-size" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert (
        main(
            ["segment", str(oct_inputs / "vol.npy"), "--out", str(tmp_path / "afile"), "--model", str(tiny_checkpoint)]
        )
        == 1
    )
    assert "not a folder" in capsys.readouterr().err
    assert not out.exists()


def test_missing_bundled_model_is_one_line(tmp_path, oct_inputs, capsys, monkeypatch):
    from napari_octseg.models import registry

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "no-weights")  # as if the weights were not installed
    assert main(["segment", str(oct_inputs / "vol.npy"), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing" in err


def test_command_line_entry_point_prints_no_traceback(tmp_path, oct_inputs, tiny_checkpoint):
    (oct_inputs / "foreign.vol").write_bytes(b"\x00" * 100)
    out = tmp_path / "out"
    inputs = [str(oct_inputs / "foreign.vol"), str(oct_inputs / "vol.npy")]
    cmd = [sys.executable, "-m", "napari_octseg", "segment", *inputs, "--out", str(out)]
    cmd += ["--model", str(tiny_checkpoint), "--device", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and "foreign.vol" in proc.stderr
    assert _files(out) == ["vol.labels.json", "vol.labels.tif", "vol.qc.csv"]


@pytest.mark.slow
def test_bundled_model_on_duke_reproduces_its_recorded_validation_scores(tmp_path, duke_dir):
    """End to end: file -> octseg segment -> TIFF gives the Dice the training run recorded."""
    if not bundled_path().is_file():
        pytest.skip("the bundled model is not installed yet")
    record = load_checkpoint(bundled_path()).training
    subjects = (record.get("split") or {}).get("val_subjects")
    expected = (record.get("val_metrics") or {}).get("val_mean_dice_scored")
    if not subjects or expected is None:
        pytest.skip("the bundled model's training record names no validation subjects / scores")
    from napari_octseg.learning.metrics import confusion_matrix, scores

    paths = [duke_dir / f"Subject_{s:02d}.npz" for s in subjects]
    assert main(["segment", *map(str, paths), "--out", str(tmp_path), "--device", "cpu", "--quiet"]) == 0
    cm = 0
    for path in paths:
        truth = np.load(path)["labels"]
        cm = cm + confusion_matrix(tifffile.imread(tmp_path / f"{path.stem}.labels.tif"), truth, 10)
    assert scores(cm)["mean_dice_scored"] == pytest.approx(expected, abs=2e-3)

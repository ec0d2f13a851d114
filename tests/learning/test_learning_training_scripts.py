"""training/train.py and training/evaluate.py end to end on a tiny fake Duke folder."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_octseg.models import load_checkpoint

TRAINING = Path(__file__).resolve().parents[2] / "training"


def _module(name):
    spec = importlib.util.spec_from_file_location(f"training_{name}", TRAINING / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def fake_duke(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "duke"
    folder.mkdir()
    for s in (1, 2, 3):
        lab = np.repeat(np.clip(np.arange(48) // 5, 0, 9), 40).reshape(48, 40).astype(np.uint8)
        labels = np.stack([lab] * 2)
        images = (labels * 25 + rng.integers(0, 20, labels.shape)).astype(np.uint8)
        np.savez(folder / f"Subject_{s:02d}.npz", images=images, labels=labels)
    return folder


def test_train_kfold_and_evaluate(fake_duke, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    train = _module("train")
    out = tmp_path / "run"
    argv = [
        "--data",
        str(fake_duke),
        "--out",
        str(out),
        "--widths",
        "4",
        "8",
        "8",
        "--crop",
        "32",
        "32",
        "--train-subjects",
        "1",
        "2",
        "--val-subjects",
        "3",
        "--epochs",
        "1",
        "--batch-size",
        "2",
        "--repeats",
        "1",
        "--kfold",
        "3",
        "--fold",
        "1",
        "--device",
        "cpu",
    ]
    monkeypatch.setattr(sys, "argv", ["train.py", *argv])
    assert train.main(argv) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["results"][0]["fold"] == 1 and run["config"]["widths"] == [4, 8, 8]
    ckpt = load_checkpoint(out / "fold1" / "best.pt")
    assert ckpt.training["split"]["val_subjects"] == [2]  # folds: [1], [2], [3]
    assert ckpt.training["split"]["train_subjects"] == [1, 3]
    assert "--kfold" in ckpt.training["command"]
    assert train.main(argv) == 1  # an existing run folder is not overwritten without --force

    evaluate = _module("evaluate")
    ev = evaluate.evaluate(str(out / "fold1" / "best.pt"), fake_duke, [2])
    assert set(ev["per_subject"]) == {"Subject_02"}
    assert 0.0 <= ev["pooled"]["pixel_accuracy"] <= 1.0
    evaluate.write_csv(tmp_path / "scores.csv", ev)
    rows = list(csv.DictReader(open(tmp_path / "scores.csv")))
    assert {r["scope"] for r in rows} == {"pooled", "Subject_02"}
    evaluate.plot_curves(out / "fold1" / "log.csv", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"

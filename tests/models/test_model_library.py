"""The model library: named checkpoints in a visible folder, found by name by the registry and the CLI."""

from __future__ import annotations

import shutil
from datetime import datetime

import pytest

from napari_octseg.cli import main
from napari_octseg.core.errors import CheckpointError
from napari_octseg.models.library import (
    default_model_name,
    library_dir,
    library_models,
    library_path,
    model_name,
)
from napari_octseg.models.registry import load_model, resolve_model_path


@pytest.fixture
def library(tmp_path, monkeypatch):
    folder = tmp_path / "library"
    monkeypatch.setenv("OCTSEG_MODEL_DIR", str(folder))
    return folder


def test_names_and_folder(library, monkeypatch):
    assert library_dir() == library and library_models() == {}
    assert model_name(" my model/v2.pt ") == "my_model_v2"
    with pytest.raises(CheckpointError):
        model_name(" / ")
    assert default_model_name("Subject_07.npz", datetime(2026, 12, 2, 4, 12)) == "Subject_07-20261202-0412"
    assert library_path("a b") == library / "a_b.pt"
    monkeypatch.delenv("OCTSEG_MODEL_DIR")
    assert library_dir().name == "models" and "napari-octseg" in str(library_dir())


def test_registry_and_cli_find_a_library_model_by_name(library, tiny_checkpoint, tmp_path, oct_inputs, capsys):
    library.mkdir()
    shutil.copy(tiny_checkpoint, library / "lab-v1.pt")
    assert library_models() == {"lab-v1": library / "lab-v1.pt"}
    assert resolve_model_path("lab-v1") == library / "lab-v1.pt"
    assert resolve_model_path(str(tiny_checkpoint)) == tiny_checkpoint  # a file path stays a file path
    out = tmp_path / "out"
    code = main(["segment", str(oct_inputs / "vol.npy"), "--out", str(out), "--model", "lab-v1", "--device", "cpu"])
    assert code == 0 and (out / "vol.labels.tif").is_file()
    with pytest.raises(CheckpointError, match="no model of that name in the library"):
        load_model("lab-v2")
    assert main(["segment", str(oct_inputs / "vol.npy"), "--out", str(tmp_path / "o2"), "--model", "lab-v2"]) != 0
    assert "lab-v1" in capsys.readouterr().err

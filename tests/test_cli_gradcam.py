"""``octseg gradcam``: heatmap TIFF + JSON per input, no overwrite, one-line errors, nothing half-written."""

from __future__ import annotations

import errno
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch

from napari_octseg.cli import main
from napari_octseg.core.progress import run_generator
from napari_octseg.explain import gradcam
from napari_octseg.io import read
from napari_octseg.models import load_checkpoint
from napari_octseg.models.registry import bundled_path

torch.set_num_threads(1)


def _files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _cli(*args):
    return main(["gradcam", *map(str, args)])


def test_writes_heatmaps_and_sidecar(tmp_path, oct_inputs, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    paths = [oct_inputs / "vol.npy", oct_inputs / "bscan.npy"]
    code = _cli(
        *paths, "--out", out, "--model", tiny_checkpoint, "--device", "cpu", "--classes", "1,INL,9", "--target", "image"
    )
    assert code == 0, capsys.readouterr().err
    assert _files(out) == ["bscan.gradcam.json", "bscan.gradcam.tif", "vol.gradcam.json", "vol.gradcam.tif"]
    loaded = load_checkpoint(tiny_checkpoint)
    for path, shape in zip(paths, [(3, 3, 40, 36), (1, 3, 33, 47)], strict=True):
        heat = tifffile.imread(out / f"{path.stem}.gradcam.tif").reshape(shape)
        assert heat.dtype == np.float32  # ImageJ's 32-bit; float16 is never the default
        expected = run_generator(gradcam(read(path), loaded, [1, 3, 9], target="image", device="cpu"))
        np.testing.assert_array_equal(heat, expected.heatmaps.astype(np.float32).transpose(1, 0, 2, 3))
        assert float(heat.max()) > 0
        meta = json.loads((out / f"{path.stem}.gradcam.json").read_text())
        assert meta["classes"] == [1, 3, 9] and meta["class_names"] == ["NFL", "INL", "fluid"]
        assert meta["layer"] == "decoder.2" and meta["target"] == "image" and meta["axes"] == "ZCYX"
        assert meta["shape"] == list(shape) and meta["model"] == str(tiny_checkpoint)
        assert meta["stats"]["INL"]["max"] == pytest.approx(expected.stats[3]["max"], rel=1e-6)
        assert meta["stats"]["fluid"]["mean"] == pytest.approx(expected.stats[9]["mean"], rel=1e-6)


def test_uint8_output_and_final_layer(tmp_path, oct_inputs, tiny_checkpoint):
    out = tmp_path / "out"
    args = [oct_inputs / "vol.npy", "--out", out, "--model", tiny_checkpoint, "--device", "cpu", "--quiet"]
    assert _cli(*args, "--dtype", "uint8", "--layer", "final", "--target", "image") == 0
    heat = tifffile.imread(out / "vol.gradcam.tif")
    assert heat.dtype == np.uint8 and heat.shape == (3, 10, 40, 36) and heat.max() == 255
    assert json.loads((out / "vol.gradcam.json").read_text())["layer"] == "final"


def test_existing_outputs_kept_unless_force(tmp_path, oct_inputs, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    args = [oct_inputs / "vol.npy", "--out", out, "--model", tiny_checkpoint, "--device", "cpu", "--quiet"]
    assert _cli(*args) == 0
    (out / "vol.gradcam.json").write_text("mine")
    assert _cli(*args) == 1
    assert "already exists" in capsys.readouterr().err
    assert (out / "vol.gradcam.json").read_text() == "mine"
    assert _cli(*args, "--force") == 0
    assert json.loads((out / "vol.gradcam.json").read_text())["layer"] == "decoder.2"


def test_failing_json_write_with_force_keeps_the_earlier_outputs(
    tmp_path, oct_inputs, tiny_checkpoint, capsys, monkeypatch
):
    """The TIFF is renamed into place only once the JSON is complete too: a dying JSON write loses nothing."""
    out = tmp_path / "out"
    out.mkdir()
    earlier = {"vol.gradcam.tif": b"earlier heatmaps", "vol.gradcam.json": b"earlier sidecar"}
    for name, content in earlier.items():
        (out / name).write_bytes(content)
    real = pathlib.Path.write_text

    def half_then_disk_full(self, data, *args, **kwargs):
        real(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pathlib.Path, "write_text", half_then_disk_full)
    code = _cli(
        oct_inputs / "vol.npy", "--out", out, "--model", tiny_checkpoint, "--device", "cpu", "--quiet", "--force"
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0]
    assert _files(out) == sorted(earlier)  # no temporaries either
    assert {name: (out / name).read_bytes() for name in earlier} == earlier


def test_bad_input_is_one_line_and_writes_nothing_for_it(tmp_path, oct_inputs, tiny_checkpoint, capsys):
    bad = np.ones((2, 20, 20), np.float32)
    bad[1, 4, 4] = np.nan
    np.save(oct_inputs / "nan.npy", bad)
    out = tmp_path / "out"
    code = _cli(
        oct_inputs / "nan.npy",
        oct_inputs / "vol.npy",
        "--out",
        out,
        "--model",
        tiny_checkpoint,
        "--device",
        "cpu",
        "--quiet",
    )
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nan.npy" in err[0] and "NaN" in err[0]
    assert _files(out) == ["vol.gradcam.json", "vol.gradcam.tif"]  # no temp files, nothing for nan.npy


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--classes", "1,macula"], "unknown class"),
        (["--classes", "1,,2"], "empty item"),
        (["--layer", "encoder.3"], "unknown Grad-CAM layer"),
        (["--batch-size", "0"], "batch-size"),
    ],
)
def test_bad_options_stop_before_anything_is_written(tmp_path, oct_inputs, tiny_checkpoint, capsys, extra, message):
    out = tmp_path / "out"
    code = _cli(oct_inputs / "vol.npy", "--out", out, "--model", tiny_checkpoint, "--device", "cpu", *extra)
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
    assert not out.exists()


def test_missing_model_file_is_one_line(tmp_path, oct_inputs, capsys):
    code = _cli(oct_inputs / "vol.npy", "--out", tmp_path / "out", "--model", tmp_path / "nope.pt")
    assert code == 1
    assert "no such model file" in capsys.readouterr().err


@pytest.mark.skipif(bundled_path().is_file(), reason="the bundled model is installed")
def test_missing_bundled_model_is_explained(tmp_path, oct_inputs, capsys):
    assert _cli(oct_inputs / "vol.npy", "--out", tmp_path / "out") == 1
    assert "bundled model" in capsys.readouterr().err


def test_console_entry_point(tmp_path, oct_inputs, tiny_checkpoint):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "napari_octseg", "gradcam", str(oct_inputs / "bscan.npy"), "--out", str(out)]
    proc = subprocess.run([*cmd, "--model", str(tiny_checkpoint), "--device", "cpu"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert _files(out) == ["bscan.gradcam.json", "bscan.gradcam.tif"]

"""``octseg gradcam``: heatmap TIFF + JSON per input, no overwrite, one-line errors, nothing half-written."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch

from napari_octseg.batch import MANIFEST_NAME
from napari_octseg.cli import main
from napari_octseg.core.progress import run_generator
from napari_octseg.explain import DEFAULT_LAYER, gradcam
from napari_octseg.io import read
from napari_octseg.io.heatmaps import read_heatmaps_file
from napari_octseg.models import load_checkpoint

torch.set_num_threads(1)


def _files(folder):
    """Output files, the run manifest aside (tests/cli/test_batch_cli.py checks it)."""
    return sorted(p.name for p in folder.iterdir() if p.name != MANIFEST_NAME) if folder.exists() else []


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
    for path, shape in zip(paths, [(3, 3, 40, 36), (3, 1, 33, 47)], strict=True):
        raw = tifffile.imread(out / f"{path.stem}.gradcam.tif")
        assert raw.dtype == np.float32  # ImageJ opens float32, not float16
        heat = read_heatmaps_file(out / f"{path.stem}.gradcam.tif").heatmaps
        assert heat.shape == shape
        expected = run_generator(gradcam(read(path), loaded, [1, 3, 9], target="image", device="cpu"))
        np.testing.assert_array_equal(heat, expected.heatmaps.astype(np.float32))
        assert float(heat.max()) > 0
        meta = json.loads((out / f"{path.stem}.gradcam.json").read_text())
        assert meta["format"] == "napari-octseg heatmaps" and meta["format_version"] == 2
        assert meta["classes"] == [1, 3, 9] and meta["class_names"] == ["NFL", "INL", "fluid"]
        assert meta["layer"] == DEFAULT_LAYER and meta["target"] == "image" and meta["tiff_axes"] == "ZCYX"
        assert meta["shape"] == list(shape) and meta["model"]["source"] == str(tiny_checkpoint)
        assert meta["model"]["sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
        assert meta["source"]["file"] == str(path.resolve()) and meta["source"]["name"] == path.stem
        assert meta["stats"]["INL"]["max"] == pytest.approx(expected.stats[3]["max"], rel=1e-6)
        assert meta["stats"]["fluid"]["mean"] == pytest.approx(expected.stats[9]["mean"], rel=1e-6)
        window = {"bscans": expected.window_bscans, "rerun_full_height": expected.window_reruns}
        assert meta["retina_window"] == window


def test_uint8_output_and_final_layer(tmp_path, oct_inputs, tiny_checkpoint):
    out = tmp_path / "out"
    args = [oct_inputs / "vol.npy", "--out", out, "--model", tiny_checkpoint, "--device", "cpu", "--quiet"]
    assert _cli(*args, "--dtype", "uint8", "--layer", "final", "--target", "image") == 0
    heat = tifffile.imread(out / "vol.gradcam.tif")
    assert heat.dtype == np.uint8 and heat.shape == (3, 10, 40, 36) and heat.max() == 255  # ZCYX for ImageJ
    assert json.loads((out / "vol.gradcam.json").read_text())["layer"] == "final"
    back = read_heatmaps_file(out / "vol.gradcam.tif")
    assert back.heatmaps.shape == (10, 3, 40, 36) and back.heatmaps.max() == 1.0


def test_uint16_output_reads_back_within_one_step(tmp_path, oct_inputs, tiny_checkpoint):
    out = tmp_path / "out"
    args = [oct_inputs / "vol.npy", "--out", out, "--model", tiny_checkpoint, "--device", "cpu", "--quiet"]
    assert _cli(*args, "--dtype", "uint16", "--classes", "1,2", "--target", "image") == 0
    assert tifffile.imread(out / "vol.gradcam.tif").dtype == np.uint16
    back = read_heatmaps_file(out / "vol.gradcam.tif")
    loaded = load_checkpoint(tiny_checkpoint)
    expected = run_generator(gradcam(read(oct_inputs / "vol.npy"), loaded, [1, 2], target="image", device="cpu"))
    np.testing.assert_allclose(back.heatmaps, expected.heatmaps.astype(np.float32), atol=0.6 / 65535)


def test_existing_outputs_kept_unless_force(tmp_path, oct_inputs, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    args = [oct_inputs / "vol.npy", "--out", out, "--model", tiny_checkpoint, "--device", "cpu", "--quiet"]
    assert _cli(*args) == 0
    (out / "vol.gradcam.json").write_text("mine")
    assert _cli(*args) == 1
    assert "already exists" in capsys.readouterr().err
    assert (out / "vol.gradcam.json").read_text() == "mine"
    assert _cli(*args, "--force") == 0
    assert json.loads((out / "vol.gradcam.json").read_text())["layer"] == DEFAULT_LAYER


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


def test_missing_bundled_model_is_explained(tmp_path, oct_inputs, capsys, monkeypatch):
    from napari_octseg.models import registry

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "no-weights")  # as if the weights were not installed
    assert _cli(oct_inputs / "vol.npy", "--out", tmp_path / "out") == 1
    assert "bundled model" in capsys.readouterr().err


def test_console_entry_point(tmp_path, oct_inputs, tiny_checkpoint):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "napari_octseg", "gradcam", str(oct_inputs / "bscan.npy"), "--out", str(out)]
    proc = subprocess.run([*cmd, "--model", str(tiny_checkpoint), "--device", "cpu"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert _files(out) == ["bscan.gradcam.json", "bscan.gradcam.tif"]


def test_region_table_and_imagej_tags(tmp_path, oct_inputs, tiny_checkpoint, capsys):
    """--region explains one rectangle of one B-scan; --table writes the per-class CSV; the TIFF is an
    ImageJ hyperstack (B-scans, classes)."""
    import csv

    out = tmp_path / "out"
    args = [oct_inputs / "vol.npy", "--out", out, "--model", tiny_checkpoint, "--device", "cpu", "--quiet"]
    assert _cli(*args, "--region", "1,5,4,30,20", "--table", tmp_path / "t.csv", "--dtype", "uint16") == 0
    with tifffile.TiffFile(out / "vol.gradcam.tif") as tif:
        assert tif.is_imagej and tif.imagej_metadata["slices"] == 3 and tif.imagej_metadata["channels"] == 10
        heat = tif.asarray()
    assert heat.dtype == np.uint16 and heat.shape == (3, 10, 40, 36)
    assert heat[1].max() > 0 and heat[0].max() == 0 and heat[2].max() == 0
    meta = json.loads((out / "vol.gradcam.json").read_text())
    assert meta["target"] == "region" and meta["region"] == "1,5,4,30,20" and meta["bscans_explained"] == [1]
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert len(rows) == 10 and rows[3]["name"] == "INL" and rows[3]["target"] == "region"
    assert set(rows[0]) >= {"input", "class", "layer", "weight_sum", "weight_max", "max", "mean"}


def test_heatmap_tiff_carries_the_micrometre_scale():
    from napari_octseg.explain.export import heatmap_tiff

    heat = np.random.default_rng(0).random((2, 3, 8, 6)).astype(np.float16)
    data, options = heatmap_tiff(heat, (120.0, 3.9, 11.3), "float32")
    assert data.dtype == np.float32 and data.shape == (3, 2, 8, 6)
    buf = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"octseg_heat_{os.getpid()}.tif"
    try:
        tifffile.imwrite(buf, data, photometric="minisblack", **options)
        with tifffile.TiffFile(buf) as tif:
            page = tif.pages[0]
            x_res = page.tags["XResolution"].value
            y_res = page.tags["YResolution"].value
            assert x_res[0] / x_res[1] == pytest.approx(1 / 11.3, rel=1e-4)
            assert y_res[0] / y_res[1] == pytest.approx(1 / 3.9, rel=1e-4)
            assert tif.imagej_metadata["unit"] == "um" and tif.imagej_metadata["spacing"] == pytest.approx(120.0)
    finally:
        buf.unlink(missing_ok=True)
    assert "resolution" not in heatmap_tiff(heat, None, "uint8")[1]


@pytest.mark.parametrize(
    ("region", "message"),
    [("5,0,0,10,10", "B-scan 5 does not exist"), ("0,0,0,50,10", "outside"), ("0,3,3,3,9", "empty"), ("0,1", "B,Y0")],
)
def test_bad_region_is_one_line_and_writes_nothing(tmp_path, oct_inputs, tiny_checkpoint, capsys, region, message):
    out = tmp_path / "out"
    code = _cli(oct_inputs / "vol.npy", "--out", out, "--model", tiny_checkpoint, "--device", "cpu", "--region", region)
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "vol.npy" in err[0]
    assert _files(out) == []

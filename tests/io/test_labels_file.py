"""The labels and heatmap file format (one owner, io.labels / io.heatmaps): round trips, µm tags that
other tools read, the edit record, sidecars written before, and the reader's quick decline of foreign files."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import tifffile

from napari_octseg.core.errors import LabelError, OctsegError
from napari_octseg.io.heatmaps import read_heatmaps_file, write_heatmaps_file
from napari_octseg.io.labels import is_labels_file, read_labels_file, write_labels_file
from napari_octseg.io.provenance import edit_record, edited_bscans, model_identity
from napari_octseg.io.sniff import looks_like_oct

SCALE = (120.0, 3.87, 11.3)


@pytest.fixture
def labels(rng):
    return rng.integers(0, 10, (4, 30, 26)).astype(np.uint8)


def test_round_trip_keeps_scale_names_source_model_and_edits(tmp_path, labels):
    model = tmp_path / "mymodel.pt"
    model.write_bytes(b"weights")
    auto = labels.copy()
    labels[1, 3, 3] = (labels[1, 3, 3] + 1) % 10
    tif, sidecar = write_labels_file(
        tmp_path / "S01.labels.tif",
        labels,
        scale_um=SCALE,
        source={"file": "/data/S01.vol", "name": "S01", "laterality": "OS"},
        model=str(model),
        edits=edit_record(auto),
    )
    assert sidecar.name == "S01.labels.json"
    info = json.loads(sidecar.read_text())
    assert info["format"] == "napari-octseg labels" and info["format_version"] == 2
    assert info["model"]["name"] == "mymodel" and info["model"]["short_hash"] == model_identity(model)["short_hash"]
    assert info["edits"]["edited_bscans"] == [1]
    found = read_labels_file(tif)
    np.testing.assert_array_equal(found.labels, labels)
    assert found.scale_um == pytest.approx(SCALE) and found.class_names[6] == "EZ+OS"
    assert found.edited_bscans == [1] and edited_bscans(found.labels, found.edits) == [1]
    assert found.info["source"]["laterality"] == "OS"
    # the TIFF alone (sidecar lost) still reads back completely: the sidecar is embedded
    sidecar.unlink()
    alone = read_labels_file(tif)
    assert alone.scale_um == pytest.approx(SCALE) and alone.edited_bscans == [1] and is_labels_file(tif)


def test_tiff_carries_micron_resolution_tags_for_fiji(tmp_path, labels):
    tif, _ = write_labels_file(tmp_path / "a.labels.tif", labels, scale_um=SCALE)
    with tifffile.TiffFile(tif) as t:
        page = t.pages[0]
        assert page.dtype == np.uint8 and t.is_imagej
        x_num, x_den = page.tags["XResolution"].value
        y_num, y_den = page.tags["YResolution"].value
        assert x_den / x_num == pytest.approx(SCALE[2], rel=1e-4)  # µm per pixel along the A-scans
        assert y_den / y_num == pytest.approx(SCALE[1], rel=1e-4)  # µm per pixel in depth
        assert t.imagej_metadata["unit"] == "um" and t.imagej_metadata["spacing"] == pytest.approx(SCALE[0])
        assert t.series[0].axes == "ZYX"


def test_unknown_scale_is_written_as_unknown(tmp_path, labels):
    tif, sidecar = write_labels_file(tmp_path / "b.labels.tif", labels)
    assert json.loads(sidecar.read_text())["scale_um"] is None
    assert read_labels_file(tif).scale_um is None
    with tifffile.TiffFile(tif) as t:
        assert "unit" not in t.imagej_metadata


def test_no_overwrite_and_bad_labels(tmp_path, labels):
    tif, _ = write_labels_file(tmp_path / "c.labels.tif", labels)
    before = tif.read_bytes()
    with pytest.raises(OctsegError, match="already exists"):
        write_labels_file(tif, labels[:2])
    assert tif.read_bytes() == before
    with pytest.raises(LabelError, match="0..255"):
        write_labels_file(tmp_path / "d.labels.tif", labels.astype(np.int32) + 300)
    assert not (tmp_path / "d.labels.tif").exists() and not (tmp_path / "d.labels.json").exists()


def test_sidecars_written_before_still_read(tmp_path, labels):
    """format 1 (octseg segment before the one schema): input/labels_file/model.source keys."""
    tif = tmp_path / "old.labels.tif"
    tifffile.imwrite(tif, labels, photometric="minisblack", metadata={"axes": "ZYX"})
    old = {
        "shape": list(labels.shape),
        "class_names": ["bg", "a", "b", "c", "d", "e", "f", "g", "h", "i"],
        "pixel_counts": {},
        "scale_um": list(SCALE),
        "package_version": "0.1.0",
        "model": {"source": "/gone/model.pt", "training": {"epochs": 3}},
        "input": "/data/old.vol",
        "labels_file": tif.name,
        "laterality": "OD",
        "scan_pattern": "volume",
    }
    tif.with_suffix(".json").write_text(json.dumps(old))
    found = read_labels_file(tif)
    assert found.scale_um == pytest.approx(SCALE) and found.class_names[1] == "a"
    assert found.edits is None and found.edited_bscans is None
    assert found.info["source"]["file"] == "/data/old.vol" and found.info["source"]["laterality"] == "OD"
    assert found.info["model"]["name"] == "model" and found.info["model"]["training"] == {"epochs": 3}
    assert is_labels_file(tif)


def test_heatmaps_float32_default_and_integer_choices(tmp_path, rng):
    heat = rng.random((3, 2, 20, 24)).astype(np.float32)
    for dtype, step in (("float32", 0.0), ("uint16", 1 / 65535), ("uint8", 1 / 255)):
        tif, sidecar = write_heatmaps_file(
            tmp_path / f"h_{dtype}.gradcam.tif",
            heat,
            ["NFL", "INL", "fluid"],
            classes=[1, 3, 9],
            dtype=dtype,
            scale_um=SCALE,
        )
        with tifffile.TiffFile(tif) as t:
            assert t.pages[0].dtype == np.dtype(dtype) and t.series[0].axes == "ZCYX"  # ImageJ channels = classes
            assert t.imagej_metadata["unit"] == "um"
        back = read_heatmaps_file(tif)
        assert back.heatmaps.shape == heat.shape and back.classes == (1, 3, 9)
        np.testing.assert_allclose(back.heatmaps, heat, atol=step / 2 + 1e-7)
        info = json.loads(sidecar.read_text())
        assert info["format"] == "napari-octseg heatmaps" and info["format_version"] == 2 and info["dtype"] == dtype


def test_old_float16_heatmaps_still_read(tmp_path, rng):
    heat = rng.random((2, 3, 10, 12)).astype(np.float16)
    tif = tmp_path / "old.gradcam.tif"
    tifffile.imwrite(tif, heat, photometric="minisblack", metadata={"axes": "CZYX"})
    old = {
        "napari_octseg_version": "0.1.0",
        "heatmaps_file": tif.name,
        "axes": "CZYX",
        "shape": list(heat.shape),
        "dtype": "float16",
        "classes": [1, 2],
        "class_names": ["NFL", "GCL+IPL"],
        "model": "/m.pt",
        "scale_um": None,
    }
    tif.with_suffix(".json").write_text(json.dumps(old))
    back = read_heatmaps_file(tif)
    np.testing.assert_array_equal(back.heatmaps, heat.astype(np.float32))
    assert back.info["model"]["source"] == "/m.pt" and back.info["package_version"] == "0.1.0"


def _rgb_photo(path):
    tifffile.imwrite(path, np.zeros((64, 80, 3), np.uint8), photometric="rgb")


def test_sniff_declines_foreign_files_quickly(tmp_path, labels):
    _rgb_photo(tmp_path / "photo.tif")
    np.save(tmp_path / "points.npy", np.zeros((500, 3), np.float32))
    np.save(tmp_path / "picture.npy", np.zeros((64, 80, 3), np.uint8))
    np.save(tmp_path / "strings.npy", np.array(["a", "b"]))
    (tmp_path / "config.xml").write_text("<?xml version='1.0'?><project><name>x</name></project>")
    (tmp_path / "disk.img").write_bytes(b"\0" * 1000)
    scipy_io = pytest.importorskip("scipy.io")
    scipy_io.savemat(tmp_path / "other.mat", {"signal": np.zeros(10)})
    foreign = ["photo.tif", "points.npy", "picture.npy", "strings.npy", "config.xml", "disk.img", "other.mat"]
    t0 = time.perf_counter()
    for name in foreign:
        assert not looks_like_oct(tmp_path / name), name
    assert time.perf_counter() - t0 < 5.0  # header reads only (a generous bound for a loaded machine)
    # what is OCT (or worth trying) is still claimed
    tifffile.imwrite(tmp_path / "stack.tif", np.zeros((5, 64, 80), np.uint8), photometric="minisblack")
    np.save(tmp_path / "vol.npy", np.zeros((3, 40, 36), np.float32))
    (tmp_path / "heyex.xml").write_text("<?xml version='1.0'?><HEDX><BODY></BODY></HEDX>")
    (tmp_path / "cube.img").write_bytes(b"\0" * (1024 * 200 * 2))
    scipy_io.savemat(tmp_path / "duke.mat", {"images": np.zeros((8, 8, 2))})
    write_labels_file(tmp_path / "s.labels.tif", labels)
    for name in ("stack.tif", "vol.npy", "heyex.xml", "cube.img", "duke.mat", "s.labels.tif"):
        assert looks_like_oct(tmp_path / name), name


def test_napari_reader_declines_foreign_files(tmp_path):
    from napari_octseg._napari.reader import get_reader

    _rgb_photo(tmp_path / "photo.tif")
    np.save(tmp_path / "points.npy", np.zeros((500, 3), np.float32))
    assert get_reader(str(tmp_path / "photo.tif")) is None
    assert get_reader(str(tmp_path / "points.npy")) is None

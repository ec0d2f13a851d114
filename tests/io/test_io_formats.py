"""Array containers, Duke files, labels, dispatch and the error paths of the library-backed formats."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
import tifffile
from PIL import Image

from napari_octseg.core.errors import LabelError, OctReadError
from napari_octseg.io import SUPPORTED_EXTENSIONS, read, read_labels
from napari_octseg.io.duke import layers_to_labels
from napari_octseg.synthetic import make_volume


def test_npy_2d_3d_and_4d(tmp_path):
    np.save(tmp_path / "b.npy", np.arange(12, dtype=np.uint8).reshape(3, 4))
    v = read(tmp_path / "b.npy")
    assert v.shape == (1, 3, 4) and v.data.max() == pytest.approx(11 / 255)
    np.save(tmp_path / "v.npy", np.zeros((2, 3, 4), np.float32))
    assert read(tmp_path / "v.npy").shape == (2, 3, 4)
    np.save(tmp_path / "x.npy", np.zeros((2, 2, 3, 4)))
    with pytest.raises(OctReadError, match=r"^x\.npy: has 4 dimensions"):
        read(tmp_path / "x.npy")


def test_tiff_stack_and_rgb(tmp_path):
    stack = (np.arange(2 * 5 * 6) % 256).astype(np.uint8).reshape(2, 5, 6)
    tifffile.imwrite(tmp_path / "s.tif", stack)
    v = read(tmp_path / "s.tif")
    assert v.shape == (2, 5, 6) and np.allclose(v.data * 255, stack)
    rgb = np.zeros((5, 6, 3), np.uint8)
    rgb[..., 1] = 255
    tifffile.imwrite(tmp_path / "c.tif", rgb, photometric="rgb")
    assert read(tmp_path / "c.tif").data == pytest.approx(np.full((1, 5, 6), 0.587), abs=1e-3)


def test_image_folder_natural_order(tmp_path):
    for i in (10, 2, 1):
        Image.fromarray(np.full((4, 5), i, np.uint8)).save(tmp_path / f"bscan_{i}.png")
    v = read(tmp_path)
    assert v.shape == (3, 4, 5)
    assert (v.data[:, 0, 0] * 255).round().tolist() == [1, 2, 10]
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / "bscan_11.png")
    with pytest.raises(OctReadError, match="differ in size"):
        read(tmp_path)


def test_empty_folder(tmp_path):
    with pytest.raises(OctReadError, match="holds no PNG/JPG/JPEG"):
        read(tmp_path)


def test_duke_mat_roundtrip(tmp_path):
    truth = make_volume(3, 64, 40, seed=1, fluid=False)
    h, w = 64, 40
    bounds = np.stack([truth.layers[k] for k in truth.layers])  # (8, 3, W), 0-based rows
    layers = np.full((8, w, 5), np.nan)
    fluid = np.full((h, w, 5), np.nan)
    for j, k in enumerate((0, 2, 4)):
        layers[:, 3:37, k] = bounds[:, j, 3:37] + 1  # MATLAB rows are 1-based
        fluid[:, :, k] = 0
    fluid[30:32, 10:12, 2] = 1
    layers[2, 20, 2] = np.nan  # a grader's gap inside the crop: interpolated
    images = (np.random.default_rng(0).random((h, w, 5)) * 255).astype(np.uint8)
    scipy.io.savemat(tmp_path / "s.mat", {"images": images, "manualLayers1": layers, "manualFluid1": fluid})
    v = read(tmp_path / "s.mat")
    assert v.shape == (3, 64, 34) and v.meta["duke"]["bscan_indices"] == [0, 2, 4]
    assert v.meta["duke"]["columns"] == [3, 37]
    assert np.allclose(v.data, np.transpose(images, (2, 0, 1))[[0, 2, 4], :, 3:37] / 255)
    expected = truth.labels[:, :, 3:37].copy()
    expected[1, 30:32, 7:9] = 9
    assert np.mean(v.labels == expected) > 0.999
    assert np.isnan(v.layers["IPL/INL"][1, 17])
    assert v.scale_um == (120.0, 3.87, 11.35)


def test_duke_mat_missing_variables(tmp_path):
    scipy.io.savemat(tmp_path / "m.mat", {"images": np.zeros((4, 4, 2), np.uint8)})
    with pytest.raises(OctReadError, match="manualLayers1 missing"):
        read(tmp_path / "m.mat")


def test_layers_to_labels_orders_crossing_boundaries():
    b = np.array([2, 4, 3, 5, 6, 7, 8, 9], np.float32)[:, None, None]  # boundary 2 above boundary 1
    labels = layers_to_labels(b, 12)
    assert labels[0, :, 0].tolist() == [0, 0, 1, 1, 3, 4, 5, 6, 7, 8, 8, 8]


def test_duke_npz(duke_dir):
    v = read(duke_dir / "Subject_01.npz")
    assert v.shape == (11, 496, 536) and v.labels.shape == v.shape and v.labels.max() == 9
    assert v.scale_um == (120.0, 3.87, 11.35)


def test_read_labels(tmp_path):
    labels = np.zeros((2, 4, 5), np.uint16)
    labels[:, 2:] = 9
    np.save(tmp_path / "l.npy", labels)
    tifffile.imwrite(tmp_path / "l.tif", labels)
    for name in ("l.npy", "l.tif"):
        out = read_labels(tmp_path / name, shape=(2, 4, 5))
        assert out.dtype == np.uint8 and np.array_equal(out, labels)
    with pytest.raises(LabelError, match="shape"):
        read_labels(tmp_path / "l.npy", shape=(2, 4, 6))
    np.save(tmp_path / "big.npy", labels + 1)
    with pytest.raises(LabelError, match="within 0..9"):
        read_labels(tmp_path / "big.npy")
    np.save(tmp_path / "f.npy", labels + 0.5)
    with pytest.raises(LabelError, match="integers"):
        read_labels(tmp_path / "f.npy")
    with pytest.raises(LabelError, match="unsupported"):
        read_labels(tmp_path / "l.png")


@pytest.mark.parametrize("ext", SUPPORTED_EXTENSIONS)
def test_every_extension_rejects_foreign_bytes_in_one_line(tmp_path, ext):
    path = tmp_path / f"foreign{ext}"
    path.write_bytes(b"this is a text file, not an OCT scan\n" * 40)
    with pytest.raises(OctReadError) as info:
        read(path)
    message = str(info.value)
    assert message.startswith(path.name + ": ") and "\n" not in message


def test_unsupported_extension_and_missing_file(tmp_path):
    (tmp_path / "a.docx").write_bytes(b"x")
    with pytest.raises(OctReadError, match="unsupported file type '.docx'"):
        read(tmp_path / "a.docx")
    with pytest.raises(OctReadError, match="no such file"):
        read(tmp_path / "nope.vol")


def test_directory_named_like_a_file(tmp_path):
    (tmp_path / "scan.vol").mkdir()
    with pytest.raises(OctReadError, match="is a directory"):
        read(tmp_path / "scan.vol")


def test_zeiss_img_raw_cube(tmp_path):
    cube = np.random.default_rng(0).integers(0, 255, 2 * 1024 * 512, dtype=np.uint8)
    (tmp_path / "cube.img").write_bytes(cube.tobytes())
    v = read(tmp_path / "cube.img")
    assert v.shape[0] * v.shape[1] * v.shape[2] == cube.size and v.meta["format"] == "zeiss_img"

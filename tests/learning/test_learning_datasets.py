"""Datasets: input validation, crops, augmentation, Duke loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_octseg.core.errors import InputError, LabelError
from napari_octseg.learning import IGNORE_INDEX, SegDataset, class_weights_from_labels, load_duke_npz, pad_collate
from napari_octseg.learning.augment import AugmentConfig, jitter_intensity, sample_crop
from napari_octseg.learning.datasets import duke_files


def _pair(h=40, w=50, seed=0):
    rng = np.random.default_rng(seed)
    lab = np.repeat(np.arange(h) * 10 // h, w).reshape(h, w).astype(np.uint8)
    return (lab / 9.0 + 0.05 * rng.standard_normal((h, w))).astype(np.float32), lab


def test_rejects_bad_inputs_before_work():
    img, lab = _pair()
    with pytest.raises(InputError, match="empty"):
        SegDataset([], [])
    with pytest.raises(LabelError, match="shape"):
        SegDataset([img], [lab[:-1]])
    with pytest.raises(LabelError, match="class 12"):
        SegDataset([img], [np.where(lab == 3, 12, lab).astype(np.uint8)])
    with pytest.raises(LabelError, match="2 B-scans but 1"):
        SegDataset([img, img], [lab])
    bad = img.copy()
    bad[3, 4] = np.nan
    with pytest.raises(InputError, match="NaN"):
        SegDataset([bad], [lab])
    with pytest.raises(LabelError, match="integer"):
        SegDataset([img], [lab.astype(np.float32)])


def test_whole_images_of_different_widths_pad_with_ignore():
    a, la = _pair(w=50)
    b, lb = _pair(w=56, seed=1)
    ds = SegDataset([a, b], [la, lb])
    x, y = pad_collate([ds[0], ds[1]])
    assert x.shape == (2, 1, 40, 56) and y.shape == (2, 40, 56)
    assert (y[0, :, 50:] == IGNORE_INDEX).all() and (x[0, :, :, 50:] == 0).all()
    np.testing.assert_array_equal(y[1].numpy(), lb)
    np.testing.assert_array_equal(x[0, 0, :, :50].numpy(), a)


def test_random_crops_have_fixed_size_and_consistent_labels():
    img, lab = _pair(h=64, w=70)
    torch.manual_seed(3)
    ds = SegDataset([img], [lab], augment=False, crop=(32, 32), repeats=5)
    assert len(ds) == 5
    for k in range(5):
        x, y = ds[k]
        assert x.shape == (1, 32, 32) and y.shape == (32, 32) and y.dtype == torch.int64
        # Without augmentation a crop is an exact window: the label of a row is its band.
        row_img = x[0].numpy().mean(axis=1)
        row_lab = y.numpy().mean(axis=1)
        assert np.corrcoef(row_img, row_lab)[0, 1] > 0.95


def test_geometric_augmentation_moves_labels_with_image():
    rng = np.random.default_rng(0)
    img, lab = _pair(h=80, w=80)
    aug = AugmentConfig(geometric_p=1.0, flip_p=1.0, rotate_deg=8.0, shear=0.1)
    for _ in range(5):
        x, y = sample_crop(img, lab, (48, 48), rng, aug)
        valid = y != IGNORE_INDEX
        # The image is label/9 + small noise: it must still match its (warped) labels.
        err = np.abs(x[valid] - y[valid] / 9.0)
        assert np.median(err) < 0.1
        assert set(np.unique(y[valid])) <= set(range(10))


def test_intensity_jitter_stays_in_range_and_changes_image():
    rng = np.random.default_rng(1)
    img, _ = _pair()
    img = np.clip(img, 0, 1)
    out = jitter_intensity(img, rng, AugmentConfig(speckle_p=1.0))
    assert out.dtype == np.float32 and out.shape == img.shape
    assert out.min() >= 0 and out.max() <= 1
    assert not np.allclose(out, img)


def test_class_weights_favour_rare_classes():
    lab = np.zeros((10, 10), np.uint8)
    lab[:1] = 1
    lab[1:5] = 2
    w = class_weights_from_labels([lab], n_classes=4)
    assert w[1] > w[2] > w[0]
    assert w[3] == 10.0  # absent class gets the upper clip


def test_load_duke_npz_validates(tmp_path):
    img = np.zeros((2, 8, 9), np.uint8)
    np.savez(tmp_path / "Subject_01.npz", images=img, labels=np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(LabelError):
        load_duke_npz([tmp_path / "Subject_01.npz"])
    np.savez(tmp_path / "Subject_02.npz", images=img, labels=np.full((2, 8, 9), 11, np.uint8))
    with pytest.raises(LabelError, match="class 11"):
        load_duke_npz([tmp_path / "Subject_02.npz"])
    np.savez(tmp_path / "Subject_03.npz", foo=img)
    with pytest.raises(InputError, match="not a Duke"):
        load_duke_npz([tmp_path / "Subject_03.npz"])
    with pytest.raises(InputError):
        load_duke_npz([])
    with pytest.raises(InputError, match="subject"):
        duke_files(tmp_path, [7])


def test_load_real_duke_subject(duke_dir):
    images, labels, subjects = load_duke_npz(duke_files(duke_dir, [7]))
    assert len(images) == 11 and subjects == ["Subject_07"] * 11
    assert images[0].dtype == np.float32 and images[0].shape == labels[0].shape == (496, 500)
    assert 0.0 <= images[0].min() and images[0].max() <= 1.0
    assert labels[0].max() <= 9

"""Safety of the headless core (issue 9): label files as untrusted input, the napari reader never
raising, and measuring or segmenting never writing into the user's arrays.

The reader fuzz families live in benchmarks/fuzz_readers.py (tests/io/test_io_fuzz.py runs them through
``io.read`` and the napari reader); here the same crafted files go through ``io.read_labels``, which
``octseg thickness``/``finetune`` and the widgets use for label volumes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from napari_octseg.core.errors import LabelError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import fuzz_readers  # noqa: E402

LABEL_FAMILIES = ("npy", "tif", "tiff")


def test_every_crafted_label_file_is_one_label_error(tmp_path):
    from napari_octseg.io import read_labels

    marker = tmp_path / "UNPICKLED_MARKER"
    cases = [
        c for c in list(fuzz_readers.generic_cases()) + list(fuzz_readers.array_cases(marker)) if c[0] in LABEL_FAMILIES
    ]
    assert len(cases) >= 25
    for i, (family, what, make) in enumerate(cases):
        case_dir = tmp_path / f"case{i}"
        case_dir.mkdir()
        path = make(case_dir)
        with pytest.raises(LabelError) as info:
            read_labels(path)
        message = str(info.value)
        assert "\n" not in message and path.name in message, (family, what, message)
    assert not marker.exists()


@pytest.mark.parametrize(
    "values, dtype",
    [
        ([0, 10], np.uint8),
        ([-1, 3], np.int16),
        ([0.5, 1], np.float32),
        ([np.nan, 1], np.float32),
        ([0, 300], np.uint16),
        ([True, False], np.bool_),
    ],
)
def test_label_values_outside_the_scheme_are_refused_or_exact(tmp_path, values, dtype):
    from napari_octseg.io import read_labels

    array = np.resize(np.array(values, dtype=dtype), (2, 4, 4))
    np.save(tmp_path / "l.npy", array)
    if dtype is np.bool_:  # booleans are classes 0 and 1, exactly
        np.testing.assert_array_equal(read_labels(tmp_path / "l.npy"), array.astype(np.uint8))
        return
    with pytest.raises(LabelError):
        read_labels(tmp_path / "l.npy")


def test_napari_reader_returns_none_for_mixed_and_odd_paths(tmp_path):
    from napari_octseg._napari.reader import get_reader

    good = tmp_path / "good.npy"
    np.save(good, np.random.default_rng(0).random((2, 64, 64), dtype=np.float32))
    bad = tmp_path / "bad.vol"
    bad.write_bytes(b"\x00" * 64)
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((2, 8, 8), np.nan, np.float32))
    assert get_reader(str(good)) is not None
    for paths in (
        [str(good), str(bad)],
        [str(nan)],
        [],
        str(tmp_path / "missing.vol"),
        str(tmp_path / "x.txt"),
        [str(good), str(tmp_path / "x.docx")],
        str(tmp_path),
    ):
        assert get_reader(paths) is None, paths


def _read_only(array: np.ndarray) -> np.ndarray:
    array = np.array(array, copy=True)
    array.setflags(write=False)
    return array


def test_thickness_never_writes_into_the_labels_it_measures():
    """Read-only labels: any write inside boundaries/analyse would raise."""
    from napari_octseg.core.boundaries import boundaries
    from napari_octseg.core.progress import run_generator
    from napari_octseg.core.thickness import analyse
    from napari_octseg.synthetic import make_volume

    vol = make_volume(n_bscans=5, height=64, width=48, seed=1)
    labels = _read_only(vol.labels)
    noisy = np.array(vol.labels, copy=True)
    noisy[:, ::7, ::5] = 9  # label noise and scattered fluid
    noisy = _read_only(noisy)
    for lab in (labels, noisy):
        before = lab.tobytes()
        boundaries(lab)
        run_generator(analyse(lab, vol.scale_um, "OD", "volume"))
        assert lab.tobytes() == before


def test_segmentation_never_writes_into_the_image(tiny_model):
    from napari_octseg.core.progress import run_generator
    from napari_octseg.inference import segment

    data = _read_only(np.random.default_rng(0).random((3, 40, 36)).astype(np.float32))
    result = run_generator(segment(data, tiny_model, batch_size=2, device="cpu"))
    assert result.labels.shape == data.shape and result.labels.flags.writeable
    assert not np.shares_memory(result.labels, data)

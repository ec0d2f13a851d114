"""learning.resegment: after fine-tuning, segment the B-scans not learned from and keep the corrected ones."""

from __future__ import annotations

import numpy as np
import pytest

from napari_octseg.core.errors import Cancelled, InputError, LabelError
from napari_octseg.core.progress import run_generator
from napari_octseg.core.volume import OctVolume
from napari_octseg.inference import segment
from napari_octseg.io.provenance import edited_bscans
from napari_octseg.learning.resegment import bscans_to_segment, segment_rest


@pytest.fixture
def volume(rng) -> OctVolume:
    return OctVolume(data=rng.random((4, 32, 24)).astype(np.float32), scale_um=(50.0, 4.0, 10.0))


def test_bscans_to_segment():
    assert bscans_to_segment(4, [1, 3], keep=True) == [0, 2]
    assert bscans_to_segment(4, [1, 3], keep=False) == [0, 1, 2, 3]


def test_kept_bscans_stay_and_the_rest_is_the_models(volume, varied_model):
    corrected = np.full(volume.shape, 7, np.uint8)
    result = run_generator(segment_rest(volume, varied_model, corrected, [1], device="cpu"))
    assert result.segmented == [0, 2, 3] and result.kept == [1]
    assert (result.labels[1] == 7).all()
    alone = run_generator(segment(OctVolume(volume.data[[0, 2, 3]], scale_um=volume.scale_um), varied_model))
    np.testing.assert_array_equal(result.labels[[0, 2, 3]], alone.labels)
    assert (corrected == 7).all()  # the caller's labels are never written to
    assert edited_bscans(result.labels, result.record) == []
    edited = result.labels.copy()
    edited[2, 0, 0] ^= 1
    assert edited_bscans(edited, result.record) == [2]


def test_without_labels_every_bscan_is_segmented(volume, varied_model):
    result = run_generator(segment_rest(volume, varied_model, None, [0, 1, 2, 3], device="cpu"))
    assert result.segmented == [0, 1, 2, 3] and result.kept == []


def test_bad_requests_and_cancel(volume, varied_model):
    labels = np.zeros(volume.shape, np.uint8)
    with pytest.raises(InputError, match="nothing left"):
        run_generator(segment_rest(volume, varied_model, labels, [0, 1, 2, 3]))
    with pytest.raises(LabelError):
        run_generator(segment_rest(volume, varied_model, labels[:2], [0]))
    with pytest.raises(Cancelled):
        run_generator(segment_rest(volume, varied_model, labels, [0], device="cpu", cancel=lambda: True))

"""inference.segment: shapes, dtypes, probabilities, determinism, bad input, OOM back-off, cancel."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from napari_octseg.core.errors import Cancelled, CheckpointError, InputError
from napari_octseg.core.progress import Progress, run_generator
from napari_octseg.core.volume import OctVolume
from napari_octseg.inference import bscan_hashes, edited_bscans, labels_sidecar, segment
from napari_octseg.models import LoadedModel


@pytest.fixture
def bscans(rng) -> np.ndarray:
    return rng.random((5, 37, 53)).astype(np.float32)


def _run(*args, **kwargs):
    # The fixture's network is random: these tests check the pipeline's mechanics against the raw
    # argmax; the anatomically ordered decoding is tested in test_physical_grid.py.
    kwargs.setdefault("ordered", False)
    events: list = []
    result = run_generator(segment(*args, **kwargs), events.append)
    return result, events


def test_shapes_dtypes_and_progress(bscans, varied_model):
    result, events = _run(bscans, varied_model, batch_size=2, device="cpu")
    assert result.labels.shape == (5, 37, 53) and result.labels.dtype == np.uint8
    assert result.probabilities is None
    assert result.device == "cpu" and result.batch_size == 2 and result.seconds > 0
    assert result.class_names == varied_model.class_names
    assert [(e.done, e.total) for e in events] == [(0, 5), (2, 5), (4, 5), (5, 5)]
    assert all(isinstance(e, Progress) for e in events)
    assert len(np.unique(result.labels)) > 2  # the fixture really is discriminative


@pytest.mark.parametrize("shape", [(1, 31, 17), (3, 64, 64), (2, 70, 129)])
def test_odd_sizes_keep_the_input_resolution(shape, rng, varied_model):
    data = rng.random(shape).astype(np.float32)
    result, _ = _run(data, varied_model, batch_size=3)
    assert result.labels.shape == shape


def test_two_d_input_is_one_bscan(bscans, varied_model):
    single, _ = _run(bscans[2], varied_model)
    full, _ = _run(bscans, varied_model)
    assert single.labels.shape == (1, 37, 53)
    np.testing.assert_array_equal(single.labels[0], full.labels[2])


def test_octvolume_and_linear_reflectivity_match_the_display_array(rng, varied_model):
    raw = rng.random((3, 40, 48)).astype(np.float32) ** 4
    vol = OctVolume(raw, scale_um=(120.0, 3.9, 11.3), reflectivity="linear")
    from_vol, _ = _run(vol, varied_model)
    from_display, _ = _run(vol.display_data(), varied_model)
    np.testing.assert_array_equal(from_vol.labels, from_display.labels)
    # ... and the linear data itself would give another answer: the compression really is applied.
    from_raw, _ = _run(raw, varied_model)
    assert not np.array_equal(from_raw.labels, from_vol.labels)


def test_integer_input_is_accepted(rng, varied_model):
    data = (rng.random((2, 32, 32)) * 255).astype(np.uint8)
    result, _ = _run(data, varied_model)
    expected, _ = _run(data.astype(np.float32), varied_model)
    np.testing.assert_array_equal(result.labels, expected.labels)


def test_probabilities_sum_to_one_and_agree_with_labels(bscans, varied_model):
    result, _ = _run(bscans, varied_model, return_probabilities=True)
    p = result.probabilities
    assert p.shape == (5, 10, 37, 53) and p.dtype == np.float16
    np.testing.assert_allclose(p.astype(np.float32).sum(axis=1), 1.0, atol=5e-3)
    assert (p >= 0).all()
    # float16 rounding can tie near-equal classes; elsewhere argmax of p is the label
    agree = (p.argmax(axis=1) == result.labels).mean()
    assert agree > 0.99


def test_deterministic_and_independent_of_batch_size(bscans, varied_model):
    a, _ = _run(bscans, varied_model, batch_size=4)
    b, _ = _run(bscans, varied_model, batch_size=4)
    c, _ = _run(bscans, varied_model, batch_size=1)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.labels, c.labels)


def test_the_checkpoint_network_is_left_untouched(bscans, varied_model):
    net = varied_model.model.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    bn_modules = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    _run(bscans[:1], varied_model)
    assert net.training and sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == bn_modules
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats not updated either
    assert all(p.is_contiguous() for p in net.parameters())


def test_grad_mode_does_not_leak_out_between_batches(bscans, varied_model):
    gen = segment(bscans, varied_model, batch_size=2)
    for _ in range(3):
        next(gen)
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def test_batchnorm_folding_matches_the_plain_network(bscans, varied_model):
    with torch.inference_mode():
        from napari_octseg.models.normalization import normalize_bscans

        x = torch.from_numpy(normalize_bscans(bscans, varied_model.normalization)[:, None])
        expected = varied_model.model(x).argmax(1).numpy().astype(np.uint8)
    result, _ = _run(bscans, varied_model)
    np.testing.assert_array_equal(result.labels, expected)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused_before_any_work(bscans, varied_model, bad):
    bscans[3, 5, 7] = bad
    gen = segment(bscans, varied_model)
    with pytest.raises(InputError, match=r"NaN or infinite.*1 B-scan\(s\), first #3") as info:
        next(gen)  # nothing is yielded: the check precedes the first progress event
    assert "\n" not in str(info.value)


def test_all_nan_volume_is_refused(varied_model):
    with pytest.raises(InputError, match="all B-scans"):
        _run(np.full((3, 16, 16), np.nan, np.float32), varied_model)


@pytest.mark.parametrize(
    "data, match",
    [
        (np.zeros((2, 3, 8, 8), np.float32), "shape"),
        (np.zeros((0, 8, 8), np.float32), "empty"),
        (np.zeros((1, 8, 8), np.complex64), "dtype"),
    ],
)
def test_bad_arrays_are_refused(data, match, varied_model):
    with pytest.raises(InputError, match=match):
        _run(data, varied_model)


def test_bad_batch_size_and_absent_device(bscans, varied_model):
    with pytest.raises(InputError, match="batch size"):
        _run(bscans, varied_model, batch_size=0)
    absent = "mps" if torch.cuda.is_available() else "cuda"
    if absent == "mps" and torch.backends.mps.is_available():
        pytest.skip("both CUDA and MPS are present: no absent device to test")
    with pytest.raises(InputError, match="not available"):
        _run(bscans, varied_model, device=absent)


def test_class_count_mismatch_is_a_checkpoint_error(bscans, varied_model):
    wrong = LoadedModel(model=varied_model.model, class_names=("a", "b", "c"), source="<wrong>")
    with pytest.raises(CheckpointError, match="outputs 10 classes"):
        _run(bscans, wrong)


class _OomAboveOne(nn.Module):
    """Wraps a network and fails like a GPU out of memory for any batch larger than one."""

    def __init__(self, net: nn.Module, error: type[Exception], record) -> None:
        super().__init__()
        self.net = net
        self.error = error
        self.record = record  # a function: survives segment's deep copy of the network by reference

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.record(x.shape[0])
        if x.shape[0] > 1:
            if self.error is RuntimeError:
                raise RuntimeError("CUDA error: out of memory")
            raise self.error("CUDA out of memory. Tried to allocate 20.00 GiB")
        return self.net(x)


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, RuntimeError])
def test_out_of_memory_halves_the_batch_until_it_fits(bscans, varied_model, error):
    reference, _ = _run(bscans, varied_model, batch_size=4)
    sizes: list[int] = []
    wrapper = _OomAboveOne(varied_model.model, error, lambda n: sizes.append(n))
    result, events = _run(bscans, LoadedModel(model=wrapper, source="<oom>"), batch_size=4)
    assert result.batch_size == 1
    assert sizes == [4, 2, 1, 1, 1, 1, 1]
    assert events[-1].info["batch_size"] == 1 and events[-1].done == 5
    np.testing.assert_array_equal(result.labels, reference.labels)


def test_out_of_memory_at_batch_one_is_an_input_error(bscans, varied_model):
    class AlwaysOom(nn.Module):
        def forward(self, x):
            raise torch.OutOfMemoryError("out of memory")

    with pytest.raises(InputError, match="even with batch size 1"):
        _run(bscans, LoadedModel(model=AlwaysOom()), batch_size=2)


def test_other_runtime_errors_are_not_swallowed(bscans):
    class Broken(nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch somewhere")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        _run(bscans, LoadedModel(model=Broken()))


def test_cancel_raises_at_the_next_batch(bscans, varied_model):
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return calls["n"] >= 2  # let one batch run, then cancel

    gen = segment(bscans, varied_model, batch_size=2, cancel=cancel)
    assert next(gen).done == 0
    assert next(gen).done == 1  # the first batch is one B-scan, at full height, to find the retina window
    with pytest.raises(Cancelled):
        next(gen)


def test_bscan_hashes_find_edited_bscans(bscans, varied_model):
    result, _ = _run(bscans, varied_model)
    hashes = bscan_hashes(result.labels)
    assert len(hashes) == 5 and len(set(hashes)) == 5
    edited = result.labels.copy()
    edited[1, 0, 0] = (edited[1, 0, 0] + 1) % 10
    edited[4, 10, 3] = (edited[4, 10, 3] + 5) % 10
    assert edited_bscans(result.labels, hashes) == []
    assert edited_bscans(edited, hashes) == [1, 4]
    assert edited_bscans(edited.astype(np.int32), hashes) == edited_bscans(edited, hashes)
    with pytest.raises(InputError, match="B-scans"):
        edited_bscans(edited[:3], hashes)


def test_labels_sidecar_is_json_and_counts_pixels(varied_model):
    labels = np.zeros((2, 3, 4), np.uint8)
    labels[0, 0, :2] = 9
    varied_model.training = {"epochs": 3, "history": list(range(5000)), "data": "Duke 01-06"}
    info = labels_sidecar(
        labels, varied_model.class_names, model=varied_model, scale_um=(120.0, 3.87, 11.3), input="x.vol"
    )
    again = json.loads(json.dumps(info))
    assert again["shape"] == [2, 3, 4] and again["class_names"][9] == "fluid"
    assert again["pixel_counts"]["9"] == 2 and again["pixel_counts"]["0"] == 22
    assert again["scale_um"] == [120.0, 3.87, 11.3] and again["input"] == "x.vol"
    assert again["model"]["source"] == "<varied test model>"
    assert again["model"]["training"] == {"epochs": 3, "data": "Duke 01-06"}  # bulky history left out

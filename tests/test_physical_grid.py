"""Physical-scale input, reflectivity detection and anatomically ordered labels (issue: own scans)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_octseg.core.errors import InputError
from napari_octseg.core.intensity import detect_reflectivity, resolve_reflectivity
from napari_octseg.core.progress import run_generator
from napari_octseg.core.volume import OctVolume
from napari_octseg.grid import grid_map, surfaces_to_native, to_model_grid, to_native_grid
from napari_octseg.inference import segment
from napari_octseg.models import SegNet, SegNetConfig
from napari_octseg.models.checkpoint import LoadedModel
from napari_octseg.ordering import labels_from_edges, ordered_edges, paint_fluid


def test_reflectivity_detection_separates_linear_from_display():
    rng = np.random.default_rng(0)
    linear = (rng.exponential(1.0, (2, 64, 64)) ** 4 * 1e-3).astype(np.float32)
    linear[:, :10] = 0.0
    assert detect_reflectivity(linear)[0] == "linear"
    assert detect_reflectivity(linear**0.25)[0] == "display"
    assert detect_reflectivity((rng.random((2, 64, 64)) * 255).astype(np.uint8))[0] == "display"
    assert resolve_reflectivity("display", linear, "display")[0] == "display"
    assert resolve_reflectivity("auto", linear**0.25, "linear")[0] == "linear"
    with pytest.raises(InputError, match="reflectivity must be one of"):
        resolve_reflectivity("log", linear, "display")


def test_grid_map_resamples_only_when_spacing_differs():
    assert grid_map((496, 512), None, (3.87, 11.3)).identity
    assert grid_map((496, 512), (3.87, 11.3), None).identity
    assert grid_map((496, 512), (3.9, 11.4), (3.87, 11.3)).identity  # within 2 %
    gm = grid_map((1024, 200), (1.95, 30.0), (3.87, 11.3))
    assert gm.model_shape == (round(1024 * 1.95 / 3.87), round(200 * 30 / 11.3))
    for bad in [(0.0, 11.3), (float("nan"), 11.3), (-1.0, 2.0), (3.87, 1e308)]:
        with pytest.raises(InputError, match="positive finite"):
            grid_map((10, 10), bad, (3.87, 11.3))
    with pytest.raises(InputError, match="check the scale"):
        grid_map((496, 512), (3000.0, 11.3), (3.87, 11.3))


def test_resampling_round_trip_keeps_shapes_and_surfaces():
    gm = grid_map((100, 60), (2.0, 30.0), (4.0, 10.0))
    assert gm.model_shape == (50, 180)
    x = np.random.default_rng(1).random((2, 100, 60), dtype=np.float32)
    m = to_model_grid(x, gm)
    assert m.shape == (2, 50, 180) and m.dtype == np.float32
    back = to_native_grid(m, gm)
    assert back.shape == x.shape
    # A flat boundary at model row edge 20 is native edge 40 (2 native rows per model row).
    edges = np.tile(np.arange(1, 9, dtype=np.float32)[:, None] * 5, (1, 180))
    native = surfaces_to_native(edges, gm)
    assert native.shape == (8, 60)
    np.testing.assert_allclose(native, edges[:, :60] * 2, rtol=1e-6)


def _probs_for(labels: np.ndarray, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    """(1, 10, h, w) probabilities peaked on ``labels`` (h, w), optionally perturbed."""
    onehot = np.eye(10, dtype=np.float32)[labels].transpose(2, 0, 1)
    logits = onehot * 8 + noise * np.random.default_rng(seed).standard_normal(onehot.shape).astype(np.float32)
    return torch.softmax(torch.from_numpy(logits)[None], dim=1)


def test_ordered_edges_recover_a_clean_stack_and_remove_islands():
    h, w = 60, 7
    truth = np.zeros((h, w), np.uint8)
    rows = [10, 14, 20, 25, 28, 36, 40, 44]  # first row of classes 1..8
    for k, r in enumerate(rows, start=1):
        truth[r:] = k
    noisy = truth.copy()
    noisy[3, 2] = 8  # a "choroid" island in the vitreous
    noisy[50, 4] = 1  # NFL below the RPE
    edges = ordered_edges(_probs_for(noisy))[0].numpy()
    # sub-pixel edges: a sharp, symmetric step crosses over exactly at the pixel edge
    np.testing.assert_allclose(edges, np.tile(np.array(rows, np.float32)[:, None], (1, w)), atol=0.01)
    labels = labels_from_edges(edges, h)
    np.testing.assert_array_equal(labels, truth)
    assert (np.diff(labels.astype(int), axis=0) >= 0).all()


def test_ordered_edges_are_monotone_under_heavy_noise_and_fluid_stays_inside():
    rng = np.random.default_rng(3)
    probs = torch.softmax(torch.from_numpy(rng.standard_normal((2, 10, 40, 30)).astype(np.float32) * 3), dim=1)
    edges = ordered_edges(probs).numpy()
    assert (np.diff(edges, axis=1) >= 0).all()
    labels = labels_from_edges(edges[0], 40)
    assert (np.diff(labels.astype(int), axis=0) >= 0).all()
    fluid = np.ones((40, 30), bool)
    painted = paint_fluid(labels.copy(), fluid)
    assert ((painted == 9) == ((labels >= 1) & (labels <= 7))).all()


def _tiny_model(spacing: tuple[float, float] | None) -> LoadedModel:
    torch.manual_seed(0)
    net = SegNet(SegNetConfig(widths=(4, 8), n_classes=10)).eval()
    norm = {"method": "percentile", "low": 1.0, "high": 99.9}
    if spacing is not None:
        norm["pixel_spacing_um"] = list(spacing)
    return LoadedModel(model=net, normalization=norm)


def test_segment_resamples_to_the_model_grid_and_returns_native_labels():
    vol = OctVolume(data=np.random.default_rng(0).random((2, 48, 20), dtype=np.float32), scale_um=(50.0, 2.0, 30.0))
    res = run_generator(segment(vol, _tiny_model((4.0, 10.0)), device="cpu", return_probabilities=True))
    assert res.labels.shape == (2, 48, 20) and res.probabilities.shape == (2, 10, 48, 20)
    assert res.model_shape == (24, 60) and res.native_spacing_um == (2.0, 30.0)
    assert (np.diff(res.labels.astype(int), axis=1)[res.labels[:, 1:] != 9] >= -9).all()
    layer = np.where(res.labels == 9, -1, res.labels.astype(int))
    # ignoring fluid pixels, labels never decrease down an A-scan
    for b in range(2):
        for c in range(20):
            col = layer[b, :, c]
            col = col[col >= 0]
            assert (np.diff(col) >= 0).all()
    assert not res.notes
    np.testing.assert_allclose(res.probabilities.astype(np.float32).sum(axis=1), 1.0, atol=0.02)


def test_segment_says_when_scale_is_unknown_and_accepts_an_override():
    data = np.random.default_rng(0).random((1, 32, 32), dtype=np.float32)
    model = _tiny_model((4.0, 10.0))
    res = run_generator(segment(data, model, device="cpu"))
    assert res.model_shape == (32, 32) and any("unknown" in n for n in res.notes)
    res = run_generator(segment(data, model, device="cpu", scale_um=(1.0, 8.0, 5.0)))
    assert res.model_shape == (64, 16) and res.labels.shape == (1, 32, 32)
    for bad in [(0.0, 0.0, 0.0), (1.0, float("nan"), 1.0), (1.0, 2.0)]:
        with pytest.raises(InputError):
            run_generator(segment(data, model, device="cpu", scale_um=bad))
    with pytest.raises(InputError, match="reflectivity"):
        run_generator(segment(data, model, device="cpu", reflectivity="raw"))


def test_segment_reads_linear_float_input_as_reflectivity():
    rng = np.random.default_rng(2)
    linear = (rng.exponential(1.0, (1, 32, 32)) ** 4 * 1e-4).astype(np.float32)
    res = run_generator(segment(linear, _tiny_model(None), device="cpu"))
    assert res.reflectivity == "linear" and any("linear reflectivity" in n for n in res.notes)
    res = run_generator(segment(linear, _tiny_model(None), device="cpu", reflectivity="display"))
    assert res.reflectivity == "display" and not res.notes


def test_gradcam_runs_on_the_model_grid_and_returns_native_maps():
    from napari_octseg.explain import gradcam

    vol = OctVolume(data=np.random.default_rng(0).random((1, 48, 20), dtype=np.float32), scale_um=(50.0, 2.0, 30.0))
    res = run_generator(gradcam(vol, _tiny_model((4.0, 10.0)), [1, 2], layer="decoder", device="cpu"))
    assert res.heatmaps.shape == (2, 1, 48, 20) and res.labels.shape == (1, 48, 20)
    assert np.isfinite(res.heatmaps.astype(np.float32)).all()


def test_a_choroid_blob_in_the_vitreous_does_not_lift_the_retina():
    h, w = 80, 5
    truth = np.zeros((h, w), np.uint8)
    rows = [40, 44, 50, 55, 58, 64, 68, 72]
    for k, r in enumerate(rows, start=1):
        truth[r:] = k
    noisy = truth.copy()
    noisy[8:30, :] = 8  # a 22-row "choroid" blob in the vitreous, as the model paints in bright noise
    labels = labels_from_edges(ordered_edges(_probs_for(noisy))[0].numpy(), h)
    np.testing.assert_array_equal(labels, truth)

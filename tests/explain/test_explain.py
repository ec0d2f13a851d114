"""Grad-CAM: agreement with captum, model-randomisation sanity check, one forward pass, clean-up."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from napari_octseg.core.errors import Cancelled, InputError
from napari_octseg.core.progress import Progress, run_generator
from napari_octseg.explain import _batch, gradcam, gradcam_batch, mass_near_region, resolve_classes, volume
from napari_octseg.models import LoadedModel, SegNet, SegNetConfig, normalize_bscans

torch.set_num_threads(1)
LEVELS = np.array([0.05, 0.8, 0.5, 0.3, 0.6, 0.2, 0.9, 0.7, 0.4, 0.0], dtype=np.float32)


def band_images(n: int, h: int = 32, w: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tilted horizontal bands of the 9 layer classes (each its own grey level) plus a fluid blob."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, h, w), np.float32)
    labels = np.zeros((n, h, w), np.int64)
    yy, xx = np.mgrid[:h, :w]
    for i in range(n):
        edges = np.sort(rng.choice(np.arange(3, h - 2), 8, replace=False))
        rows = yy - rng.uniform(-0.1, 0.1) * xx
        lab = np.searchsorted(edges, rows, side="right")
        cy, cx = rng.integers(10, h - 10), rng.integers(10, w - 10)
        lab[(((yy - cy) ** 2 / 9 + (xx - cx) ** 2 / 25) < 1) & (lab >= 2) & (lab <= 5)] = 9
        labels[i] = lab
        images[i] = LEVELS[lab] + rng.normal(0, 0.05, (h, w))
    return images, labels


def _train_tiny(seed: int = 0, steps: int = 60) -> SegNet:
    torch.manual_seed(seed)
    net = SegNet(SegNetConfig(widths=(4, 8, 8)))
    images, labels = band_images(16)
    x = torch.from_numpy(normalize_bscans(images))[:, None]
    y = torch.from_numpy(labels)
    opt = torch.optim.Adam(net.parameters(), 2e-2)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(0, len(x), (8,), generator=gen)
        loss = torch.nn.functional.cross_entropy(net(x[i]), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def trained() -> LoadedModel:
    """A tiny SegNet trained for a few seconds on band images: it predicts most classes."""
    return LoadedModel(model=_train_tiny(), source="<trained tiny>")


@pytest.fixture(scope="module")
def scans() -> np.ndarray:
    return band_images(3, seed=1)[0]


def _x(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(normalize_bscans(images))[:, None]


def _captum_map(net, layer_name, x, mask_weights, cls, size):
    from captum.attr import LayerAttribution, LayerGradCam

    def score(inp):
        return (net(inp)[:, cls] * mask_weights).sum((-2, -1))

    attr = LayerGradCam(score, net.gradcam_layers()[layer_name]).attribute(x, relu_attributions=True)
    if tuple(attr.shape[-2:]) != size:
        attr = LayerAttribution.interpolate(attr, size, "bilinear")
    return attr[:, 0, : x.shape[-2], : x.shape[-1]].detach()


@pytest.mark.parametrize("layer", ["decoder", "final", "decoder.1", "decoder.2"])
@pytest.mark.parametrize(("target", "reduction"), [("predicted", "sum"), ("predicted", "mean"), ("image", "mean")])
def test_vectorised_maps_match_captum(trained, scans, layer, target, reduction):
    net = trained.model
    x = _x(scans)
    classes = [0, 2, 5, 7, 8]
    cams, pred, _ = gradcam_batch(net, layer, x, classes, target=target, reduction=reduction)
    with torch.no_grad():
        assert torch.equal(pred, net(x).argmax(1))
    nonzero = 0
    for k, c in enumerate(classes):
        w = (pred == c).float() if target == "predicted" else torch.ones_like(pred, dtype=torch.float32)
        if reduction == "mean":
            w = w / w.sum((-2, -1), keepdim=True).clamp(min=1)
        ref = _captum_map(net, layer, x, w, c, (32, 48))
        scale = float(ref.abs().max())
        nonzero += scale > 0
        torch.testing.assert_close(cams[k], ref, rtol=1e-5, atol=1e-6 * max(scale, 1e-12))
    assert nonzero >= 3, "most maps must be non-zero, or the comparison proves nothing"


@pytest.mark.parametrize(
    ("layer", "most_backwards", "row_bands"),
    [("decoder", 0, False), ("final", 0, False), ("decoder.1", 2 * 10, False), ("decoder.1", 0, True)],
)
def test_one_forward_and_at_most_one_backward_per_class_and_batch(
    trained, scans, monkeypatch, layer, most_backwards, row_bands
):
    """Layers followed only by the 1x1 classifier need no backward pass (their gradient is the
    classifier's weights, checked against captum above); other layers at most one autograd pass per
    class and batch, fewer where classes share one, and none with the hand-written row-band passes
    (one call per batch)."""
    net = trained.model
    bands = []
    real_bands = _batch.band_channel_grads

    def counting_bands(*args, **kwargs):
        bands.append(1)
        return real_bands(*args, **kwargs)

    monkeypatch.setattr(_batch, "band_channel_grads", counting_bands)
    if not row_bands:
        monkeypatch.setattr(_batch, "band_plan", lambda *_: None)
        monkeypatch.setattr(volume, "band_plan", lambda *_: None)
    forwards = []
    handle = net.register_forward_pre_hook(lambda *_: forwards.append(1))
    backwards = []
    real_grad = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        backwards.append(kwargs.get("is_grads_batched", False))
        return real_grad(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    try:
        run_generator(gradcam(scans, trained, layer=layer, batch_size=2))
    finally:
        handle.remove()
    assert len(forwards) == 2  # 3 B-scans in batches of 2, all 10 classes
    assert len(backwards) <= most_backwards and (len(backwards) > 0) == (most_backwards > 0)
    assert len(bands) == (2 if row_bands else 0)


def test_volume_result_normalised_per_class(trained, scans):
    events = []
    result = run_generator(gradcam(scans, trained, classes=["NFL", 5, "choroid"], layer="decoder"), events.append)
    assert result.classes == (1, 5, 8)
    assert result.class_names == ("NFL", "ONL+IS", "choroid")
    assert result.heatmaps.dtype == np.float16 and result.heatmaps.shape == (3, 3, 32, 48)
    assert result.labels.dtype == np.uint8 and result.labels.shape == (3, 32, 48)
    assert [e.done for e in events if isinstance(e, Progress)] == [0, 1, 2, 3]
    raw, pred, _ = gradcam_batch(trained.model, "decoder", _x(scans), (1, 5, 8))
    np.testing.assert_array_equal(result.labels, pred.numpy())
    for k, c in enumerate(result.classes):
        peak = float(raw[k].max())
        assert result.stats[c]["max"] == pytest.approx(peak, rel=1e-6)
        assert result.stats[c]["mean"] == pytest.approx(float(raw[k].mean()), rel=1e-5)
        assert float(result.heatmaps[k].max()) == pytest.approx(1.0, abs=1e-3)
        np.testing.assert_allclose(result.heatmaps[k].astype(np.float32), raw[k].numpy() / peak, atol=2e-3)
        assert result.stats[c]["mean_normalized"] == pytest.approx(float(raw[k].mean()) / peak, rel=1e-5)
    assert result.heatmap("ONL+IS") is result.heatmaps[1] or np.array_equal(result.heatmap(5), result.heatmaps[1])


def test_coarse_layer_and_2d_input(trained, scans):
    result = run_generator(gradcam(scans[0], trained, classes=[3], layer="decoder.2"))
    assert result.heatmaps.shape == (1, 1, 32, 48)
    assert float(result.heatmaps.min()) >= 0.0


def _reinitialised(net: SegNet, cascade: bool, seed: int) -> LoadedModel:
    """Adebayo et al.'s randomisation: every weight anew, or (cascade) the decoder and classifier only."""
    fresh = copy.deepcopy(net)
    torch.manual_seed(seed)
    modules = list(fresh.decoder.modules()) + [fresh.classifier] if cascade else list(fresh.modules())
    for m in modules:
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return LoadedModel(model=fresh.eval())


@pytest.mark.parametrize("cascade", [False, True])
def test_model_randomisation_destroys_maps(trained, scans, cascade):
    # target="image": a random network predicts one class everywhere, so with target="predicted"
    # most of its maps would be trivially zero; scoring the whole image keeps every map alive.
    classes = (1, 2, 5, 6, 7, 8)
    first = run_generator(gradcam(scans, trained, classes=classes, target="image"))
    again = run_generator(gradcam(scans, trained, classes=classes, target="image"))
    np.testing.assert_array_equal(first.heatmaps, again.heatmaps)
    # A class whose map is flat (all zero after the ReLU) has no spatial pattern to destroy.
    alive = [k for k in range(len(classes)) if first.heatmaps[k].astype(np.float32).std() > 0]
    assert len(alive) >= 3, "most maps must be non-flat, or the test proves nothing"
    # One random draw of weights is a noisy sample (mean |rho| 0.13-0.51 over 8 seeds for the cascade on one
    # machine, where the encoder it keeps still outlines the layers): the mean over 4 draws is what is judged.
    rhos = []
    for seed in range(4):
        other = run_generator(
            gradcam(scans, _reinitialised(trained.model, cascade, seed), classes=classes, target="image")
        )
        for k in alive:
            a = first.heatmaps[k].astype(np.float32).ravel()
            b = other.heatmaps[k].astype(np.float32).ravel()
            rhos.append(abs(float(spearmanr(a, b).statistic)) if b.std() > 0 else 0.0)
    assert np.mean(rhos) < 0.4, rhos
    k = alive[0]
    assert float(spearmanr(first.heatmaps[k].ravel(), again.heatmaps[k].ravel()).statistic) == pytest.approx(1.0)


def test_hooks_removed_and_mode_restored_after_exception(trained, scans):
    net = trained.model
    net.train()
    layer = net.gradcam_layers()["decoder"]
    calls = []

    def failing(*_):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom in the second batch")

    user_hook = net.classifier.register_forward_hook(failing)
    hooks_before = (dict(layer._forward_hooks), dict(net.classifier._forward_hooks))
    try:
        with pytest.raises(RuntimeError, match="boom"):
            run_generator(gradcam(scans, trained, batch_size=1))
        assert (dict(layer._forward_hooks), dict(net.classifier._forward_hooks)) == hooks_before
        assert net.training and all(m.training for m in net.modules())
        assert all(p.requires_grad for p in net.parameters())
    finally:
        user_hook.remove()
        net.eval()
    assert not layer._forward_hooks


def test_cancel_stops_with_cancelled_and_restores(trained, scans):
    stop = threading.Event()
    gen = gradcam(scans, trained, cancel=stop.is_set)
    assert next(gen).done == 0
    assert next(gen).done == 1
    stop.set()
    with pytest.raises(Cancelled):
        next(gen)
    assert not trained.model.training
    assert not any(m._forward_hooks for m in trained.model.modules())
    with pytest.raises(Cancelled):
        run_generator(gradcam(scans, trained, cancel=lambda: True))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": ["macula"]}, "unknown class"),
        ({"classes": [10]}, "outside"),
        ({"classes": [2, "GCL+IPL"]}, "twice"),
        ({"layer": "encoder.0"}, "unknown Grad-CAM layer"),
        ({"target": "everything"}, "target"),
        ({"device": "tpu"}, "unknown device"),
        ({"batch_size": 0}, "batch size"),
    ],
)
def test_bad_arguments_fail_before_work(tiny_model, kwargs, message):
    gen = gradcam(np.ones((2, 16, 16), np.float32), tiny_model, **kwargs)
    with pytest.raises(InputError, match=message):
        next(gen)


def test_nan_input_is_one_clear_error(tiny_model):
    data = np.ones((2, 16, 16), np.float32)
    data[1, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        next(gradcam(data, tiny_model))


def test_wrong_dimensions_are_one_clear_error(tiny_model):
    with pytest.raises(InputError, match="n_bscans, depth, width"):
        next(gradcam(np.ones((2, 2, 16, 16), np.float32), tiny_model))


def test_resolve_classes_accepts_names_and_digits():
    names = ("a", "B", "c")
    assert resolve_classes(None, names) == (0, 1, 2)
    assert resolve_classes(["b", "2", 0], names) == (1, 2, 0)


def test_mass_near_region_exact():
    labels = np.zeros((1, 20, 20), np.uint8)
    labels[0, 10, :] = 3
    heat = np.zeros((2, 1, 20, 20), np.float32)
    heat[0, 0, 10, 4] = 2.0  # on the region
    heat[0, 0, 15, 4] = 1.0  # 5 px away: counted
    heat[0, 0, 16, 4] = 1.0  # 6 px away: not counted
    assert mass_near_region(heat, labels, [3, 4], radius_px=5)[0] == pytest.approx(0.75)
    result = mass_near_region(heat, labels, [3, 4], radius_px=5)
    assert np.isnan(result[1])  # all-zero map
    heat[1, 0, 0, 0] = 1.0
    assert mass_near_region(heat, labels, [3, 4])[1] == 0.0  # class 4 absent, mass elsewhere

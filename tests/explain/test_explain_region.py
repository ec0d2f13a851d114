"""Grad-CAM that answers a question: regions, the shared backward pass, the default layer, faithfulness."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_explain import _train_tiny, _x, band_images

from napari_octseg.core.errors import InputError
from napari_octseg.core.progress import run_generator
from napari_octseg.explain import (
    DEFAULT_LAYER,
    SCORE_MAP_LAYERS,
    gradcam,
    gradcam_batch,
    label_mask,
    parse_region,
    polygon_mask,
    rectangle_mask,
)
from napari_octseg.explain.faithfulness import curve_area, deletion_curves, deletion_order, rank_correlation
from napari_octseg.models import LoadedModel
from napari_octseg.models.normalization import normalize_bscans

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained() -> LoadedModel:
    return LoadedModel(model=_train_tiny(), source="<trained tiny>")


@pytest.fixture(scope="module")
def scans() -> np.ndarray:
    return band_images(3, seed=1)[0]


@pytest.mark.parametrize("layer", ["decoder.1", "decoder.2", "bottleneck"])
@pytest.mark.parametrize("target", ["predicted", "image"])
def test_shared_backward_passes_give_the_per_class_maps(trained, scans, layer, target):
    """Classes seeded together (disjoint footprints, autograd) get exactly the maps of one pass per class."""
    x = _x(scans)
    shared, pred, _ = gradcam_batch(trained.model, layer, x, range(10), target=target, row_bands=False)
    alone, _, _ = gradcam_batch(trained.model, layer, x, range(10), target=target, share_passes=False, row_bands=False)
    assert len(np.unique(pred.numpy())) >= 6
    scale = float(alone.abs().max())
    torch.testing.assert_close(shared, alone, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("layer", ["decoder.1", "decoder.2", "bottleneck"])
def test_split_decoder_inputs_keep_the_network_and_the_autograd_maps(trained, scans, layer):
    """inference_network convolves each decoder level's unpooled and skip halves apart: same logits, same
    autograd maps, and autograd differentiates only the unpooled half below the layer (the encoder skips
    are constant there); the bottleneck's own level (its skip is the layer) differentiates both."""
    import copy

    from napari_octseg.models.runtime import inference_network
    from napari_octseg.models.segnet import SplitInputConv

    net = copy.deepcopy(trained.model).eval()
    split = inference_network(net, torch.device("cpu")).to(memory_format=torch.contiguous_format)
    kinds = [type(block[0]).__name__ for block in split.decoder]
    assert kinds == ["SplitInputConv"] * len(kinds), kinds
    level = len(kinds) - 1 if layer == "bottleneck" else int(layer[8:])
    x = _x(scans)
    with torch.no_grad():
        torch.testing.assert_close(split(x), net(x), rtol=1e-5, atol=1e-5)
    classes = [0, 2, 5, 7, 9]
    skip_grad: dict[int, bool] = {}
    for target in ("predicted", "image"):
        skip_grad.clear()
        handles = [
            block[0].skip.register_forward_hook(lambda _m, inp, _o, j=j: skip_grad.__setitem__(j, inp[0].requires_grad))
            for j, block in enumerate(split.decoder)
            if isinstance(block[0], SplitInputConv)
        ]
        try:
            a = gradcam_batch(net, layer, x, classes, target=target, row_bands=False)[0]
            b = gradcam_batch(split, layer, x, classes, target=target, row_bands=False)[0]
        finally:
            for h in handles:
                h.remove()
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6 * float(a.abs().max()))
        assert [skip_grad[j] for j in range(level)] == [False] * level
        assert skip_grad[level] == (layer == "bottleneck")


def test_footprint_bounds_the_gradient(trained, scans):
    """Outside the stated footprint of a seeded pixel the gradient at the layer is exactly zero."""
    net = trained.model
    for layer in ["decoder.1", "decoder.2", "bottleneck"]:
        stride, radius = net.gradcam_footprint(layer)
        captured = {}

        def hook(_m, _i, out, captured=captured):
            leaf = out.detach().requires_grad_(True)
            captured["a"] = leaf
            return leaf

        handle = net.gradcam_layers()[layer].register_forward_hook(hook)
        try:
            logits = net(_x(scans[:1]))
            logits[0, 3, 16, 20].backward()
        finally:
            handle.remove()
        g = captured["a"].grad[0].abs().sum(0)
        ys, xs = np.nonzero(g.numpy())
        # block of layer position q: rows q*stride .. q*stride+stride-1; distance to pixel (16, 20)
        dy = np.maximum(np.maximum(ys * stride - 16, 16 - (ys * stride + stride - 1)), 0)
        dx = np.maximum(np.maximum(xs * stride - 20, 20 - (xs * stride + stride - 1)), 0)
        assert len(ys) > 0 and np.maximum(dy, dx).max() <= radius, layer


def test_region_and_whole_bscan_maps_differ_at_a_context_layer(trained, scans):
    """Unlike at the paper's layers (below), a region and the whole B-scan give different maps (measured on
    this tiny model at decoder.2: Spearman 0.34-0.98 per class); the default layer on real data is checked
    by the bundled-model test at the end."""
    mask = rectangle_mask(scans.shape, 1, 4, 30, 14, 46)
    region = run_generator(gradcam(scans, trained, layer="decoder.2", region=mask))
    whole = run_generator(gradcam(scans, trained, layer="decoder.2", target="image"))
    assert region.target == "region" and region.bscans == (1,) and not region.heatmaps[:, [0, 2]].any()
    rhos = [
        rank_correlation(region.heatmaps[k, 1].astype(np.float32), whole.heatmaps[k, 1].astype(np.float32), size=32)
        for k in range(10)
    ]
    rhos = [r for r in rhos if np.isfinite(r)]
    assert len(rhos) >= 5 and min(rhos) < 0.55, rhos


@pytest.mark.parametrize("layer", SCORE_MAP_LAYERS)
def test_at_the_papers_layers_the_question_does_not_matter(trained, scans, layer):
    """There Grad-CAM is a rescaled class-score map: a region and the whole B-scan give the same maps."""
    mask = rectangle_mask(scans.shape, 1, 4, 30, 14, 46)
    region = run_generator(gradcam(scans, trained, layer=layer, region=mask))
    whole = run_generator(gradcam(scans[1:2], trained, layer=layer, target="image"))
    np.testing.assert_allclose(region.heatmaps[:, 1].astype(np.float32), whole.heatmaps[:, 0], atol=2e-3)


def test_region_helpers():
    shape = (3, 20, 30)
    m = rectangle_mask(shape, 2, 15, 25, 5, 10)  # corners in either order
    assert m.sum() == 10 * 15 and m[2, 5:15, 10:25].all() and not m[:2].any()
    p = polygon_mask(shape, 0, [(2, 2), (2, 12), (12, 2)])
    assert p[0].sum() > 30 and not p[1:].any()
    labels = np.zeros(shape, np.uint8)
    labels[1, 3:5] = 7
    assert label_mask(labels, 1, 7).sum() == 60
    assert parse_region("1, 0, 0, 20, 30", shape)[1].all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: rectangle_mask(s, 3, 0, 0, 5, 5), "B-scan 3 does not exist"),
        (lambda s: rectangle_mask(s, -1, 0, 0, 5, 5), "does not exist"),
        (lambda s: rectangle_mask(s, 0, 0, 0, 21, 5), "outside"),
        (lambda s: rectangle_mask(s, 0, -2, 0, 5, 5), "outside"),
        (lambda s: rectangle_mask(s, 0, 4, 0, 4, 5), "empty"),
        (lambda s: polygon_mask(s, 0, [(0, 0), (5, 5)]), "3 finite"),
        (lambda s: polygon_mask(s, 0, [(0, 0), (50, 5), (5, 0)]), "outside"),
        (lambda s: label_mask(np.zeros(s, np.uint8), 0, 9), "no pixel"),
        (lambda s: parse_region("1,2,3", s), "B,Y0,X0,Y1,X1"),
        (lambda s: parse_region("1.5,0,0,5,5", s), "B,Y0,X0,Y1,X1"),
        (lambda s: parse_region("a,0,0,5,5", s), "B,Y0,X0,Y1,X1"),
    ],
)
def test_bad_regions_are_one_line(call, message):
    with pytest.raises(InputError, match=message) as info:
        call((3, 20, 30))
    assert "\n" not in str(info.value)


def test_region_mask_must_match_the_volume(trained, scans):
    with pytest.raises(InputError, match="does not match"):
        next(gradcam(scans, trained, region=np.ones((2, 32, 48), bool)))
    with pytest.raises(InputError, match="empty"):
        next(gradcam(scans, trained, region=np.zeros(scans.shape, bool)))


def test_channel_weights_in_the_table(trained, scans):
    result = run_generator(gradcam(scans, trained, classes=[1, 3]))
    assert result.channel_weights is not None and result.channel_weights.shape[0] == 2
    row = result.stats_rows()[1]
    assert row["weight_sum"] == pytest.approx(float(result.channel_weights[1].sum()), rel=1e-5)
    assert row["layer"] == DEFAULT_LAYER and row["name"] == "INL"


def test_deletion_order_and_area():
    rng = np.random.default_rng(0)
    order = deletion_order(np.array([[0.0, 3.0], [1.0, 0.0]]), rng)
    assert list(order[:2]) == [1, 2] and set(order[2:]) == {0, 3}
    assert curve_area(np.array([1.0, 1.0, 1.0]), (0.5, 1.0)) == pytest.approx(1.0)
    assert curve_area(np.array([1.0, 0.0, 0.0]), (0.5, 1.0)) == pytest.approx(0.25)


def test_deleting_a_class_by_its_score_map_beats_random(trained, scans):
    """On the tiny model, removing a class's own pixels first drops its score faster than random order."""
    net = trained.model
    img = normalize_bscans(scans[:1])[0]
    with torch.no_grad():
        logits = net(torch.from_numpy(img[None, None]))[0].numpy()
    pred = logits.argmax(0)
    classes = [c for c in (1, 3, 5, 7) if (pred == c).sum() > 20]
    weights = np.stack([(pred == c) / (pred == c).sum() for c in classes]).astype(np.float32)
    rng = np.random.default_rng(0)
    fill = np.full_like(img, img.mean())
    own = np.stack([deletion_order(pred == c, rng) for c in classes])
    rand = deletion_order(rng.random(img.shape), rng)[None]
    fr = (0.05, 0.1, 0.2)
    a_own = curve_area(deletion_curves(net, img, classes, weights, own, fill, torch.device("cpu"), fr), fr)
    a_rand = curve_area(deletion_curves(net, img, classes, weights, rand, fill, torch.device("cpu"), fr), fr)
    assert len(classes) >= 3 and np.nanmean(a_own) < np.nanmean(a_rand) - 0.05, (a_own, a_rand)


def test_bundled_model_region_vs_whole_bscan_on_real_data(duke_dir, bundled_model):
    """The done-when of the region feature, at the default settings on a Duke validation B-scan."""
    model = bundled_model
    with np.load(duke_dir / "Subject_07.npz") as z:
        img = z["images"][5].astype(np.float32)
    classes = [1, 3, 5, 7]
    mask = rectangle_mask((1, *img.shape), 0, 150, 200, 250, 300)
    region = run_generator(gradcam(img, model, classes, region=mask, device="cpu"))
    whole = run_generator(gradcam(img, model, classes, target="image", device="cpu"))
    rhos = [rank_correlation(region.heatmaps[k, 0], whole.heatmaps[k, 0]) for k in range(len(classes))]
    # measured at the default layer (decoder.2) with the bundled model: Spearman 0.58-0.94 (median 0.67);
    # at the paper's layers the two maps are identical (test above)
    assert np.nanmedian(rhos) < 0.85, rhos

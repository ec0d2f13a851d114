"""Hand-written row-band backward passes (explain._bands): the same gradients as autograd, or not used."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from test_explain import _train_tiny, _x, band_images

from napari_octseg.explain._bands import band_plan
from napari_octseg.explain._batch import gradcam_batch
from napari_octseg.models import SegNet, SegNetConfig
from napari_octseg.models.runtime import inference_network

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def nets() -> dict[str, SegNet]:
    """The tiny trained SegNet with its BatchNorm (eval mode), the same folded and channels-last (as Grad-CAM
    of a volume runs it), and a deeper untrained one with BatchNorm statistics away from the identity."""
    tiny = _train_tiny()
    torch.manual_seed(3)
    deep = SegNet(SegNetConfig(widths=(4, 6, 8, 8)))
    for m in deep.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return {"tiny": tiny, "folded": inference_network(tiny, torch.device("cpu")), "deep": deep.eval()}


@pytest.fixture(scope="module")
def tall() -> torch.Tensor:
    """Band images 80 rows tall (the bands cover a part of the height), 3 B-scans."""
    return _x(band_images(3, h=80, w=40, seed=5)[0])


def _questions(x: torch.Tensor) -> list[dict]:
    n, _, h, w = x.shape
    rows = torch.zeros((n, h, w), dtype=torch.bool)
    rows[:, 30:34, 5:20] = True
    first = torch.zeros((n, h, w), dtype=torch.bool)
    first[:, 0, :] = True  # the top row: a band clamped at the image's edge
    last = torch.zeros((n, h, w), dtype=torch.bool)
    last[:, h - 1, 3] = True  # one pixel of the bottom row
    return [
        {"target": "predicted"},
        {"target": "image"},
        {"target": "predicted", "reduction": "sum"},
        {"region": rows},
        {"region": first},
        {"region": last},
    ]


@pytest.mark.parametrize("name", ["tiny", "folded", "deep"])
def test_row_bands_give_autograds_weights_and_maps(nets, tall, name):
    """Every decoder level after the finest and the bottleneck, every kind of question: the channel weights
    and maps of one autograd pass per class, to float rounding."""
    net = nets[name]
    layers = [*(f"decoder.{i}" for i in range(1, net.depth)), "bottleneck"]
    assert all(band_plan(net, layer) is not None for layer in layers)
    for layer in layers:
        for q in _questions(tall):
            bands = gradcam_batch(net, layer, tall, range(10), **q)
            ref = gradcam_batch(net, layer, tall, range(10), row_bands=False, share_passes=False, **q)
            assert torch.equal(bands.pred, ref.pred)
            scale = float(ref.weights.abs().max())
            assert scale > 0, "all-zero gradients would prove nothing"
            torch.testing.assert_close(bands.weights, ref.weights, rtol=1e-4, atol=1e-6 * scale)
            cam_scale = float(ref.cams.abs().max())
            torch.testing.assert_close(bands.cams, ref.cams, rtol=1e-4, atol=1e-5 * max(cam_scale, 1e-12))


def test_row_bands_do_not_apply_where_they_would_be_wrong(nets):
    """Layers with a closed form, unknown layers, training mode, active dropout, a conv it does not know and
    other networks keep autograd."""
    tiny = nets["tiny"]
    for layer in ("decoder", "decoder.0", "final", "decoder.3", "decoder.x", "encoder.1"):
        assert band_plan(tiny, layer) is None, layer
    training = copy.deepcopy(tiny).train()
    assert band_plan(training, "decoder.1") is None
    drop = SegNet(SegNetConfig(widths=(4, 8, 8), dropout=0.2)).eval()
    assert band_plan(drop, "decoder.1") is not None  # eval mode: dropout is the identity
    assert band_plan(drop.train(), "decoder.1") is None
    unknown = copy.deepcopy(tiny)
    unknown.decoder[1][0] = torch.nn.Conv2d(16, 8, 3, padding=2, dilation=2)  # a first conv it does not know
    assert band_plan(unknown, "decoder.2") is None
    assert band_plan(torch.nn.Sequential(torch.nn.Conv2d(1, 10, 3)), "decoder.1") is None


def test_row_band_hooks_are_removed(nets, tall):
    """After Grad-CAM the network carries no hook of the bands' and gives the same logits."""
    net = nets["tiny"]
    with torch.no_grad():
        before = net(tall)
    gradcam_batch(net, "decoder.2", tall, range(10))
    modules = list(net.modules())
    assert not any(m._forward_hooks for m in modules)
    with torch.no_grad():
        torch.testing.assert_close(net(tall), before)
    assert np.isfinite(before.numpy()).all()

"""gradcam(window=True): Grad-CAM of a volume on the segmentation's retina window.

The network is a tiny SegNet (so that Grad-CAM has its layers and gradients) plus a pixel-wise term that
decides every label from the grey value alone (so that the labels, and therefore the windows, are known
exactly). The pixel-wise term does not depend on the Grad-CAM layer's activations, so the maps are the
SegNet's own. Its receptive field (about 35 rows) is smaller than the window's margins: inside the retina,
a windowed map is the full-height map (to float rounding) when the window is aligned with the pooling grid.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _toy import grey_level_bscan  # tests/ is on sys.path through its conftest

from napari_octseg.core.classes import N_CLASSES
from napari_octseg.core.progress import run_generator
from napari_octseg.core.retina_window import MARGIN_ABOVE, RowWindow, surfaces_from_labels, window_from_surfaces
from napari_octseg.explain import gradcam
from napari_octseg.explain._batch import gradcam_batch
from napari_octseg.explain._window import gradcam_window
from napari_octseg.models import LoadedModel, SegNet, SegNetConfig

torch.set_num_threads(1)
HEIGHT, WIDTH, LAYER = 256, 24, 4  # seven layers LAYER rows thick; the SegNet pools to multiples of 8
RETINA = list(range(1, 8))


class GreyValueSegNet(SegNet):
    """A SegNet whose labels are decided pixel by pixel: class c (0..8) where the grey value is c / 8."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = super().forward(x)
        levels = torch.arange(N_CLASSES - 1, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) / 8
        grey = torch.cat([-5000.0 * (x - levels) ** 2, torch.full_like(x, -1e4)], dim=1)
        return logits + grey.detach()


def _bscan(ilm_row: int, tilt: int = 0) -> np.ndarray:
    return grey_level_bscan(ilm_row, HEIGHT, WIDTH, LAYER, tilt)


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    torch.manual_seed(0)
    net = GreyValueSegNet(SegNetConfig(widths=(4, 8, 8))).eval()
    return LoadedModel(model=net, source="<grey-value SegNet>")


def _gradcam(volume: np.ndarray, model: LoadedModel, layer: str = "decoder.1", classes=None, **kwargs):
    return run_generator(gradcam(volume, model, classes, layer, device="cpu", **kwargs))


def _raw(result, k: int, b: int) -> np.ndarray:
    """Class position ``k``'s map of B-scan ``b`` on its raw Grad-CAM scale."""
    return result.heatmaps[k, b].astype(np.float32) * result.stats[result.classes[k]]["max"]


def test_a_windowed_map_is_the_full_height_map_inside_the_retina():
    torch.manual_seed(0)
    net = GreyValueSegNet(SegNetConfig(widths=(4, 8, 8))).eval()
    x = torch.from_numpy(_bscan(104)[None, None])
    # top = 104 - 48 = 56, a multiple of 8: the window's pooling cells are the full pass's
    window = window_from_surfaces(np.array([104.0]), np.array([132.0]), HEIGHT, 8)
    assert window is not None and window.top == 104 - MARGIN_ABOVE and window.top % 8 == 0
    for layer in ("decoder", "decoder.1"):
        full = gradcam_batch(net, layer, x, RETINA)
        part = gradcam_window(net, layer, x, RETINA, window)
        assert (part.windowed, part.reruns) == (1, 0)
        np.testing.assert_array_equal(part.result.pred.numpy(), full.pred.numpy())
        band = slice(window.top + 36, window.bottom - 36)  # beyond the receptive field of the window's edges
        a, b = full.cams[:, :, band].numpy(), part.result.cams[:, :, band].numpy()
        assert a.max() > 0
        # the same scale: the windowed weights are averaged over the full B-scan's layer positions
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4 * a.max())
        np.testing.assert_allclose(part.result.weights.numpy(), full.weights.numpy(), rtol=1e-3, atol=1e-6)
        cams = part.result.cams
        assert (cams[:, :, : window.top] == 0).all() and (cams[:, :, window.bottom :] == 0).all()


def test_the_volume_is_explained_on_the_window_with_the_labels_of_the_full_pass(model):
    volume = np.stack([_bscan(100 + 2 * i, tilt=6) for i in range(6)])
    full = _gradcam(volume, model, window=False)
    win = _gradcam(volume, model)
    assert (full.window_bscans, full.window_reruns) == (0, 0)
    assert (win.window_bscans, win.window_reruns) == (5, 0)  # the first B-scan found the retina, at full height
    np.testing.assert_array_equal(win.labels, full.labels)  # 0 above the window, 8 below, as the image says
    outside = 0.0
    for b in range(1, len(volume)):
        w = window_from_surfaces(*surfaces_from_labels(full.labels[b - 1 : b]), HEIGHT, 8)
        assert w is not None and w.top > 0 and w.bottom < HEIGHT
        assert not win.heatmaps[:, b, : w.top].any() and not win.heatmaps[:, b, w.bottom :].any()
        assert win.heatmaps[:, b, w.top : w.bottom].max() > 0
        outside = max(outside, float(full.heatmaps[:, b, : w.top].max()), float(full.heatmaps[:, b, w.bottom :].max()))
    assert outside > 0  # the full-height maps are not zero there: the window made the difference
    for c in range(N_CLASSES):
        stats = win.stats[c]
        explained = win.heatmap(c).astype(np.float64)
        assert stats["mean_normalized"] == pytest.approx(explained.mean(), rel=1e-2, abs=1e-6)  # zeros count


def test_a_region_outside_the_window_is_answered_at_full_height(model):
    volume = np.stack([_bscan(100, tilt=6) for _ in range(4)])
    region = np.zeros(volume.shape, bool)
    region[:3, 110:120, 4:12] = True  # inside the retina, and so inside the window
    region[3, 10:20, 4:12] = True  # in the vitreous, far above the window
    win = _gradcam(volume, model, region=region)
    assert win.target == "region" and win.bscans == (0, 1, 2, 3)
    assert (win.window_bscans, win.window_reruns) == (2, 0)  # B-scans 1 and 2; 3 was never windowed
    alone = _gradcam(volume[3:], model, region=region[3:], window=False)
    for k in range(len(win.classes)):
        a, b = _raw(win, k, 3), _raw(alone, k, 0)
        np.testing.assert_allclose(a, b, rtol=2e-2, atol=2e-3 * max(float(b.max()), 1e-12))


def test_an_unordered_stack_stops_using_the_window(model):
    volume = np.stack([_bscan(r) for r in [30, 150] * 6])
    full = _gradcam(volume, model, "decoder", window=False)
    win = _gradcam(volume, model, "decoder")
    np.testing.assert_array_equal(win.labels, full.labels)
    assert win.window_bscans == 0
    assert win.window_reruns == 5  # gave up after five refusals instead of paying twice for all eleven


def test_a_cut_retina_is_refused_and_computed_at_full_height():
    torch.manual_seed(0)
    net = GreyValueSegNet(SegNetConfig(widths=(4, 8, 8))).eval()
    x = torch.from_numpy(np.stack([_bscan(104), _bscan(60)])[:, None])
    window = RowWindow(top=56, height=144, image_height=HEIGHT)
    part = gradcam_window(net, "decoder", x, list(range(N_CLASSES)), window)
    assert (part.windowed, part.reruns) == (1, 1)
    full = gradcam_batch(net, "decoder", x[1:], list(range(N_CLASSES)))
    np.testing.assert_array_equal(part.result.pred[1].numpy(), full.pred[0].numpy())
    np.testing.assert_allclose(part.result.cams[:, 1].numpy(), full.cams[:, 0].numpy(), rtol=1e-5, atol=1e-7)


def test_a_whole_bscan_question_never_uses_the_window(model):
    # target="image" asks about every pixel of the B-scan; a window would shrink the question to its rows
    volume = np.stack([_bscan(100, tilt=6) for _ in range(4)])
    image = _gradcam(volume, model, target="image")
    predicted = _gradcam(volume, model)
    assert (image.window_bscans, image.window_reruns) == (0, 0)
    assert predicted.window_bscans == 3  # the same volume is windowed for the default question


def test_other_class_schemes_never_use_the_window():
    torch.manual_seed(0)
    net = SegNet(SegNetConfig(widths=(4, 8, 8), n_classes=4)).eval()
    loaded = LoadedModel(model=net, class_names=("a", "b", "c", "d"), source="<4 classes>")
    volume = np.stack([_bscan(100) for _ in range(4)])
    result = _gradcam(volume, loaded)
    assert (result.window_bscans, result.window_reruns) == (0, 0)


def test_bundled_model_windowed_maps_follow_the_full_height_maps_on_real_data(duke_dir, bundled_model):
    """On Duke B-scans the window changes the network's context, not what the maps say about the retina."""
    from napari_octseg.explain.faithfulness import rank_correlation

    model = bundled_model
    with np.load(duke_dir / "Subject_07.npz") as z:
        volume = z["images"][3:7].astype(np.float32)
    classes = [1, 3, 5, 7]
    full = _gradcam(volume, model, window=False, classes=classes)
    win = _gradcam(volume, model, window=True, classes=classes)
    assert win.window_bscans >= 2
    assert (win.labels == full.labels).mean() > 0.99
    rhos = []
    for b in range(1, len(volume)):
        retina = np.flatnonzero(((full.labels[b] >= 1) & (full.labels[b] <= 7)).any(axis=1))
        band = slice(int(retina[0]), int(retina[-1]) + 1)
        for k in range(len(classes)):
            rhos.append(rank_correlation(win.heatmaps[k, b, band], full.heatmaps[k, b, band]))
    # measured with the bundled model at decoder.1 (Subject_07 B-scans 4-6): Spearman 0.91-1.0, median 0.98
    assert np.nanmin(rhos) > 0.8, rhos

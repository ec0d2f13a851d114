"""segment(window=True): the network sees only the rows around the retina, and the labels do not change.

A stand-in network classifies each pixel by its grey value alone (no context), so a windowed pass and a
full-height pass must give identical labels wherever the window holds the retina; the tests also check
that the window was really used, and that B-scans whose retina left the window are run again.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _toy import grey_level_bscan  # tests/ is on sys.path through its conftest
from torch import nn

from napari_octseg.core.classes import N_CLASSES
from napari_octseg.core.progress import run_generator
from napari_octseg.inference import segment
from napari_octseg.models import LoadedModel

HEIGHT, WIDTH, LAYER = 256, 24, 4  # nine ordered classes, the seven layers LAYER rows thick


class GreyValueNet(nn.Module):
    """Class c (0..8) where the normalised grey value is c / 8; fluid never. Pixel-wise, so no context."""

    depth = 3  # the pipeline pads to multiples of 2 ** depth, as for a SegNet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = torch.arange(N_CLASSES - 1, dtype=x.dtype, device=x.device).view(1, -1, 1, 1) / 8
        logits = -5000.0 * (x - levels) ** 2
        fluid = torch.full_like(x, -1e4)
        return torch.cat([logits, fluid], dim=1)


def _bscan(ilm_row: int, tilt: int = 6) -> np.ndarray:
    return grey_level_bscan(ilm_row, HEIGHT, WIDTH, LAYER, tilt)


@pytest.fixture
def model() -> LoadedModel:
    return LoadedModel(model=GreyValueNet(), source="<grey-value test model>")


def _run(volume: np.ndarray, model: LoadedModel, **kwargs):
    return run_generator(segment(volume, model, batch_size=3, device="cpu", **kwargs))


def test_windowed_labels_equal_the_full_height_pass(model):
    volume = np.stack([_bscan(100 + 2 * i) for i in range(7)])
    full = _run(volume, model, window=False, return_probabilities=True, return_uncertainty=True)
    win = _run(volume, model, window=True, return_probabilities=True, return_uncertainty=True)
    assert full.window_bscans == 0
    assert win.window_bscans == 6 and win.window_reruns == 0  # the first B-scan found the retina, at full height
    np.testing.assert_array_equal(win.labels, full.labels)
    np.testing.assert_allclose(win.probabilities.astype(np.float32), full.probabilities.astype(np.float32), atol=1e-3)
    np.testing.assert_allclose(win.uncertainty.astype(np.float32), full.uncertainty.astype(np.float32), atol=1e-3)
    assert win.provenance()["retina_window"] == {"bscans": 6, "rerun_full_height": 0}
    # and the decoding really is anatomical: ILM at row 100 in the first A-scan
    assert (full.labels[0, :100, 0] == 0).all() and full.labels[0, 100, 0] == 1


def test_a_bscan_whose_retina_jumped_out_of_the_window_is_run_again(model):
    rows = [100, 102, 104, 20, 22, 24, 26]  # B-scan 3 jumps 84 rows up (a motion jump)
    volume = np.stack([_bscan(r) for r in rows])
    full = _run(volume, model, window=False)
    win = _run(volume, model, window=True)
    assert win.window_reruns >= 1
    np.testing.assert_array_equal(win.labels, full.labels)


def test_an_unordered_stack_stops_using_the_window(model):
    # every B-scan's retina is where the previous one's window is not: each window is refused
    rows = [30, 150] * 6
    volume = np.stack([_bscan(r, tilt=0) for r in rows])
    full = _run(volume, model, window=False)
    win = run_generator(segment(volume, model, batch_size=1, device="cpu", window=True))
    np.testing.assert_array_equal(win.labels, full.labels)
    assert win.window_bscans == 0
    assert win.window_reruns == 5  # gave up after five refusals instead of paying twice for all eleven


def test_the_raw_argmax_never_uses_the_window(model):
    volume = np.stack([_bscan(100) for _ in range(4)])
    result = _run(volume, model, window=True, ordered=False)
    assert result.window_bscans == 0


def test_a_window_at_the_image_top_is_a_window_not_a_rerun(model):
    volume = np.stack([_bscan(8 + i) for i in range(5)])  # the window is clamped to start at row 0
    full = _run(volume, model, window=False)
    win = _run(volume, model, window=True, return_uncertainty=True)
    assert win.window_bscans == 4 and win.window_reruns == 0
    np.testing.assert_array_equal(win.labels, full.labels)

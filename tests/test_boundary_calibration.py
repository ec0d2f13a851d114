"""Sub-pixel boundary edges and the per-boundary calibration a checkpoint may carry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_octseg.core.errors import CheckpointError
from napari_octseg.core.progress import run_generator
from napari_octseg.core.volume import OctVolume
from napari_octseg.inference import segment
from napari_octseg.models import SegNet, SegNetConfig, load_checkpoint, save_checkpoint
from napari_octseg.models.checkpoint import LoadedModel
from napari_octseg.ordering import labels_from_edges, ordered_edges

ROWS = [10, 14, 20, 25, 28, 36, 40, 44]  # first row of classes 1..8


def _soft_probs(h: int = 60, w: int = 6, blur: float = 1.5) -> torch.Tensor:
    """(1, 10, h, w) probabilities of a layer stack whose boundaries are soft (logistic, ``blur`` rows)."""
    y = np.arange(h, dtype=np.float64)[:, None] + 0.5
    # P(class >= k) rises smoothly through each boundary; class probabilities are its differences
    ge = [np.ones((h, w))] + [1 / (1 + np.exp(-(y - r) / blur)) * np.ones((1, w)) for r in ROWS] + [np.zeros((h, w))]
    p = np.stack([ge[k] - ge[k + 1] for k in range(9)] + [np.zeros((h, w))])
    return torch.from_numpy(np.clip(p, 1e-6, None).astype(np.float32))[None]


def test_subpixel_edges_rasterise_to_the_integer_labels():
    probs = _soft_probs() * (1 + 0.2 * torch.rand(1, 10, 60, 6, generator=torch.Generator().manual_seed(0)))
    probs = probs / probs.sum(dim=1, keepdim=True)
    edges = ordered_edges(probs)[0].numpy()
    assert not np.allclose(edges, np.round(edges))  # fractions are kept
    np.testing.assert_allclose(edges, np.tile(np.array(ROWS, np.float32)[:, None], (1, 6)), atol=0.5)
    # the integer split (first row of the class) is what the fractional edge rasterises to
    integer = np.ceil(edges - 0.5)
    np.testing.assert_array_equal(labels_from_edges(edges, 60), labels_from_edges(integer, 60))


def test_offsets_move_each_boundary_and_keep_the_order():
    probs = _soft_probs()
    base = ordered_edges(probs)[0].numpy()
    offsets = [0.0, 0.0, 0.0, 0.0, -2.0, 0.0, 1.0, 0.0]
    moved = ordered_edges(probs, offsets)[0].numpy()
    np.testing.assert_allclose(moved - base, np.array(offsets, np.float32)[:, None] * np.ones((1, 6)), atol=1e-4)
    # an offset that would cross the next boundary is held in order
    crossing = ordered_edges(probs, [0, 0, 0, 0, 0, 0, 0, -20.0])[0].numpy()
    assert (np.diff(crossing, axis=0) >= 0).all()
    with pytest.raises(ValueError, match="8 boundary offsets"):
        ordered_edges(probs, [1.0, 2.0])


def _net() -> SegNet:
    torch.manual_seed(0)
    return SegNet(SegNetConfig(widths=(4, 8), n_classes=10)).eval()


def test_a_checkpoint_carries_its_calibration_and_segment_applies_it(tmp_path, monkeypatch):
    import napari_octseg.forward as forward

    net = _net()
    norm = {"method": "percentile", "low": 1.0, "high": 99.9, "pixel_spacing_um": [4.0, 10.0]}
    offsets = [0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 3.0]
    path = save_checkpoint(tmp_path / "m.pt", net, normalization=norm, decoding={"boundary_offsets_px": offsets})
    loaded = load_checkpoint(path)
    assert loaded.boundary_offsets_px == tuple(offsets)
    plain = LoadedModel(model=net, normalization=norm)
    assert plain.boundary_offsets_px is None
    seen = []

    def spy(probs, offsets_px=None):
        seen.append(offsets_px)
        return ordered_edges(probs, offsets_px)

    monkeypatch.setattr(forward, "ordered_edges", spy)
    vol = OctVolume(data=np.random.default_rng(0).random((1, 40, 24), dtype=np.float32), scale_um=(50.0, 4.0, 10.0))
    a = run_generator(segment(vol, plain, device="cpu"))
    b = run_generator(segment(vol, loaded, device="cpu"))
    assert seen == [None, tuple(offsets)]
    assert b.provenance()["boundary_offsets_px"] == offsets and a.provenance()["boundary_offsets_px"] is None
    # the raw argmax ignores the calibration
    run_generator(segment(vol, loaded, device="cpu", ordered=False))
    assert len(seen) == 2


@pytest.mark.parametrize(
    "decoding",
    [
        {"boundary_offsets_px": [0.0] * 7},
        {"boundary_offsets_px": [float("nan")] + [0.0] * 7},
        {"boundary_offsets_px": [50.0] + [0.0] * 7},
        {"boundary_offsets_px": [True] + [0.0] * 7},
        {"boundary_offsets_px": [0.0] * 8, "exec": "rm -rf /"},
        "offsets",
    ],
)
def test_a_bad_calibration_is_refused_in_one_line(tmp_path, decoding):
    net = _net()
    path = tmp_path / "bad.pt"
    save_checkpoint(path, net)
    payload = torch.load(path, weights_only=True)
    payload["decoding"] = decoding
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="decoding") as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value)


def _reference_edges(probs: torch.Tensor) -> np.ndarray:
    """The decoding's definition, written out plainly: per column and boundary, the first edge t minimising
    the expected misclassified pixels, with the ILM placed first (choroid abstaining), choroid above it read
    as vitreous, fluid counted as retina for ILM and BM and abstaining for the inner boundaries."""
    p = probs[0].double().numpy()
    n_rows, n_cols = p.shape[1:]
    out = np.zeros((8, n_cols))
    for c in range(n_cols):
        col = p[:, :, c]
        retina = col[1:8].sum(axis=0) + col[9]
        ilm_cost = [retina[:t].sum() + col[0, t:].sum() for t in range(n_rows + 1)]
        ilm = int(np.argmin(ilm_cost))
        layers = col[:9].copy()
        layers[0, :ilm] += layers[8, :ilm]
        layers[8, :ilm] = 0
        for k in range(1, 9):
            below = layers[:k].sum(axis=0) + (col[9] if k == 8 else 0)  # P(row belongs above boundary k)
            above = layers[k:].sum(axis=0) + (col[9] if k == 1 else 0)
            cost = [above[:t].sum() + below[t:].sum() for t in range(n_rows + 1)]
            out[k - 1, c] = int(np.argmin(cost))
    return np.maximum.accumulate(out, axis=0)


def test_the_fast_decoding_matches_its_plain_definition():
    g = torch.Generator().manual_seed(1)
    # smooth, realistic probabilities: a soft layer stack with noise in the logits
    logits = torch.log(_soft_probs(h=56, w=12, blur=2.0)) + 0.7 * torch.randn(1, 10, 56, 12, generator=g)
    logits[0, 9] = torch.log(torch.tensor(0.3))  # fluid competes everywhere: it must count where it should
    logits[0, 9, 4:14, :6] = 2.0  # and wins in pockets across the ILM ...
    logits[0, 9, 41:50, 6:] = 2.0  # ... and the BM
    probs = torch.softmax(logits, dim=1)
    fast = ordered_edges(probs)[0].numpy()
    reference = _reference_edges(probs)
    # the sub-pixel edge rasterises to the reference's integer edge
    np.testing.assert_array_equal(np.ceil(fast - 0.5), reference)

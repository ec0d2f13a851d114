"""Synthetic macular volumes: deterministic, anatomically ordered, realistic enough to segment."""

from __future__ import annotations

import numpy as np
import pytest

from napari_octseg.core.classes import BOUNDARY_NAMES, FLUID_CLASS
from napari_octseg.synthetic import make_volume


def _monotone_except_fluid(labels: np.ndarray) -> bool:
    layers = np.where(labels == FLUID_CLASS, 0, labels).astype(int)
    running = np.maximum.accumulate(layers, axis=1)
    return bool(np.all((labels == FLUID_CLASS) | (layers == running)))


def test_deterministic_by_seed():
    a, b = make_volume(3, 64, 48, seed=5), make_volume(3, 64, 48, seed=5)
    c = make_volume(3, 64, 48, seed=6)
    assert np.array_equal(a.data, b.data) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.data, c.data)


def test_shapes_scale_and_layers():
    v = make_volume(4, 128, 96, seed=1)
    assert v.shape == (4, 128, 96) and v.data.dtype == np.float32 and v.labels.dtype == np.uint8
    assert v.scale_um == pytest.approx((5888 / 4, 15.0, 5888 / 96))
    assert list(v.layers) == list(BOUNDARY_NAMES)
    stack = np.stack([v.layers[n] for n in BOUNDARY_NAMES])
    assert np.all(np.diff(stack, axis=0) >= 0)  # surfaces ordered top to bottom
    assert 0.0 <= v.data.min() and v.data.max() <= 1.0
    assert v.laterality == "OD" and v.scan_pattern == "volume"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_follow_the_scheme(seed):
    v = make_volume(5, 96, 64, seed=seed)
    assert _monotone_except_fluid(v.labels)
    assert set(np.unique(v.labels)) <= set(range(10))
    assert v.labels[:, 0].max() == 0 and v.labels[:, -1].min() >= 8  # vitreous on top, choroid below


def test_foveal_pit_and_onl():
    v = make_volume(25, 496, 512, seed=0, fluid=False, noise=0.0)
    k, c = v.meta["fovea_bscan"], v.meta["fovea_column"]
    total = (v.layers["BM"] - v.layers["ILM"])[k] * v.scale_um[1]
    inner = (v.layers["INL/OPL"] - v.layers["ILM"])[k] * v.scale_um[1]
    onl = (v.layers["ISM/ISE"] - v.layers["OPL/ONL"])[k] * v.scale_um[1]
    para = c + int(1200 / v.scale_um[2])
    assert 200 < total[c] < 280 and 280 < total[para] < 370  # µm, as in healthy maculae
    assert inner[c] < 0.25 * inner[para]  # inner layers thin out into the pit
    assert onl[c] > 1.3 * onl[para]  # ONL thickens under the fovea


def test_fluid_present_and_absent():
    wet = make_volume(9, 248, 128, seed=3, fluid=True, n_fluid=4)
    dry = make_volume(9, 248, 128, seed=3, fluid=False)
    assert (wet.labels == FLUID_CLASS).sum() > 30 and (dry.labels == FLUID_CLASS).sum() == 0
    fluid = wet.labels == FLUID_CLASS
    assert wet.data[fluid].mean() < 0.5 * wet.data[(wet.labels == 2)].mean()  # cysts are dark


def test_reflectivity_order():
    v = make_volume(3, 248, 256, seed=0, fluid=False, noise=0.0)
    mean = {c: v.data[v.labels == c].mean() for c in range(9)}
    assert mean[1] > mean[3] and mean[7] > mean[5] and mean[4] > mean[5] and mean[0] < 0.1


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_volume(0)
    with pytest.raises(ValueError):
        make_volume(laterality="left")

"""The ETDRS drawing geometry agrees with the sector geometry that computes the table."""

from __future__ import annotations

import numpy as np
import pytest

from napari_octseg.core.etdrs import (
    ETDRS_RADII_UM,
    ETDRS_SECTORS,
    TSNIT_EDGES_DEG,
    TSNIT_SECTORS,
    _etdrs_sector_of,
)
from napari_octseg.core.etdrs_outline import etdrs_outline, tsnit_label_degrees


def test_circles_spokes_and_labels_match_the_sectors():
    outline = etdrs_outline(n_points=73)
    for circle, radius in zip(outline.circles, ETDRS_RADII_UM, strict=True):
        np.testing.assert_allclose(np.hypot(circle[:, 0], circle[:, 1]), radius)
        np.testing.assert_allclose(circle[0], circle[-1], atol=1e-9)  # closed
    for spoke in outline.spokes:
        np.testing.assert_allclose(np.hypot(*spoke.T), ETDRS_RADII_UM[::2])
        assert abs(spoke[1, 0]) == pytest.approx(abs(spoke[1, 1]))  # on a 45-degree diagonal
    assert list(outline.labels) == list(ETDRS_SECTORS)
    pos = np.array(list(outline.labels.values()))
    np.testing.assert_array_equal(_etdrs_sector_of(pos[:, 0], pos[:, 1]), np.arange(9))


@pytest.mark.parametrize(
    ("eye", "order", "nasal_x", "superior_z"),
    [
        ("OD", "inferior_to_superior", 1, 1),
        ("OS", "inferior_to_superior", -1, 1),
        ("OD", "superior_to_inferior", 1, -1),
    ],
)
def test_outline_on_the_map(eye, order, nasal_x, superior_z):
    placed = etdrs_outline().to_map((3000.0, 4000.0), eye, order)
    assert placed.labels["N2"] == pytest.approx((3000.0, 4000.0 + nasal_x * 2250.0))
    assert placed.labels["S1"] == pytest.approx((3000.0 + superior_z * 1000.0, 4000.0))


def test_tsnit_label_angles_lie_inside_their_sectors():
    mids = tsnit_label_degrees()
    assert list(mids) == list(TSNIT_SECTORS)
    edges = (*TSNIT_EDGES_DEG, TSNIT_EDGES_DEG[0] + 360.0)
    for k, name in enumerate(TSNIT_SECTORS[1:]):
        assert edges[k] < mids[name] < edges[k + 1]

"""core.retina_window: the rows around the retina the network is run on, and when a windowed result is refused."""

from __future__ import annotations

import numpy as np
import pytest

from napari_octseg.core.retina_window import (
    GUARD,
    MARGIN_ABOVE,
    MARGIN_BELOW,
    RowWindow,
    accepted,
    window_from_surfaces,
)


def test_window_holds_the_surfaces_with_margins_in_whole_pooling_cells():
    ilm = np.array([[100.0, 110.0, 120.0]])
    bm = np.array([[180.0, 190.0, 200.5]])
    w = window_from_surfaces(ilm, bm, image_height=496, multiple=32)
    assert w is not None and w.height % 32 == 0
    assert w.top <= 100 - MARGIN_ABOVE and w.bottom >= 201 + MARGIN_BELOW
    assert w.height - (201 + MARGIN_BELOW - (100 - MARGIN_ABOVE)) < 32  # no more than one cell of slack


def test_window_is_moved_inside_the_image():
    w = window_from_surfaces(np.array([10.0]), np.array([60.0]), image_height=496, multiple=32)
    assert w is not None and w.top == 0
    w = window_from_surfaces(np.array([400.0]), np.array([460.0]), image_height=496, multiple=32)
    assert w is not None and w.bottom == 496


@pytest.mark.parametrize(
    "ilm, bm",
    [
        (np.array([20.0]), np.array([400.0])),  # a window of nearly the whole B-scan saves nothing
        (np.array([np.nan]), np.array([200.0])),
        (np.array([]), np.array([])),
    ],
)
def test_no_window_when_it_would_not_help_or_the_surfaces_are_unusable(ilm, bm):
    assert window_from_surfaces(ilm, bm, image_height=496, multiple=32) is None


def test_a_surface_near_the_window_edge_is_refused():
    w = RowWindow(top=100, height=160, image_height=496)
    width = 8
    good = (np.full((1, width), 150.0), np.full((1, width), 200.0))
    assert accepted(w, *good).tolist() == [True]
    high_ilm = np.full((1, width), 150.0)
    high_ilm[0, 3] = 100 + GUARD - 1
    assert accepted(w, high_ilm, good[1]).tolist() == [False]
    deep_bm = np.full((1, width), 200.0)
    deep_bm[0, 5] = 260 - GUARD + 1
    assert accepted(w, good[0], deep_bm).tolist() == [False]


def test_the_image_edge_needs_no_clearance():
    w = RowWindow(top=0, height=160, image_height=160)
    ilm, bm = np.full((1, 4), 2.0), np.full((1, 4), 159.0)
    assert accepted(w, ilm, bm).tolist() == [True]


def test_a_collapsed_retina_is_refused():
    # a window that saw only vitreous (or only choroid) decodes to ILM = BM somewhere inside it
    w = RowWindow(top=0, height=160, image_height=496)
    ilm = bm = np.full((1, 16), 80.0)
    assert accepted(w, ilm, bm).tolist() == [False]

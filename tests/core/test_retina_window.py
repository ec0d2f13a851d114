"""core.retina_window: the rows around the retina the network is run on, and when a windowed result is refused."""

from __future__ import annotations

import numpy as np
import pytest

from napari_octseg.core.retina_window import (
    GUARD,
    MARGIN_ABOVE,
    MARGIN_BELOW,
    MAX_REFUSALS,
    RowWindow,
    WindowTracker,
    accepted,
    keep_window,
    rows_inside,
    surfaces_from_labels,
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


def test_surfaces_from_raw_labels_on_the_full_bscan_grid():
    labels = np.zeros((1, 10, 4), np.uint8)
    labels[0, 3:5, 0] = [1, 7]  # ILM at row 3, BM after row 4
    labels[0, 5:, 0] = 8
    labels[0, 2, 1] = 9  # fluid counts as tissue for the ILM; no retinal layer: BM on the ILM
    labels[0, 4:, 2] = 8  # only choroid below the vitreous: BM on the ILM
    # column 3: vitreous to the bottom, ILM one past the last row
    ilm, bm = surfaces_from_labels(labels, top=100)
    assert ilm.tolist() == [[103.0, 102.0, 104.0, 110.0]]
    assert bm.tolist() == [[105.0, 102.0, 104.0, 110.0]]


def test_a_window_that_cut_the_retina_off_is_refused_through_its_labels():
    w = RowWindow(top=100, height=160, image_height=496)
    fine = np.zeros((1, 160, 8), np.uint8)
    fine[0, 50:80] = 4
    fine[0, 80:] = 8
    cut_above = np.full((1, 160, 8), 8, np.uint8)  # the window saw only choroid: the retina is above it
    cut_above[0, :10] = 5
    below = np.zeros((1, 160, 8), np.uint8)  # only vitreous: the retina is below it
    for labels, ok in ((fine, True), (cut_above, False), (below, False)):
        assert accepted(w, *surfaces_from_labels(labels, top=w.top)).tolist() == [ok]


def test_rows_inside_the_window():
    w = RowWindow(top=10, height=20, image_height=64)
    masks = np.zeros((3, 64, 4), bool)
    masks[0, 10:30] = True
    masks[1, 9, 0] = True
    masks[2, 30, 3] = True
    assert rows_inside(w, masks).tolist() == [True, False, False]
    assert rows_inside(w, np.zeros((1, 64, 4), bool)).tolist() == [True]


def test_the_window_is_given_up_when_refusals_outnumber_acceptances_past_the_limit():
    assert keep_window(0, MAX_REFUSALS)
    assert not keep_window(0, MAX_REFUSALS + 1)
    assert keep_window(MAX_REFUSALS + 1, MAX_REFUSALS + 1)


def test_the_tracker_probes_one_bscan_then_follows_the_retina_and_gives_up_on_refusals():
    tracker = WindowTracker(enabled=True, multiple=32)
    assert tracker.batch_stop(0, 4, 10) == 1 and tracker.window is None  # one B-scan finds the retina
    surfaces = (np.full((1, 8), 150.0), np.full((1, 8), 220.0))
    tracker.record(0, 0, surfaces, 496)
    assert tracker.window == window_from_surfaces(*surfaces, 496, 32)
    assert tracker.batch_stop(1, 4, 10) == 5 and tracker.batch_stop(9, 4, 10) == 10
    for _ in range(MAX_REFUSALS + 1):
        tracker.record(0, 1, surfaces, 496)
    assert not tracker.enabled and tracker.window is None
    assert (tracker.windowed, tracker.reruns) == (0, MAX_REFUSALS + 1)


def test_a_disabled_tracker_never_windows():
    tracker = WindowTracker(enabled=False, multiple=32)
    assert tracker.batch_stop(0, 4, 10) == 4
    tracker.record(0, 0, (np.full((1, 8), 150.0), np.full((1, 8), 220.0)), 496)
    assert tracker.window is None

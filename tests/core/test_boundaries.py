"""Boundary surfaces from labels: exact positions, order, NaN, speckle, fluid, validation, Duke labels."""

from __future__ import annotations

import numpy as np
import pytest

from napari_octseg.core import boundaries as bmod
from napari_octseg.core.boundaries import boundaries, labels_from_boundaries, measure_labels
from napari_octseg.core.classes import BOUNDARY_NAMES
from napari_octseg.core.errors import LabelError
from napari_octseg.core.progress import run_generator

#: Rows where classes 1..8 start in the reference A-scan (layer thicknesses 3, 5, 7, 2, 9, 4, 3 px).
EDGES = (10, 13, 18, 25, 27, 36, 40, 43)
DEPTH = 60


def flat_labels(n: int = 3, width: int = 8, edges=EDGES, depth: int = DEPTH) -> np.ndarray:
    column = np.zeros(depth, np.uint8)
    for k, e in enumerate(edges):
        column[e:] = k + 1
    return np.broadcast_to(column[None, :, None], (n, depth, width)).copy()


def test_flat_layers_exact_and_shape():
    b = boundaries(flat_labels())
    assert b.shape == (len(BOUNDARY_NAMES), 3, 8) and b.dtype == np.float32
    np.testing.assert_array_equal(b, np.broadcast_to(np.array(EDGES, np.float32)[:, None, None], b.shape))


def test_single_bscan_2d_input():
    b = boundaries(flat_labels(n=1)[0])
    assert b.shape == (8, 1, 8)
    np.testing.assert_array_equal(b[:, 0, 0], EDGES)


def test_roundtrip_relabel():
    lab = flat_labels()
    np.testing.assert_array_equal(labels_from_boundaries(boundaries(lab), DEPTH), lab)


def test_order_guaranteed_on_random_labels(rng):
    lab = rng.integers(0, 10, size=(4, 40, 30), dtype=np.uint8)
    b = boundaries(lab)
    finite = np.isfinite(b)
    # counts of nested class sets: never decreasing down the A-scan, wherever both are defined
    filled = np.where(finite, b, np.nan)
    diffs = np.diff(filled, axis=0)
    assert np.all(diffs[np.isfinite(diffs)] >= 0)
    assert finite.any()


def test_nan_where_absent():
    lab = flat_labels(n=1, width=4)
    lab[0, :, 0] = 0  # no retina at all
    lab[0, :12, 1] = 1  # retina reaches the top edge: ILM cannot be located
    lab[0, 43:, 2] = 7  # nothing below BM: BM cannot be located
    b = boundaries(lab)[:, 0]
    assert np.isnan(b[:, 0]).all()
    assert np.isnan(b[0, 1]) and b[1, 1] == 13
    assert np.isnan(b[7, 2]) and b[6, 2] == 40
    np.testing.assert_array_equal(b[:, 3], EDGES)


def test_isolated_speckle_does_not_move_boundaries(rng):
    clean = flat_labels(n=2, width=20)
    noisy = clean.copy()
    # one stray pixel per A-scan, two or more rows away from any boundary, of a random wrong class
    inner_rows = [r for r in range(2, DEPTH - 2) if all(abs(r - e) >= 2 and abs(r - (e - 1)) >= 2 for e in EDGES)]
    for i in range(2):
        for j in range(20):
            r = int(rng.choice(inner_rows))
            wrong = (int(clean[i, r, j]) + int(rng.integers(1, 10))) % 10
            noisy[i, r, j] = wrong
    np.testing.assert_array_equal(boundaries(noisy), boundaries(clean))


def test_speckle_on_a_boundary_moves_it_at_most_one_pixel():
    clean = flat_labels(n=1, width=3)
    noisy = clean.copy()
    noisy[0, 17, 0] = 8  # last GCL+IPL row
    noisy[0, 18, 1] = 0  # first INL row
    noisy[0, 9, 2] = 9  # last vitreous row
    diff = np.abs(boundaries(noisy) - boundaries(clean))
    assert diff.max() <= 1


def test_blob_error_bounded_by_its_size():
    clean = flat_labels(n=1, width=1)
    noisy = clean.copy()
    noisy[0, 30:33, 0] = 2  # 3-pixel blob of GCL+IPL inside the ONL
    diff = np.abs(boundaries(noisy) - boundaries(clean))
    assert diff.max() <= 3


def test_background_painted_zero_below_bm():
    lab = flat_labels()
    lab[lab == 8] = 0  # a user who paints only the layers
    np.testing.assert_array_equal(boundaries(lab), boundaries(flat_labels()))
    lab2 = flat_labels()
    lab2[0, 2:5, 0] = 8  # "choroid" blob in the vitreous
    np.testing.assert_array_equal(boundaries(lab2), boundaries(flat_labels()))


def test_fluid_inside_a_layer_keeps_its_boundaries():
    clean = flat_labels(n=1, width=4)
    lab = clean.copy()
    lab[0, 28:34, 0] = 9  # cyst in the ONL+IS (27..35)
    lab[0, 19:24, 1] = 9  # most of the INL (18..24)
    s = run_generator(measure_labels(lab))
    np.testing.assert_array_equal(s.boundaries, boundaries(clean))
    np.testing.assert_array_equal(s.fluid_px[0], [6, 5, 0, 0])


def test_fluid_straddling_layers_goes_to_the_upper_one_and_counts_in_total():
    lab = flat_labels(n=1, width=2)
    lab[0, 22:30, 0] = 9  # INL (18..24) into OPL (25, 26) and ONL (27..)
    lab[0, 10:16, 1] = 9  # right under the vitreous: NFL and part of GCL+IPL
    b = boundaries(lab)[:, 0]
    assert b[0, 0] == 10 and b[7, 0] == 43  # total retina unchanged
    assert b[3, 0] == 30 and b[4, 0] == 30  # INL absorbs the pocket; OPL has no pixel left
    assert b[0, 1] == 10 and b[1, 1] == 16 and b[7, 1] == 43


def test_chunking_gives_same_result(monkeypatch, rng):
    lab = flat_labels(n=7, width=5)
    lab[rng.random(lab.shape) < 0.05] = 9
    whole = boundaries(lab)
    monkeypatch.setattr(bmod, "_CHUNK_PIXELS", DEPTH * 5 * 2)  # two B-scans per chunk
    events = []
    result = run_generator(measure_labels(lab), events.append)
    np.testing.assert_array_equal(result.boundaries, whole)
    assert [e.done for e in events] == [2, 4, 6, 7]


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros(5, np.uint8), "shape"),
        (np.zeros((1, 2, 3, 4), np.uint8), "shape"),
        (np.zeros((0, 5, 5), np.uint8), "empty"),
        (np.zeros((4, 4), np.float32), "integers"),
        (np.full((4, 4), 10, np.uint8), "classes"),
        (np.full((4, 4), -1, np.int16), "classes"),
    ],
)
def test_invalid_labels(bad, match):
    with pytest.raises(LabelError, match=match):
        boundaries(bad)


def test_duke_ground_truth(duke_dir):
    """Per layer, the boundary difference equals the class's pixel count in every fluid-free A-scan;
    the total (ILM-BM) equals the count of retina + fluid pixels in every A-scan; relabelling the
    surfaces reproduces the fluid-free A-scans."""
    files = sorted(duke_dir.glob("Subject_*.npz"))
    assert files, f"no Subject_*.npz in {duke_dir}"
    for path in files:
        lab = np.load(path, allow_pickle=False)["labels"]
        b = boundaries(lab)
        counts = np.stack([(lab == c).sum(axis=1) for c in range(1, 8)])
        no_fluid = ~(lab == 9).any(axis=1)
        measured = np.isfinite(b).all(axis=0)
        keep = no_fluid & measured
        assert keep.mean() > 0.5, path.name
        assert np.abs(np.diff(b, axis=0) - counts)[:, keep].max() <= 1, path.name
        total = np.isin(lab, (1, 2, 3, 4, 5, 6, 7, 9)).sum(axis=1)
        assert np.abs((b[7] - b[0]) - total)[measured].max() <= 1, path.name
        relabel = labels_from_boundaries(b, lab.shape[1])
        mask = np.broadcast_to(keep[:, None, :], lab.shape)
        assert (relabel == lab)[mask].mean() > 0.999, path.name

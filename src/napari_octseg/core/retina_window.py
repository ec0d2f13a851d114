"""The band of rows around the retina that the network needs to see (numpy only).

Most of a B-scan is vitreous above the retina and choroid/sclera below it; the network's cost is
proportional to the rows it sees. :func:`napari_octseg.inference.segment` therefore runs the network
on a window of rows around where the retina was in the B-scans just segmented, and checks each
result: a B-scan whose retina comes near the window's edge, or is not in the window at all, is run
again at full height. Rows outside an accepted window are vitreous above and choroid below,
which is what the anatomical decoding gives them anyway.

All rows here are on the network's grid (after resampling to the model's pixel spacing).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .classes import BACKGROUND_CLASSES, LAYER_CLASSES

#: Rows of context kept above the highest ILM and below the deepest BM seen in the previous B-scans
#: (about 190 and 250 µm at the bundled model's 3.87 µm axial spacing). Checked with
#: ``benchmarks/bench_robustness.py --model window=:stack --model full=:stack-full``: with these margins
#: Duke Subject_07-08 score as at full height under every controlled shift (figures in the README);
#: smaller margins kept the Dice but more windows were refused and run twice.
MARGIN_ABOVE = 48
MARGIN_BELOW = 64
#: A windowed result is accepted only if its ILM stays this many rows below the window's top and its
#: BM this many rows above the window's bottom (where the window does not reach the image edge).
GUARD = 16
#: The median retina (ILM to BM) of an accepted windowed B-scan is at least this many rows thick.
MIN_THICKNESS = 10
#: The window is switched off once more than this many windowed results were refused and the refusals
#: outnumber the accepted windows (B-scans that do not follow each other: every window costs a second pass).
MAX_REFUSALS = 4
#: A window taller than this fraction of the B-scan saves too little to be worth it.
MAX_FRACTION = 0.85


@dataclass(frozen=True)
class RowWindow:
    """Rows ``top : top + height`` of a B-scan ``image_height`` rows tall."""

    top: int
    height: int
    image_height: int

    @property
    def bottom(self) -> int:
        """One past the last row of the window."""
        return self.top + self.height


def window_from_surfaces(
    ilm_rows: np.ndarray,
    bm_rows: np.ndarray,
    image_height: int,
    multiple: int,
    margin_above: int = MARGIN_ABOVE,
    margin_below: int = MARGIN_BELOW,
) -> RowWindow | None:
    """The window holding every ``ilm_rows`` / ``bm_rows`` (any shape, rows) with margins, or ``None``.

    The height is rounded up to ``multiple`` (the network's pooling factor) so that no padding is
    needed. ``None`` when the window would not be at most :data:`MAX_FRACTION` of the image (no saving)
    or the rows are not finite.
    """
    ilm = np.asarray(ilm_rows, dtype=np.float64)
    bm = np.asarray(bm_rows, dtype=np.float64)
    if ilm.size == 0 or bm.size == 0 or not (np.isfinite(ilm).all() and np.isfinite(bm).all()):
        return None
    top = int(np.floor(ilm.min())) - margin_above
    bottom = int(np.ceil(bm.max())) + margin_below
    height = -(-(bottom - top) // multiple) * multiple
    if height <= 0 or height > MAX_FRACTION * image_height:
        return None
    top = min(max(top, 0), image_height - height)
    return RowWindow(top=top, height=height, image_height=image_height)


def accepted(
    window: RowWindow,
    ilm_rows: np.ndarray,
    bm_rows: np.ndarray,
    guard: int = GUARD,
    min_thickness: float = MIN_THICKNESS,
) -> np.ndarray:
    """Which B-scans' windowed surfaces are trustworthy: bool (n,).

    ``ilm_rows`` and ``bm_rows`` are (n, width) rows on the full B-scan's grid. Both surfaces must stay
    ``guard`` rows clear of the window's edges (an edge that is the image's own edge needs no clearance),
    and the retina must be there at all: a median ILM-BM distance of at least ``min_thickness`` rows (a
    window that saw only vitreous or only choroid decodes to a collapsed retina).
    """
    ilm = np.asarray(ilm_rows, dtype=np.float64)
    bm = np.asarray(bm_rows, dtype=np.float64)
    low = window.top + guard if window.top > 0 else 0
    high = window.bottom - guard if window.bottom < window.image_height else window.image_height
    inside = (ilm.min(axis=1) >= low) & (bm.max(axis=1) <= high) & (ilm.max(axis=1) <= high) & (bm.min(axis=1) >= low)
    thick = np.median(bm - ilm, axis=1) >= min_thickness
    return np.asarray(inside & thick, dtype=bool)


def keep_window(accepted_count: int, refused_count: int) -> bool:
    """Whether a volume's window is still worth using after ``accepted_count`` accepted and
    ``refused_count`` refused windowed B-scans (see :data:`MAX_REFUSALS`)."""
    return not (refused_count > MAX_REFUSALS and refused_count > accepted_count)


@dataclass
class WindowTracker:
    """A volume's retina window, batch by batch: the one state machine of segmentation and Grad-CAM.

    Without a window yet, the first batch is one B-scan at full height (:meth:`batch_stop`); after each
    batch, :meth:`record` counts its windowed and refused B-scans, gives up on the window when
    :func:`keep_window` says so, and otherwise takes the next window from the batch's ILM/BM rows.
    ``multiple`` is the network's pooling factor (window heights are multiples of it).
    """

    enabled: bool
    multiple: int
    window: RowWindow | None = None
    windowed: int = 0
    reruns: int = 0

    def batch_stop(self, done: int, batch_size: int, total: int) -> int:
        """One past the last B-scan of the batch starting at ``done``."""
        return min(done + (1 if self.enabled and done == 0 else batch_size), total)

    def record(
        self, windowed: int, reruns: int, surfaces: tuple[np.ndarray, np.ndarray] | None, image_height: int
    ) -> None:
        """Count a batch's windowed / refused B-scans; next window from its (ILM, BM) rows (n, width)."""
        self.windowed += windowed
        self.reruns += reruns
        if not keep_window(self.windowed, self.reruns):
            self.enabled, self.window = False, None  # the B-scans do not follow each other: stop paying twice
        if self.enabled and surfaces is not None:
            self.window = window_from_surfaces(*surfaces, image_height, max(self.multiple, 1))


def rows_inside(window: RowWindow, mask: np.ndarray) -> np.ndarray:
    """bool (n,): whether every ``True`` pixel of each mask (n, rows, width) lies in the window's rows.

    A mask with no ``True`` pixel is inside.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 3:
        raise ValueError(f"expected masks (n, rows, width); got shape {m.shape}")
    outside = m[:, : window.top].any(axis=(1, 2)) | m[:, window.bottom :].any(axis=(1, 2))
    return np.asarray(~outside, dtype=bool)


def surfaces_from_labels(labels: np.ndarray, top: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ILM and BM rows (n, width), float64, of per-pixel labels (n, rows, width) in the Duke scheme.

    For raw (unordered) labels, e.g. an argmax. In each column the ILM is the first row whose label is
    not the vitreous (0) and the BM one past the last row labelled a retinal layer (1..7); ``top`` (the
    labels' first row in the B-scan, e.g. a window's top) is added so that the rows are on the full
    B-scan's grid, as :func:`window_from_surfaces` and :func:`accepted` expect.

    The definitions are the cautious ones for :func:`accepted`: any non-vitreous pixel counts as retina
    from the top, so a window that cut the retina off shows its ILM on the window's top row. A column
    that is vitreous to the bottom has its ILM one past the labels' last row; a column with no retinal
    layer has its BM on its ILM (zero thickness).
    """
    lab = np.asarray(labels)
    if lab.ndim != 3:
        raise ValueError(f"expected labels (n, rows, width); got shape {lab.shape}")
    rows = lab.shape[1]
    vitreous = BACKGROUND_CLASSES[0]
    tissue = lab != vitreous
    ilm = np.where(tissue.any(axis=1), tissue.argmax(axis=1), rows)
    layers = (lab >= LAYER_CLASSES[0]) & (lab <= LAYER_CLASSES[-1])
    bm = np.where(layers.any(axis=1), rows - layers[:, ::-1].argmax(axis=1), ilm)
    return (ilm + top).astype(np.float64), (bm + top).astype(np.float64)


__all__ = [
    "GUARD",
    "MARGIN_ABOVE",
    "MARGIN_BELOW",
    "MAX_FRACTION",
    "MAX_REFUSALS",
    "MIN_THICKNESS",
    "RowWindow",
    "WindowTracker",
    "accepted",
    "keep_window",
    "rows_inside",
    "surfaces_from_labels",
    "window_from_surfaces",
]

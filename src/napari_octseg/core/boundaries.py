"""Boundary surfaces of the retinal layers, derived from a label volume.

A boundary is a height map: for each B-scan and A-scan, the row (in pixels, 0 = top of the
B-scan) at which it lies. Boundary ``k`` (:data:`~napari_octseg.core.classes.BOUNDARY_NAMES`) is the
top edge of layer class ``k + 1``; ``BM`` is the top edge of class 8 (below BM).

How the surfaces are found, per A-scan (all steps vectorised over whole B-scans):

1. **Speckle.** A pixel whose two vertical neighbours agree with each other but not with it takes
   their class (a one-pixel run inside a run of another class). An isolated wrong pixel therefore
   disappears, while every real layer, however thin, is kept: a one-pixel layer has two *different*
   neighbours (the layers above and below), and so has a one-pixel rim of a layer between a cyst
   and the next layer. (A 3-pixel median would also remove isolated pixels, but it orders classes
   by number and so erases such rims next to fluid, class 9.) First-occurrence rules would let one
   stray pixel in the vitreous move the ILM by hundreds of microns; this cannot.
2. **Background side.** Classes 0 (vitreous) and 8 (below BM) are both "not retina"; which one a
   background pixel is follows from where it lies: above the retina's median row it counts as
   vitreous, below it as choroid. A user who paints only the layers (leaving 0 below BM), or a
   network that confuses the two, still gets correct surfaces.
3. **Fluid.** Fluid (class 9) is painted over the layer it sits in. Each fluid pixel is attributed to
   the nearest layer above it in the A-scan (a cyst inside the INL goes to the INL; a pocket under
   the vitreous goes to the NFL; a pocket straddling two layers goes to the upper one). Fluid
   therefore lies between ILM and BM and counts towards total retinal thickness; the fluid pixel
   count per A-scan is returned separately (:attr:`LabelSurfaces.fluid_px`).
4. **Cumulative counts.** Boundary ``k`` is the number of pixels whose class is ``<= k``. For a
   clean, monotone A-scan this is exactly the top row of class ``k + 1``; for a noisy one every
   wrong pixel moves a boundary by at most one pixel, never more; and the boundaries are ordered
   top to bottom by construction (counts of nested sets).
5. **Missing.** A-scans without retina get NaN for every boundary. A boundary lying on the top or
   bottom edge of the B-scan (row 0 or row ``depth``) cannot be told apart from one outside the
   image (the retina is cut off), so it is NaN too.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from .classes import BOUNDARY_NAMES, FLUID_CLASS, N_CLASSES
from .errors import LabelError
from .progress import Progress, run_generator

#: Pixels processed per step (bounds the temporary memory to ~30 bytes x this number).
_CHUNK_PIXELS = 4_000_000
_VITREOUS = 0
_CHOROID = 8


@dataclass
class LabelSurfaces:
    """What :func:`measure_labels` finds in a label volume.

    Attributes
    ----------
    boundaries
        float32 (8, n_bscans, width): row of each boundary of ``BOUNDARY_NAMES`` in pixels, ordered
        top to bottom in every A-scan, NaN where absent.
    fluid_px
        float32 (n_bscans, width): fluid (class 9) pixels per A-scan after speckle removal, NaN
        where the A-scan holds no retina.
    depth
        Number of rows of a B-scan (H).
    """

    boundaries: np.ndarray
    fluid_px: np.ndarray
    depth: int


def validate_labels(labels: np.ndarray) -> np.ndarray:
    """Check a label volume and return it as uint8 (n_bscans, depth, width).

    Parameters
    ----------
    labels
        Integer array (depth, width) for one B-scan or (n_bscans, depth, width), classes 0..9.

    Raises
    ------
    LabelError
        Not 2-D/3-D, empty, not integer, or classes outside 0..9.
    """
    arr = np.asarray(labels)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise LabelError(f"labels must be (depth, width) or (n_bscans, depth, width); got shape {arr.shape}")
    if arr.size == 0:
        raise LabelError(f"labels are empty (shape {arr.shape})")
    if arr.dtype.kind not in "iu":
        raise LabelError(f"labels must be integers; got dtype {arr.dtype}")
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= N_CLASSES:
        raise LabelError(f"labels hold classes {lo}..{hi}; the scheme has classes 0..{N_CLASSES - 1}")
    return arr.astype(np.uint8, copy=False)


def _despeckle_depth(a: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Give every pixel whose two vertical neighbours agree with each other (and not with it) their
    class, uint8 (c, H, W). Pixels at the top and bottom rows are kept."""
    up = a[:, :-2]
    down = a[:, 2:]
    mid = a[:, 1:-1]
    out = np.copy(a)
    np.copyto(out[:, 1:-1], up, where=(up == down) & (mid != up))
    return out


def _cumsum_depth(a: np.ndarray) -> np.ndarray:
    """Running sum along depth of a bool (c, H, W) array, int32.

    A loop over rows adds contiguous (c, W) slices; ``np.cumsum(axis=1)`` walks each A-scan with a
    stride of W and is ten times slower on large B-scans.
    """
    out = np.empty(a.shape, np.int32)
    out[:, 0] = a[:, 0]
    for i in range(1, a.shape[1]):
        np.add(out[:, i - 1], a[:, i], out=out[:, i])
    return out


def _attribute_fluid(e: np.ndarray, fluid: np.ndarray) -> None:
    """Give each fluid pixel of ``e`` (uint8 (c, H, W), in place) the class of the layer above it."""
    rows = np.flatnonzero(fluid.any(axis=(0, 2)))
    for i in range(max(int(rows[0]), 1), int(rows[-1]) + 1):
        np.copyto(e[:, i], e[:, i - 1], where=fluid[:, i])  # forward fill, row by row (contiguous)
    owner = e[fluid]
    owner[owner == FLUID_CLASS] = 1  # a pocket starting at row 0 has nothing above it
    np.clip(owner, 1, 7, out=owner)  # fluid lies inside the retina: NFL..RPE
    e[fluid] = owner


def _measure_chunk(lab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boundaries (8, c, W) and fluid pixel counts (c, W) of a uint8 chunk (c, H, W)."""
    depth = lab.shape[1]
    m = _despeckle_depth(lab)
    fluid = m == FLUID_CLASS
    retina = (m != _VITREOUS) & (m != _CHOROID)
    cum = _cumsum_depth(retina)
    n_ret = cum[:, -1, :]
    below_median = cum >= ((n_ret + 1) // 2)[:, None, :]
    del cum
    e = np.where(retina, m, below_median.view(np.uint8) * np.uint8(_CHOROID))
    del below_median
    if fluid.any():
        _attribute_fluid(e, fluid)
    # Boundary k = number of pixels of class <= k in the A-scan (see the module docstring).
    bounds = np.empty((len(BOUNDARY_NAMES),) + n_ret.shape, np.float32)
    for k in range(len(BOUNDARY_NAMES)):
        bounds[k] = (e <= k).sum(axis=1, dtype=np.int32)
    bounds[(bounds <= 0) | (bounds >= depth)] = np.nan
    no_retina = n_ret == 0
    bounds[:, no_retina] = np.nan
    fluid_px = fluid.sum(axis=1, dtype=np.int32).astype(np.float32)
    fluid_px[no_retina] = np.nan
    return bounds, fluid_px


def measure_labels(labels: np.ndarray) -> Generator[Progress, None, LabelSurfaces]:
    """Find the boundary surfaces and fluid of a label volume, B-scans in chunks.

    Parameters
    ----------
    labels
        Integer labels (depth, width) or (n_bscans, depth, width) in the 10-class scheme.

    Yields
    ------
    Progress
        B-scans done out of n_bscans (stage ``"boundaries"``).

    Returns
    -------
    LabelSurfaces
        Boundaries (8, n_bscans, width) in pixels and fluid pixels per A-scan (n_bscans, width).

    Raises
    ------
    LabelError
        Invalid labels (see :func:`validate_labels`).
    """
    lab = validate_labels(labels)
    n, depth, width = lab.shape
    step = max(1, _CHUNK_PIXELS // (depth * width))
    bounds = np.empty((len(BOUNDARY_NAMES), n, width), np.float32)
    fluid_px = np.empty((n, width), np.float32)
    for start in range(0, n, step):
        stop = min(n, start + step)
        bounds[:, start:stop], fluid_px[start:stop] = _measure_chunk(lab[start:stop])
        yield Progress(stop, n, "boundaries")
    return LabelSurfaces(boundaries=bounds, fluid_px=fluid_px, depth=depth)


def boundaries(labels: np.ndarray) -> np.ndarray:
    """Boundary surfaces of a label volume.

    Parameters
    ----------
    labels
        Integer labels (depth, width) or (n_bscans, depth, width), classes 0..9.

    Returns
    -------
    numpy.ndarray
        float32 (8, n_bscans, width): row position in pixels of ILM, NFL/GCL, IPL/INL, INL/OPL,
        OPL/ONL, ISM/ISE, OS/RPE and BM (boundary ``k`` = top edge of class ``k + 1``), ordered top
        to bottom in every A-scan, NaN where a boundary cannot be found. See the module docstring
        for how speckle and fluid are handled.

    Raises
    ------
    LabelError
        Not 2-D/3-D, not integer, or classes outside 0..9.
    """
    return run_generator(measure_labels(labels)).boundaries


def labels_from_boundaries(bounds: np.ndarray, depth: int) -> np.ndarray:
    """Paint a label volume from boundary surfaces (the inverse of :func:`boundaries`, no fluid).

    Parameters
    ----------
    bounds
        (8, n_bscans, width) rows in pixels; A-scans with any NaN boundary stay class 0.
    depth
        Rows per B-scan.

    Returns
    -------
    numpy.ndarray
        uint8 (n_bscans, depth, width): class = number of boundaries at or above the row.
    """
    b = np.asarray(bounds, dtype=np.float64)
    rows = np.arange(depth, dtype=np.float64)[None, :, None]
    out = np.zeros((b.shape[1], depth, b.shape[2]), np.uint8)
    for k in range(b.shape[0]):
        out += (rows >= np.where(np.isnan(b[k]), np.inf, b[k])[:, None, :]).astype(np.uint8)
    missing = np.asarray(np.isnan(b).any(axis=0))  # (n, W)
    out[np.broadcast_to(missing[:, None, :], out.shape)] = 0
    return out

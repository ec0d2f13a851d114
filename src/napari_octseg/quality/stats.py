"""Per-pixel uncertainty and per-B-scan statistics of a segmentation (numpy only).

Everything here works on one batch of B-scans at a time, so :func:`napari_octseg.inference.segment` can
summarise each batch while it still holds the network's probabilities and never keeps more than the
labels (and, on request, a float16 uncertainty volume) for the whole volume.

The statistics are plain measurements; :mod:`napari_octseg.quality.score` turns them into a quality
score with reasons, against a :class:`~napari_octseg.quality.score.QualityReference`.
"""

from __future__ import annotations

import math

import numpy as np

from ..core.classes import FLUID_CLASS, LAYER_CLASSES, SCORED_CLASSES

#: Names of the per-B-scan statistics :func:`bscan_statistics` returns, in CSV order.
STATISTICS: tuple[str, ...] = (
    "uncertainty",
    "uncertain_fraction",
    "noise",
    "intensity_median",
    "intensity_iqr",
    "saturation",
    "fluid_outside_fraction",
    "edge_fraction",
    "missing_fraction",
    "total_thickness_p95_um",
    "layer_thickness_deviation",
    "mirror_disagreement",
)
#: A pixel counts as "uncertain" above this uncertainty (margin: the runner-up class within 0.5 of the first).
UNCERTAIN_PIXEL = 0.5
#: The per-pixel uncertainty the pipeline uses: chosen with benchmarks/bench_quality.py (the margin's per-B-scan
#: mean tracks the true Dice better than the entropy's on shifted Duke B-scans).
DEFAULT_KIND = "margin"
_RETINA = np.array([c in LAYER_CLASSES or c == FLUID_CLASS for c in range(256)])


def pixel_uncertainty(probabilities: np.ndarray, kind: str = DEFAULT_KIND, axis: int = 1) -> np.ndarray:
    """Uncertainty of each pixel in [0, 1] from softmax probabilities.

    Parameters
    ----------
    probabilities
        Softmax probabilities with the classes along ``axis``, e.g. (n, C, depth, width); any float dtype.
    kind
        ``"entropy"``: Shannon entropy divided by ``log C`` (0 = one class certain, 1 = all classes equal);
        ``"margin"``: ``1 - (p_first - p_second)``, one minus the gap between the two likeliest classes.
    axis
        The class axis.

    Returns
    -------
    numpy.ndarray
        float32, the input's shape without ``axis``, values in [0, 1].
    """
    p = np.asarray(probabilities, dtype=np.float32)
    n_classes = p.shape[axis]
    if n_classes < 2:
        return np.zeros(np.delete(p.shape, axis), np.float32)
    if kind == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
        h = -plogp.sum(axis=axis) / math.log(n_classes)
    elif kind == "margin":
        top2 = -np.partition(-p, 1, axis=axis)
        first = np.take(top2, 0, axis=axis)
        second = np.take(top2, 1, axis=axis)
        h = 1.0 - (first - second)
    else:
        raise ValueError(f"unknown uncertainty kind {kind!r}; use 'entropy' or 'margin'")
    return np.clip(h, 0.0, 1.0).astype(np.float32)


def noise_level(images: np.ndarray) -> np.ndarray:
    """Standard deviation of additive noise per B-scan (Immerkaer 1996), in the images' own units.

    The image is filtered with the 3 x 3 kernel ``[[1, -2, 1], [-2, 4, -2], [1, -2, 1]]`` (the difference
    of two Laplacians, blind to planes and edges to first order) and
    ``sigma = sqrt(pi / 2) * mean(|filtered|) / 6``.

    Parameters
    ----------
    images
        float (n, depth, width), or (depth, width) for one B-scan; at least 3 x 3.

    Returns
    -------
    numpy.ndarray
        float64 (n,) noise standard deviation.
    """
    x = np.asarray(images, dtype=np.float32)
    x = x[None] if x.ndim == 2 else x
    if x.shape[1] < 3 or x.shape[2] < 3:
        return np.zeros(x.shape[0])
    c = x[:, 1:-1, 1:-1]
    edges = x[:, :-2, 1:-1] + x[:, 2:, 1:-1] + x[:, 1:-1, :-2] + x[:, 1:-1, 2:]
    corners = x[:, :-2, :-2] + x[:, :-2, 2:] + x[:, 2:, :-2] + x[:, 2:, 2:]
    filtered = np.abs(4.0 * c - 2.0 * edges + corners)
    return math.sqrt(math.pi / 2.0) * filtered.mean(axis=(1, 2), dtype=np.float64) / 6.0


def input_statistics(images: np.ndarray) -> dict[str, np.ndarray]:
    """Intensity statistics of normalised network input (values about [0, 1]) per B-scan.

    Parameters
    ----------
    images
        float (n, depth, width): the B-scans as the network sees them (after the checkpoint's
        normalisation, on the network's pixel grid).

    Returns
    -------
    dict
        ``noise`` (:func:`noise_level`), ``intensity_median`` and ``intensity_iqr`` (median and
        inter-quartile range of the grey values: gamma, contrast and equalisation move them) and
        ``saturation`` (fraction of pixels at the top of the range, >= 0.999), each float64 (n,).
    """
    x = np.asarray(images, dtype=np.float32)
    x = x[None] if x.ndim == 2 else x
    flat = x.reshape(x.shape[0], -1)
    q1, med, q3 = np.percentile(flat, [25, 50, 75], axis=1)
    return {
        "noise": noise_level(x),
        "intensity_median": med.astype(np.float64),
        "intensity_iqr": (q3 - q1).astype(np.float64),
        "saturation": (flat >= 0.999).mean(axis=1, dtype=np.float64),
    }


def _retina_extent(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per A-scan: has a layer pixel, first and last row of a layer pixel (classes 1-7); (n, W) each."""
    depth = labels.shape[1]
    layer = (labels >= min(LAYER_CLASSES)) & (labels <= max(LAYER_CLASSES))
    present = np.asarray(layer.any(axis=1))
    first = np.where(present, layer.argmax(axis=1), depth)
    last = np.where(present, depth - 1 - layer[:, ::-1].argmax(axis=1), -1)
    return present, first, last


def anatomy_statistics(
    labels: np.ndarray, axial_um: float, reference_thickness_um: dict[int, float] | None = None
) -> dict[str, np.ndarray]:
    """Anatomical plausibility measurements of a label batch, per B-scan.

    Parameters
    ----------
    labels
        uint8 (n, depth, width) in the class scheme of :mod:`napari_octseg.core.classes`.
    axial_um
        Axial pixel spacing in µm (the training spacing when the volume's is unknown).
    reference_thickness_um
        Class -> typical median thickness (µm) of that layer; ``None`` leaves ``layer_thickness_deviation``
        at 0.

    Returns
    -------
    dict
        Each float64 (n,):

        ``fluid_outside_fraction``
            fraction of A-scans holding fluid above the first or below the last layer pixel, or fluid
            with no layer at all (fluid belongs inside the retina);
        ``edge_fraction``
            fraction of A-scans whose retina (layers or fluid) touches the first or last row;
        ``missing_fraction``
            fraction of the B-scan's A-scans without retina, plus those with retina that lack one
            of the outer layers (ONL+IS, EZ+OS, RPE), which run under the fovea too;
        ``total_thickness_p95_um``
            95th percentile over A-scans of the retina (layers + fluid) thickness in µm, NaN without
            retina;
        ``layer_thickness_deviation``
            the largest ``|log2(median thickness / reference)|`` over the seven layers (1 = one layer
            half or twice its usual thickness), 0 without a reference.
    """
    lab = np.asarray(labels)
    lab = lab[None] if lab.ndim == 2 else lab
    n, depth, width = lab.shape
    present, first, last = _retina_extent(lab)
    rows = np.arange(depth)[None, :, None]
    fluid = lab == FLUID_CLASS
    inside = (rows >= first[:, None, :]) & (rows <= last[:, None, :])
    outside_cols = (fluid & ~inside).any(axis=1)
    retina = _RETINA[lab]
    edge_cols = retina[:, 0, :] | retina[:, -1, :]
    counts = np.stack([(lab == c).sum(axis=1) for c in LAYER_CLASSES])  # (7, n, W)
    outer = counts[-3:]
    missing_cols = ~present | (present & (outer == 0).any(axis=0))
    total = (retina.sum(axis=1) * axial_um).astype(np.float64)  # (n, W)
    p95 = np.full(n, np.nan)
    deviation = np.zeros(n)
    for i in range(n):
        cols = present[i]
        if not cols.any():
            continue
        p95[i] = np.percentile(total[i, cols], 95)
        if reference_thickness_um:
            devs = []
            for k, c in enumerate(LAYER_CLASSES):
                ref = reference_thickness_um.get(c)
                if ref:
                    med = float(np.median(counts[k, i, cols])) * axial_um
                    devs.append(abs(math.log2(max(med, 0.5 * axial_um) / ref)))
            deviation[i] = max(devs) if devs else 0.0
    return {
        "fluid_outside_fraction": outside_cols.mean(axis=1, dtype=np.float64),
        "edge_fraction": edge_cols.mean(axis=1, dtype=np.float64),
        "missing_fraction": missing_cols.mean(axis=1, dtype=np.float64),
        "total_thickness_p95_um": p95,
        "layer_thickness_deviation": deviation,
    }


def uncertainty_statistics(uncertainty: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-B-scan summaries of a per-pixel uncertainty map.

    Parameters
    ----------
    uncertainty
        float (n, depth, width) in [0, 1] (:func:`pixel_uncertainty`).
    labels
        uint8 (n, depth, width): the predicted labels, which define the retina band.

    Returns
    -------
    dict
        ``uncertainty``: mean uncertainty over the rows between the first and last retina pixel
        (layers or fluid) of each A-scan, the band where the thickness comes from (vitreous and choroid
        are easy and would dilute it); the whole B-scan's mean where no retina was found.
        ``uncertain_fraction``: fraction of that band's pixels above :data:`UNCERTAIN_PIXEL`. float64 (n,).
    """
    u = np.asarray(uncertainty, dtype=np.float32)
    lab = np.asarray(labels)
    u, lab = (u[None], lab[None]) if u.ndim == 2 else (u, lab)
    retina = _RETINA[lab]
    depth = lab.shape[1]
    has = retina.any(axis=1)
    first = np.where(has, retina.argmax(axis=1), depth)
    last = np.where(has, depth - 1 - retina[:, ::-1].argmax(axis=1), -1)
    rows = np.arange(depth)[None, :, None]
    band = (rows >= first[:, None, :]) & (rows <= last[:, None, :])
    n_band = band.sum(axis=(1, 2))
    mean_all = u.mean(axis=(1, 2), dtype=np.float64)
    frac_all = (u > UNCERTAIN_PIXEL).mean(axis=(1, 2), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_band = np.where(band, u, 0).sum(axis=(1, 2), dtype=np.float64) / n_band
        frac_band = (band & (u > UNCERTAIN_PIXEL)).sum(axis=(1, 2), dtype=np.float64) / n_band
    return {
        "uncertainty": np.where(n_band > 0, mean_band, mean_all),
        "uncertain_fraction": np.where(n_band > 0, frac_band, frac_all),
    }


def label_agreement(a: np.ndarray, b: np.ndarray, empty: float = 1.0) -> np.ndarray:
    """Mean Dice between two label maps of the same B-scans, per B-scan (classes 1-7 and fluid).

    A class absent from both maps of a B-scan is left out (as the true per-B-scan Dice leaves out a class
    absent from ground truth and prediction); ``empty`` where every class is absent.

    Parameters
    ----------
    a, b
        uint8 (n, depth, width) labels, or (depth, width) for one B-scan.
    empty
        The value of a B-scan where neither map holds any of those classes (1.0: they agree; NaN: undefined).

    Returns
    -------
    numpy.ndarray
        float64 (n,) in [0, 1] (or ``empty``).
    """
    x, y = np.asarray(a), np.asarray(b)
    x, y = (x[None], y[None]) if x.ndim == 2 else (x, y)
    if x.shape != y.shape:
        raise ValueError(f"label maps of different shapes: {x.shape} and {y.shape}")
    n = x.shape[0]
    total = np.zeros(n)
    count = np.zeros(n)
    for c in SCORED_CLASSES:
        in_x, in_y = x == c, y == c
        size = in_x.sum(axis=(1, 2), dtype=np.float64) + in_y.sum(axis=(1, 2), dtype=np.float64)
        both = (in_x & in_y).sum(axis=(1, 2), dtype=np.float64)
        present = size > 0
        total += np.where(present, 2.0 * both / np.where(present, size, 1.0), 0.0)
        count += present
    return np.where(count > 0, total / np.maximum(count, 1), empty)


def bscan_statistics(
    images: np.ndarray,
    labels: np.ndarray,
    uncertainty: np.ndarray,
    axial_um: float,
    reference_thickness_um: dict[int, float] | None = None,
    mirrored_labels: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """All per-B-scan statistics of one batch (:data:`STATISTICS`), each float64 (n,).

    ``images`` are the normalised network input; ``labels`` and ``uncertainty`` must have the same
    (n, depth, width) shape; see :func:`input_statistics`, :func:`anatomy_statistics` and
    :func:`uncertainty_statistics`. ``mirrored_labels``: the labels of the B-scans segmented mirrored
    left-right and mirrored back (the mirror check); ``mirror_disagreement`` is ``1 -``
    :func:`label_agreement` with them, NaN (no penalty) without them.
    """
    out: dict[str, np.ndarray] = {}
    out.update(uncertainty_statistics(uncertainty, labels))
    out.update(input_statistics(images))
    out.update(anatomy_statistics(labels, axial_um, reference_thickness_um))
    n = np.asarray(labels).shape[0] if np.asarray(labels).ndim == 3 else 1
    out["mirror_disagreement"] = (
        np.full(n, np.nan) if mirrored_labels is None else 1.0 - label_agreement(labels, mirrored_labels)
    )
    return {name: out[name] for name in STATISTICS}


__all__ = [
    "DEFAULT_KIND",
    "STATISTICS",
    "UNCERTAIN_PIXEL",
    "anatomy_statistics",
    "bscan_statistics",
    "input_statistics",
    "label_agreement",
    "noise_level",
    "pixel_uncertainty",
    "uncertainty_statistics",
]

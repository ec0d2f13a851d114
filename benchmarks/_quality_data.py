"""Per-B-scan measurements for the quality benchmark: segment shifted Duke subjects and the .vol files.

For every (subject, shift, B-scan): the true mean Dice (classes 1-7 and fluid, a class absent from both
ground truth and prediction left out), every statistic of :mod:`napari_octseg.quality.stats` exactly as
``segment(..., return_uncertainty=True)`` measures it (the pipeline's uncertainty, 1 - margin), the same
uncertainty summaries from the normalised entropy (``*_entropy``), the whole-B-scan mean uncertainty
(``uncertainty_all``), one minus the soft expected Dice (:func:`expected_dice`; ``uncertainty_edice0`` /
``uncertainty_edice200``: classes with under 0 / 200 pixels of mass left out; explored, not used), the
pixel spacing the network saw (``axial_um``, ``lateral_um``: the model's grid) and the B-scan's own
(``native_*``). One row per B-scan, written to CSV so the calibration and the evaluation
can be redone without segmenting again.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from _shifts import DUKE_SCALE_UM, DUKE_SPACING, shift_volume

from napari_octseg.core.classes import SCORED_CLASSES
from napari_octseg.core.progress import run_generator
from napari_octseg.core.volume import OctVolume
from napari_octseg.inference import segment
from napari_octseg.quality.stats import STATISTICS, label_agreement, pixel_uncertainty, uncertainty_statistics

ROOT = Path(__file__).resolve().parents[1]
DUKE = ROOT.parent / "shared" / "data" / "duke_dme"
VOLS = ROOT.parent / "shared" / "data" / "heyex_vol"


def bscan_dice(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Mean Dice over classes 1-7 and 9 of each B-scan (n,); a class absent from both is left out (NaN when all are:
    the pipeline's own :func:`~napari_octseg.quality.stats.label_agreement`, which the mirror check also uses)."""
    return label_agreement(pred, truth, empty=np.nan)


def expected_dice(probabilities: np.ndarray, labels: np.ndarray, min_mass: float) -> np.ndarray:
    """Soft Dice of the probabilities against the labels, mean over classes 1-7 and 9, per B-scan (n,).

    Per class: ``2 sum(p_c [label = c]) / (sum p_c + #[label = c])``, the Dice the labels would get if the truth
    were drawn from the probabilities; a class with fewer than ``min_mass`` labelled pixels and less
    probability mass is left out, as the true Dice leaves out a class absent from both.
    """
    out = np.empty(len(labels))
    for i in range(len(labels)):
        d = []
        for c in SCORED_CLASSES:
            pc = probabilities[i, c].astype(np.float32)
            hit = labels[i] == c
            mass, count = float(pc.sum(dtype=np.float64)), int(hit.sum())
            if max(mass, count) <= max(min_mass, 0.5):
                continue
            d.append(2.0 * float(pc[hit].sum(dtype=np.float64)) / (mass + count))
        out[i] = float(np.mean(d)) if d else 1.0
    return out


def measure(volume: OctVolume, model, mirror_check: bool = False) -> tuple[dict, np.ndarray, tuple[float, float]]:
    """Segment ``volume`` as ``octseg segment --uncertainty`` does and return (statistics, labels, spacing).

    The statistics are the pipeline's own (``result.quality.statistics``: input statistics of the network's
    input on the model's grid, anatomy and uncertainty on the native grid), plus the entropy summaries and
    the whole-B-scan mean uncertainty from the native-grid probabilities; ``spacing`` is the (axial, lateral)
    µm per pixel the network saw (the model's grid when the volume was resampled to it).
    """
    result = run_generator(
        segment(
            volume, model, device="cpu", return_probabilities=True, return_uncertainty=True, mirror_check=mirror_check
        )
    )
    report = result.quality
    stats = {k: np.asarray(report.statistics[k], dtype=np.float64) for k in STATISTICS}
    entropy = uncertainty_statistics(pixel_uncertainty(result.probabilities, "entropy"), result.labels)
    stats["uncertainty_entropy"] = entropy["uncertainty"]
    stats["uncertain_fraction_entropy"] = entropy["uncertain_fraction"]
    stats["uncertainty_all"] = result.uncertainty.mean(axis=(1, 2), dtype=np.float64)
    for mass in (0, 200):
        stats[f"uncertainty_edice{mass}"] = 1.0 - expected_dice(result.probabilities, result.labels, mass)
    seen = result.model_spacing_um or result.native_spacing_um or DUKE_SPACING
    return stats, result.labels, (float(seen[0]), float(seen[1]))


def collect(model, subjects: Iterable[int], shifts: Iterable[str], log=print, mirror_check: bool = False) -> list[dict]:
    """Rows for every B-scan of every (subject, shift); ``mirror_check`` measures ``mirror_disagreement``."""
    rows: list[dict] = []
    for subj in subjects:
        with np.load(DUKE / f"Subject_{subj:02d}.npz") as z:
            images, labels = z["images"], z["labels"].astype(np.uint8)
        for shift in shifts:
            x, y, scale = shift_volume(shift, images, labels, DUKE_SCALE_UM, seed=subj)
            stats, pred, seen = measure(OctVolume(data=x, scale_um=scale), model, mirror_check)
            dice = bscan_dice(pred, y)
            for i in range(len(x)):
                row = {"source": f"Subject_{subj:02d}", "shift": shift, "bscan": i, "dice": dice[i]}
                row.update({"axial_um": seen[0], "lateral_um": seen[1], "native_axial_um": scale[1]})
                row["native_lateral_um"] = scale[2]
                row.update({k: float(v[i]) for k, v in stats.items()})
                rows.append(row)
            log(f"  Subject_{subj:02d} {shift:<13} mean Dice {np.nanmean(dice):.3f}")
    return rows


def collect_vols(model, mirror_check: bool = False) -> list[dict]:
    """Rows for the B-scans of the two .vol files (no ground truth: Dice is NaN)."""
    from napari_octseg.io import read

    rows = []
    for path in sorted(VOLS.glob("*.vol")):
        volume = read(path)
        stats, _, seen = measure(volume, model, mirror_check)
        for i in range(volume.n_bscans):
            row = {"source": path.name, "shift": "device", "bscan": i, "dice": np.nan}
            row.update({"axial_um": seen[0], "lateral_um": seen[1], "native_axial_um": volume.scale_um[1]})
            row["native_lateral_um"] = volume.scale_um[2]
            row.update({k: float(v[i]) for k, v in stats.items()})
            rows.append(row)
    return rows


def write_report(path: Path, lines: list[str], echo: bool = True) -> None:
    """Write a benchmark's text report (one line each) to ``path``, printing it first when ``echo``."""
    text = "\n".join(lines) + "\n"
    if echo:
        print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"written {path}")


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_rows(path: Path) -> list[dict]:
    """Rows written by :func:`write_rows` (older files, with the entropy as ``uncertainty`` and the margin as
    ``uncertainty_margin``, are renamed to the current columns)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k, v in r.items():
            if k not in ("source", "shift"):
                r[k] = float(v) if v not in ("", "nan") else np.nan
        if "uncertainty_margin" in r:
            r["uncertainty_entropy"], r["uncertainty"] = r["uncertainty"], r.pop("uncertainty_margin")
            r["uncertain_fraction_entropy"], r["uncertain_fraction"] = (
                r["uncertain_fraction"],
                r.pop("uncertain_fraction_margin"),
            )
    return rows

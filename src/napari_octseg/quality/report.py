"""The QC table of a segmentation (``<stem>.qc.csv``) and its reading back from a labels sidecar.

``<stem>.qc.csv``: one row per B-scan, header ``bscan,quality,flagged,reasons,<statistic>...`` (see
:data:`~napari_octseg.quality.stats.STATISTICS`, plus ``axial_spacing`` and ``lateral_spacing``,
``|log2(spacing / the model's)|``): ``bscan`` is 0-based, ``quality`` in [0, 1], ``flagged`` 0/1, ``reasons``
separated by ``; `` (empty when nothing is unusual), then every measurement behind the score, so a
statistician can apply a stricter or looser threshold than the one the flags use.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np

from .score import SPACING_STATISTICS, QualityReport
from .stats import STATISTICS

QC_COLUMNS: tuple[str, ...] = ("bscan", "quality", "flagged", "reasons", *STATISTICS, *SPACING_STATISTICS)


def qc_csv_text(report: QualityReport) -> str:
    """The QC table as CSV text (see the module docstring)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(QC_COLUMNS)
    flagged = report.flagged
    for i, score in enumerate(report.score):
        values = []
        for name in (*STATISTICS, *SPACING_STATISTICS):
            v = report.statistics.get(name)
            x = float(v[i]) if v is not None else float("nan")
            values.append(f"{x:.6g}" if np.isfinite(x) else "")
        writer.writerow([i, f"{float(score):.4f}", int(flagged[i]), "; ".join(report.reasons[i]), *values])
    return out.getvalue()


def quality_from_sidecar(sidecar: dict[str, Any], n_bscans: int) -> np.ndarray | None:
    """Per-B-scan quality recorded in a labels sidecar (``"quality": {"score": [...]}``), or ``None``.

    ``None`` when the sidecar has no quality or one for another number of B-scans.
    """
    record = sidecar.get("quality") if isinstance(sidecar, dict) else None
    scores = record.get("score") if isinstance(record, dict) else None
    if not isinstance(scores, list) or len(scores) != n_bscans:
        return None
    try:
        values = np.array([float(s) for s in scores], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return values if np.all((values >= 0) & (values <= 1)) else None


__all__ = ["QC_COLUMNS", "qc_csv_text", "quality_from_sidecar"]

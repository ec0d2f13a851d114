"""Know when not to trust a segmentation: per-pixel uncertainty, per-B-scan quality, what to correct first.

Headless (numpy only). :mod:`.stats` measures (uncertainty from the softmax, input statistics, anatomical
plausibility), :mod:`.score` turns the measurements into a quality score in [0, 1] with named reasons
and ranks the B-scans to correct first, :mod:`.report` writes the QC table.
"""

from .score import (
    DEFAULT_REFERENCE,
    QualityReference,
    QualityReport,
    Rule,
    correction_candidates,
    quality_from_statistics,
    warning_line,
)
from .stats import STATISTICS, bscan_statistics, pixel_uncertainty

__all__ = [
    "DEFAULT_REFERENCE",
    "STATISTICS",
    "QualityReference",
    "QualityReport",
    "Rule",
    "bscan_statistics",
    "correction_candidates",
    "pixel_uncertainty",
    "quality_from_statistics",
    "warning_line",
]

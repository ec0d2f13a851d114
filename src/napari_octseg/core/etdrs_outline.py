"""Drawing geometry of the ETDRS grid and the TSNIT sectors, from the same constants as the sectors.

:mod:`napari_octseg.core.etdrs` computes the sectors; this module gives the widgets the outline to draw,
so a drawn grid and the computed sectors cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .etdrs import _DIAGONALS, ETDRS_RADII_UM, TSNIT_EDGES_DEG, TSNIT_SECTORS, _directions


@dataclass
class EtdrsOutline:
    """The ETDRS grid as drawing geometry, in µm around the fovea, anatomical axes (superior, nasal).

    Attributes
    ----------
    circles
        Three (n_points, 2) polylines (closed: last point = first), radii ``ETDRS_RADII_UM``.
    spokes
        Four (2, 2) segments on the 45-degree diagonals from the 1 mm to the 6 mm circle.
    labels
        Sector name -> (superior, nasal) µm of its label (centre of the sector).
    """

    circles: list[np.ndarray]
    spokes: list[np.ndarray]
    labels: dict[str, tuple[float, float]]

    def to_map(
        self, fovea_um: tuple[float, float], laterality: str, bscan_order: str = "inferior_to_superior"
    ) -> EtdrsOutline:
        """The same outline in en-face map µm: (B-scan axis, A-scan axis), origin at B-scan 0, A-scan 0."""
        up, nasal = _directions(laterality, bscan_order)
        z0, x0 = fovea_um

        def place(p: np.ndarray) -> np.ndarray:
            return np.stack([z0 + up * p[:, 0], x0 + nasal * p[:, 1]], axis=1)

        labels = {k: (z0 + up * s, x0 + nasal * n) for k, (s, n) in self.labels.items()}
        return EtdrsOutline([place(c) for c in self.circles], [place(s) for s in self.spokes], labels)


def etdrs_outline(n_points: int = 181) -> EtdrsOutline:
    """The ETDRS grid outline (circles of 1, 3 and 6 mm, quadrant spokes, sector label positions).

    The same radii and quadrant split as :func:`etdrs_sector_map`, so a drawn grid and the computed
    sectors cannot drift apart. Coordinates are (superior, nasal) µm from the fovea; place them on a
    map with :meth:`EtdrsOutline.to_map`.
    """
    t = np.linspace(0.0, 2.0 * np.pi, n_points)
    circles = [np.stack([r * np.sin(t), r * np.cos(t)], axis=1) for r in ETDRS_RADII_UM]
    r0, r1, r2 = ETDRS_RADII_UM
    spokes = [np.array([[su * r0, sn * r0], [su * r2, sn * r2]]) / np.sqrt(2.0) for su, sn in _DIAGONALS]
    labels = {"C0": (0.0, 0.0)}
    for ring, radius in (("1", (r0 + r1) / 2), ("2", (r1 + r2) / 2)):
        for quadrant, (su, sn) in zip("SNIT", ((1, 0), (0, 1), (-1, 0), (0, -1)), strict=True):
            labels[quadrant + ring] = (su * radius, sn * radius)
    return EtdrsOutline(circles, spokes, labels)


def tsnit_label_degrees() -> dict[str, float]:
    """Angle (degrees from the temporal meridian, scan order) of the middle of each TSNIT sector."""
    edges = (*TSNIT_EDGES_DEG, TSNIT_EDGES_DEG[0] + 360.0)
    mids = {"T": 0.0}
    for k, name in enumerate(TSNIT_SECTORS[1:]):
        mids[name] = (edges[k] + edges[k + 1]) / 2
    return mids

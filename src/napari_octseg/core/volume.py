"""``OctVolume``: the one volume type that flows through the package."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

ScanPattern = Literal["line", "volume", "circle", "radial", "unknown"]


@dataclass
class OctVolume:
    """An OCT volume with its physical pixel size and acquisition metadata.

    Parameters
    ----------
    data
        float32 array of shape (n_bscans, depth, width): B-scan, axial row, A-scan.
    scale_um
        Pixel spacing in micrometres along (B-scan, depth, A-scan), or ``None`` when the file
        does not say. Never a silent 1.0.
    laterality
        ``"OD"`` (right eye), ``"OS"`` (left eye) or ``None`` when unknown.
    scan_pattern
        ``"line"``, ``"volume"``, ``"circle"``, ``"radial"`` or ``"unknown"``.
    reflectivity
        ``"linear"`` for raw device reflectivity (HEYEX .vol floats in [0, 1]; shown and fed to the
        network as ``x ** 0.25``) or ``"display"`` for already compressed grey values (PNG, TIFF,
        Duke images).
    layers
        Device or ground-truth boundary lines: name -> float32 height map (n_bscans, width), row
        position in pixels, NaN where absent.
    labels
        Optional ground-truth label volume uint8 (n_bscans, depth, width) in the scheme of
        :mod:`napari_octseg.core.classes` (e.g. from a Duke ``.mat`` file).
    meta
        Free-form acquisition metadata (device, dates, source path, ...), JSON-serialisable values.
    """

    data: npt.NDArray[np.float32]
    scale_um: tuple[float, float, float] | None = None
    laterality: str | None = None
    scan_pattern: ScanPattern = "unknown"
    reflectivity: Literal["linear", "display"] = "display"
    layers: dict[str, np.ndarray] = field(default_factory=dict)
    labels: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        if data.ndim == 2:
            data = data[None]
        if data.ndim != 3:
            raise ValueError(f"OCT data must be (n_bscans, depth, width); got shape {data.shape}")
        self.data = data.astype(np.float32, copy=False)
        if self.scale_um is not None:
            scale = tuple(float(s) for s in self.scale_um)
            if len(scale) != 3:
                raise ValueError(f"scale_um must be (z, y, x) in µm; got {self.scale_um}")
            self.scale_um = scale[0], scale[1], scale[2]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(n_bscans, depth, width)."""
        n, depth, width = self.data.shape
        return int(n), int(depth), int(width)

    @property
    def n_bscans(self) -> int:
        return int(self.data.shape[0])

    def display_data(self) -> np.ndarray:
        """Grey values as a person (and the network) should see them, float32 (n, depth, width).

        Linear reflectivity is compressed with ``x ** 0.25`` (the HEYEX convention); display data is
        returned unchanged.
        """
        if self.reflectivity == "linear":
            return np.power(np.clip(self.data, 0.0, None), 0.25, dtype=np.float32)
        return self.data

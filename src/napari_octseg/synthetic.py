"""Realistic synthetic macular OCT volumes with exact ground truth (sample data, tests, demos).

The model, in physical units: a curved, tilted Bruch's membrane; seven layers stacked on it whose
thicknesses (µm) follow the healthy macula (inner layers thin out into the foveal pit, the ONL
thickens under it, the NFL thickens towards the optic disc, on the nasal side); per-layer
reflectivity (NFL, IPL, OPL, EZ and RPE bright, GCL mid, INL and ONL dark, with ELM and
interdigitation lines); a decaying choroid; retinal vessels in the inner retina that cast dark
vertical shadows; optional fluid pockets (dark, label 9) that swell the INL/ONL; multiplicative
gamma speckle. The field of view is fixed (about 5.9 mm x 1.92 mm x 5.9 mm), so pixel sizes follow
the requested array size, and tiny volumes keep the whole anatomy.

Everything is drawn from ``numpy.random.default_rng(seed)``: the same arguments give the same volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from .core.classes import BOUNDARY_NAMES, FLUID_CLASS
from .core.volume import OctVolume

#: Field of view (µm): lateral extent of a B-scan, depth of an A-scan (Spectralis 20° macula scan).
FIELD_X_UM = 5888.0
FIELD_DEPTH_UM = 1920.0

#: Mean display grey value (0-1) of each class and sub-layer.
_REFLECTIVITY = {
    "vitreous": 0.04,
    "NFL": 0.80,
    "GCL": 0.42,
    "IPL": 0.62,
    "INL": 0.22,
    "OPL": 0.58,
    "ONL": 0.13,
    "ELM": 0.45,
    "IS": 0.28,
    "EZ": 0.88,
    "OS": 0.40,
    "IZ": 0.62,
    "RPE": 0.92,
    "choroid": 0.50,
    "fluid": 0.03,
}


#: A fluid pocket: centre x, y (µm), radii x, y (µm), height (µm) and the layer class it lies in.
_Pocket = tuple[float, float, float, float, float, int]


@dataclass(frozen=True)
class _Anatomy:
    """Random, per-seed anatomical parameters (µm unless said)."""

    fovea_x: float
    fovea_y: float
    pit_radius: float
    thickness_gain: float
    bm_depth: float
    tilt_x: float  # µm of depth per µm laterally
    tilt_y: float
    curvature: float  # µm of depth per µm² (eye curvature)
    wave_amp: float
    wave_freq: tuple[float, float]
    wave_phase: tuple[float, float]


def _anatomy(rng: np.random.Generator) -> _Anatomy:
    return _Anatomy(
        fovea_x=float(rng.uniform(-250, 250)),
        fovea_y=float(rng.uniform(-150, 150)),
        pit_radius=float(rng.uniform(550, 700)),
        thickness_gain=float(rng.uniform(0.93, 1.07)),
        bm_depth=float(rng.uniform(0.62, 0.68) * FIELD_DEPTH_UM),
        tilt_x=float(rng.uniform(-0.05, 0.05)),
        tilt_y=float(rng.uniform(-0.03, 0.03)),
        curvature=float(rng.uniform(1.0e-5, 1.8e-5)),
        wave_amp=float(rng.uniform(2.0, 5.0)),
        wave_freq=(float(rng.uniform(1 / 2500, 1 / 1200)), float(rng.uniform(1 / 2500, 1 / 1200))),
        wave_phase=(float(rng.uniform(0, 2 * np.pi)), float(rng.uniform(0, 2 * np.pi))),
    )


def _thicknesses(r: np.ndarray, nasal: np.ndarray, a: _Anatomy) -> list[np.ndarray]:
    """Thickness (µm) of the seven layer classes at foveal distance ``r`` (µm).

    ``nasal`` is the signed lateral distance towards the optic disc (µm); the NFL thickens there.
    Values are typical of healthy maculae (central ~230 µm, parafoveal ~320 µm ILM-BM).
    """
    pit = np.exp(-((r / a.pit_radius) ** 2))
    para = np.exp(-(((r - 1250.0) / 900.0) ** 2))
    nfl = (4.0 + 26.0 * (1 - np.exp(-((r / 1400.0) ** 2)))) * (1.0 + 0.6 * np.clip(nasal / 2500.0, 0, 1.5))
    gcl_ipl = (1 - 0.9 * pit) * (55.0 + 40.0 * para)
    inl = (1 - 0.85 * pit) * (28.0 + 14.0 * para)
    opl = (1 - 0.55 * pit) * (22.0 + 8.0 * para)
    onl = 80.0 + 70.0 * pit - 8.0 * para
    ez_os = 32.0 + 10.0 * pit
    rpe = np.full_like(r, 20.0)
    return [t * a.thickness_gain for t in (nfl, gcl_ipl, inl, opl, onl, ez_os, rpe)]


def _fluid_pockets(rng: np.random.Generator, a: _Anatomy, n: int) -> list[_Pocket]:
    """``n`` ellipsoidal cysts near the fovea: (x, y, radius_x, radius_y, height µm, layer 2=INL | 4=ONL)."""
    pockets: list[_Pocket] = []
    for _ in range(n):
        angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0, 900)
        layer = 4 if rng.random() < 0.65 else 2
        height = rng.uniform(60, 160) if layer == 4 else rng.uniform(25, 60)
        pockets.append(
            (
                float(a.fovea_x + dist * np.cos(angle)),
                float(a.fovea_y + dist * np.sin(angle)),
                rng.uniform(120, 380),
                rng.uniform(120, 380),
                height,
                layer,
            )
        )
    return pockets


def _vessels(rng: np.random.Generator, nasal_sign: float, n: int) -> list[tuple[float, float, float]]:
    """Vessels as straight en-face lines ``x = x0 + slope * y`` with a diameter (µm).

    They avoid the foveal avascular zone and run roughly towards the disc (nasal side).
    """
    out = []
    for _ in range(n):
        x0 = nasal_sign * rng.uniform(700, 2800) * (1 if rng.random() < 0.7 else -1)
        out.append((x0, float(rng.uniform(-0.6, 0.6)), float(rng.uniform(40, 100))))
    return out


def make_volume(
    n_bscans: int = 25,
    height: int = 496,
    width: int = 512,
    seed: int = 0,
    fluid: bool = True,
    laterality: str = "OD",
    noise: float = 0.5,
    n_fluid: int | None = None,
    n_vessels: int | None = None,
) -> OctVolume:
    """A synthetic macular OCT volume with its ground-truth labels and boundary surfaces.

    Parameters
    ----------
    n_bscans, height, width
        Output shape (n_bscans, depth, width). The field of view is fixed, so the pixel size is
        ``(5888 / n_bscans, 1920 / height, 5888 / width)`` µm (B-scan spacing, axial, lateral):
        (235.5, 3.87, 11.5) µm at the default size, like a Spectralis 25-line macular scan.
        One B-scan passes through the fovea.
    seed
        Seed of every random choice (anatomy, vessels, fluid, speckle). Same arguments, same volume.
    fluid
        Add intraretinal fluid pockets (label 9) in the INL/ONL near the fovea.
    laterality
        ``"OD"`` or ``"OS"``: sets the nasal side (right side of the B-scan for OD, as HEYEX shows it).
    noise
        Speckle strength: relative standard deviation of the multiplicative gamma speckle of the
        linear intensity (0 gives a clean image).
    n_fluid, n_vessels
        Number of fluid pockets / vessels (default: drawn from the seed, 3-5 and 4-6).

    Returns
    -------
    OctVolume
        ``data`` float32 display grey values in [0, 1] (``reflectivity='display'``), ``labels``
        uint8 (n_bscans, depth, width) in the 10-class scheme (layer labels never decrease down an
        A-scan; fluid 9 painted over), ``layers`` name -> float32 (n_bscans, width) heights in
        pixels for each of :data:`~napari_octseg.core.classes.BOUNDARY_NAMES` (row where the layer
        below starts), ``scale_um``, ``laterality``, ``scan_pattern='volume'``.
    """
    for name, value in (("n_bscans", n_bscans), ("height", height), ("width", width)):
        if int(value) < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if laterality not in ("OD", "OS"):
        raise ValueError(f"laterality must be 'OD' or 'OS', got {laterality!r}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    anat = _anatomy(rng)
    nasal_sign = 1.0 if laterality == "OD" else -1.0
    dz, dy, dx = FIELD_X_UM / n_bscans, FIELD_DEPTH_UM / height, FIELD_X_UM / width

    # En-face grid (µm), centred on the scan; B-scan k at slow position y[k].
    xs = (np.arange(width) - (width - 1) / 2) * dx
    ys = (np.arange(n_bscans) - (n_bscans - 1) / 2) * dz
    X, Y = np.meshgrid(xs, ys)  # (n_bscans, width)
    r = np.hypot(X - anat.fovea_x, Y - anat.fovea_y)
    thick = _thicknesses(r, nasal_sign * (X - anat.fovea_x), anat)

    n_fluid = int(rng.integers(3, 6)) if n_fluid is None else int(n_fluid)
    pockets = _fluid_pockets(rng, anat, n_fluid) if fluid else []
    fluid_h = {2: np.zeros_like(r), 4: np.zeros_like(r)}
    swelling = {2: np.zeros_like(r), 4: np.zeros_like(r)}
    for px, py, rx, ry, h, layer in pockets:
        rho2 = ((X - px) / rx) ** 2 + ((Y - py) / ry) ** 2
        cyst = h * np.sqrt(np.clip(1 - rho2, 0, None))
        fluid_h[layer] += cyst
        # The layer swells a little beyond the cyst, so the surfaces above bulge smoothly.
        swelling[layer] += np.maximum(cyst, h * np.exp(-1.5 * rho2))
    thick[2] = thick[2] + swelling[2]
    thick[4] = thick[4] + swelling[4]

    # Bruch's membrane depth (µm): tilt + eye curvature + a gentle undulation; layers stack upwards.
    wave = anat.wave_amp * (
        np.sin(X * anat.wave_freq[0] * 2 * np.pi + anat.wave_phase[0])
        + np.sin(Y * anat.wave_freq[1] * 2 * np.pi + anat.wave_phase[1])
    )
    bm = anat.bm_depth + anat.tilt_x * X + anat.tilt_y * Y - anat.curvature * (X**2 + Y**2) + wave
    tops = [bm]
    for t in reversed(thick):
        tops.append(tops[-1] - t)
    bounds_um = np.stack(tops[::-1])  # (8, n, W): ILM ... BM, top to bottom
    bounds_px = (bounds_um / dy).astype(np.float32)

    rows = np.arange(height, dtype=np.float32)[None, :, None]  # (1, H, 1)
    labels = np.zeros((n_bscans, height, width), dtype=np.uint8)
    for b in bounds_px:
        labels += rows >= b[:, None, :]

    data = _reflectivity_map(labels, bounds_px, rows, dy)
    fluid_mask = _fluid_mask(bounds_px, fluid_h, rows, dy)
    labels[fluid_mask] = FLUID_CLASS
    data[fluid_mask] = _REFLECTIVITY["fluid"]
    _vessel_shadows(
        data,
        bounds_px,
        xs,
        ys,
        rows,
        _vessels(rng, nasal_sign, int(rng.integers(4, 7)) if n_vessels is None else int(n_vessels)),
        dx,
    )
    data = _speckle(data, rng, noise, dy, dx)

    layers = {name: bounds_px[i].copy() for i, name in enumerate(BOUNDARY_NAMES)}
    return OctVolume(
        data=data,
        scale_um=(dz, dy, dx),
        laterality=laterality,
        scan_pattern="volume",
        reflectivity="display",
        layers=layers,
        labels=labels,
        meta={
            "source": "synthetic",
            "seed": int(seed),
            "fovea_um": [anat.fovea_x, anat.fovea_y],
            "fovea_bscan": int(np.argmin(np.abs(ys - anat.fovea_y))),
            "fovea_column": int(np.argmin(np.abs(xs - anat.fovea_x))),
            "fluid_pockets": len(pockets),
            "noise": float(noise),
        },
    )


def _reflectivity_map(labels: np.ndarray, b: np.ndarray, rows: np.ndarray, dy: float) -> np.ndarray:
    """Mean grey value per pixel from the labels, with sub-layer structure inside the classes."""
    R = _REFLECTIVITY
    lut = np.array(
        [R["vitreous"], R["NFL"], R["GCL"], R["INL"], R["OPL"], R["ONL"], R["EZ"], R["RPE"], R["choroid"], R["fluid"]],
        dtype=np.float32,
    )
    data = lut[labels]
    top = lambda k: b[k][:, None, :]  # noqa: E731 - boundary k broadcast over rows
    # GCL (upper ~55 %) vs IPL inside class 2.
    gcl_ipl = top(1) + 0.55 * (top(2) - top(1))
    data[(labels == 2) & (rows >= gcl_ipl)] = R["IPL"]
    # ONL, then ELM line and inner segments above ISM/ISE (IS ~ 22 µm).
    elm = top(5) - 22.0 / dy
    in_onl = labels == 5
    data[in_onl & (rows >= elm)] = R["IS"]
    data[in_onl & (np.abs(rows - elm) < max(0.6, 4.0 / dy))] = R["ELM"]
    # EZ band (top ~35 %), outer segments, interdigitation line just above the RPE.
    ez_end = top(5) + 0.35 * (top(6) - top(5))
    iz = top(6) - 0.2 * (top(6) - top(5))
    in_6 = labels == 6
    data[in_6 & (rows >= ez_end)] = R["OS"]
    data[in_6 & (np.abs(rows - iz) < max(0.6, 4.0 / dy))] = R["IZ"]
    # NFL fades with depth; choroid decays below BM (~400 µm), sclera beyond stays dim.
    data[labels == 1] *= np.clip(1.0 - 0.25 * (rows - top(0)) / np.maximum(top(1) - top(0), 1.0), 0.7, 1.0)[labels == 1]
    below = labels == 8
    depth_um = (rows - top(7)) * dy
    data[below] = (R["choroid"] * (0.3 + 0.7 * np.exp(-depth_um / 400.0)))[below]
    return data.astype(np.float32)


def _fluid_mask(b: np.ndarray, fluid_h: dict[int, np.ndarray], rows: np.ndarray, dy: float) -> np.ndarray:
    """Pixels of the fluid pockets: a band of the pocket's height centred in the swollen layer."""
    mask = np.zeros((b.shape[1], rows.shape[1], b.shape[2]), dtype=bool)
    for layer, h in fluid_h.items():
        h_px = h / dy
        top, bottom = b[layer], b[layer + 1]
        margin = np.maximum((bottom - top - h_px) / 2.0, 0.0)
        start, stop = top + margin, top + margin + h_px
        present = h_px >= 1.0
        mask |= present[:, None, :] & (rows >= start[:, None, :]) & (rows < stop[:, None, :])
    return mask


def _vessel_shadows(
    data: np.ndarray,
    b: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    rows: np.ndarray,
    vessels: list[tuple[float, float, float]],
    dx: float,
) -> None:
    """Bright vessel cross-sections in the inner retina and the dark band they cast below (in place)."""
    for x0, slope, diameter in vessels:
        centre = x0 + slope * ys  # (n,) lateral position per B-scan, µm
        half = diameter / 2.0
        dist = np.abs(xs[None, :] - centre[:, None])  # (n, W)
        inside = dist < max(half, dx * 0.75)
        if not inside.any():
            continue
        # A round lumen sitting at the NFL/GCL boundary; its depth extent follows the cross-section.
        extent = np.sqrt(np.clip(half**2 - dist**2, 0, None)) / (FIELD_DEPTH_UM / data.shape[1])
        depth = np.maximum(b[1] + 0.3 * (b[2] - b[1]), b[0] + extent + 1.0)
        wall = inside[:, None, :] & (np.abs(rows - depth[:, None, :]) <= np.maximum(extent, 0.8)[:, None, :])
        data[wall] = np.maximum(data[wall], 0.7)
        shadow = inside[:, None, :] & (rows > (depth + extent)[:, None, :])
        atten = np.where(dist < half * 0.6, 0.3, 0.5).astype(np.float32)
        data *= np.where(shadow, atten[:, None, :], 1.0).astype(np.float32)


def _speckle(mean: np.ndarray, rng: np.random.Generator, noise: float, dy: float, dx: float) -> np.ndarray:
    """Blur by the optical PSF, apply multiplicative gamma speckle in the linear domain, clip to [0, 1]."""
    sigma = (0.0, max(4.0 / dy, 0.3), max(8.0 / dx, 0.3))  # ~4 µm axial, ~8 µm lateral resolution
    blurred = gaussian_filter(mean, sigma=sigma)
    if noise == 0:
        return np.clip(blurred, 0.0, 1.0).astype(np.float32)
    looks = 1.0 / noise**2
    linear = blurred.astype(np.float32) ** 4
    speckle = rng.gamma(looks, 1.0 / looks, size=mean.shape).astype(np.float32)
    display = (linear * speckle) ** 0.25
    display += rng.normal(0.0, 0.02, size=mean.shape).astype(np.float32)
    return np.clip(display, 0.0, 1.0).astype(np.float32)

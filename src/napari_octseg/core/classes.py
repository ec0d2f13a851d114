"""The retinal class scheme (Duke DME / ReLayNet, 10 classes) and its boundaries.

Label values, per pixel of a B-scan (axis order depth then A-scan):

====  ==========================================================
0     vitreous (above ILM)
1     NFL (ILM -> NFL/GCL)
2     GCL + IPL
3     INL
4     OPL
5     ONL + inner segments (OPL/ONL -> ISM/ISE)
6     ellipsoid zone + outer segments (ISM/ISE -> OS/RPE)
7     RPE complex (OS/RPE -> BM)
8     below BM (choroid, sclera)
9     intraretinal / subretinal fluid (painted over the layer it sits in)
====  ==========================================================

Within an A-scan, layer labels (all but fluid) never decrease from top to bottom.
"""

from __future__ import annotations

CLASS_NAMES: tuple[str, ...] = (
    "vitreous",
    "NFL",
    "GCL+IPL",
    "INL",
    "OPL",
    "ONL+IS",
    "EZ+OS",
    "RPE",
    "choroid",
    "fluid",
)
N_CLASSES: int = len(CLASS_NAMES)

#: Classes above and below the retina, reported apart from the layer mean.
BACKGROUND_CLASSES: tuple[int, ...] = (0, 8)
#: The seven retinal layers, top to bottom.
LAYER_CLASSES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7)
FLUID_CLASS: int = 9
#: Classes whose mean Dice is the headline figure (layers + fluid, no background).
SCORED_CLASSES: tuple[int, ...] = LAYER_CLASSES + (FLUID_CLASS,)

#: Boundary surfaces, top to bottom; boundary ``k`` is the top of layer class ``k + 1``
#: (``BM`` is the top of class 8).
BOUNDARY_NAMES: tuple[str, ...] = (
    "ILM",
    "NFL/GCL",
    "IPL/INL",
    "INL/OPL",
    "OPL/ONL",
    "ISM/ISE",
    "OS/RPE",
    "BM",
)

#: RGBA colours (0-1) per class, for napari Labels layers and figures. Neighbouring layers differ in hue;
#: EZ+OS (the thin bright band fluid often sits against) is near-white so that it never reads as fluid
#: (magenta): every pair of coloured classes is at least 0.38 apart in RGB, EZ+OS and fluid 0.76 (were 0.42).
CLASS_COLORS: dict[int, tuple[float, float, float, float]] = {
    0: (0.0, 0.0, 0.0, 0.0),
    1: (0.90, 0.10, 0.29, 1.0),
    2: (0.24, 0.71, 0.29, 1.0),
    3: (1.00, 0.88, 0.10, 1.0),
    4: (0.00, 0.51, 0.78, 1.0),
    5: (0.96, 0.51, 0.19, 1.0),
    6: (0.96, 0.96, 0.96, 1.0),
    7: (0.27, 0.94, 0.94, 1.0),
    8: (0.0, 0.0, 0.0, 0.0),
    9: (0.94, 0.20, 0.90, 1.0),
}

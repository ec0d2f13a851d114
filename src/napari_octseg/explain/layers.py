"""Which layer Grad-CAM explains by default, and what the map at each layer is (no torch: the CLI's
``--help`` and the dock read it).

The default is chosen by measurement: ``benchmarks/bench_gradcam.py`` on Duke DME Subject_07-08 with the
bundled model (``benchmarks/results/gradcam_layers.csv``, ``gradcam_region.csv``, ``gradcam_randomisation.csv``,
``gradcam_speed.csv``). ``decoder.2`` has the smallest deletion-curve area of the layers (it beats random order
on all 32 curves, and the class-score map for 5 of 8 classes), a near-zero model-randomisation correlation,
maps for a region that differ more from the whole B-scan's than ``decoder.1``'s, and it exists in every
SegNet of depth 3 or more. Its cost is above the 3 x one segmentation aimed at (see the README).
"""

from __future__ import annotations

#: The layer explained unless another is chosen.
DEFAULT_LAYER: str = "decoder.2"
#: The paper's layers (its Conv2d_19 and Conv2d_20), at which Grad-CAM is a rescaled class-score map.
SCORE_MAP_LAYERS: tuple[str, ...] = ("decoder", "final")

_DESCRIPTIONS: dict[str, str] = {
    "decoder.1": "decoder level 1 (1/2 resolution)",
    "decoder.2": "decoder level 2 (1/4 resolution)",
    "decoder.3": "decoder level 3 (1/8 resolution)",
    "bottleneck": "bottleneck (deepest encoder block, 1/16 resolution)",
    "decoder": "paper: last 3x3 decoder conv = class-score map",
    "final": "paper: 1x1 classifier = logits",
}
#: (layer, plain description) in the order the dock offers them: the measured default first.
LAYER_DESCRIPTIONS: tuple[tuple[str, str], ...] = (
    (DEFAULT_LAYER, _DESCRIPTIONS[DEFAULT_LAYER] + ", default"),
    *((name, text) for name, text in _DESCRIPTIONS.items() if name != DEFAULT_LAYER),
)

#: What a map at one of the paper's layers is, in one sentence (dock, CLI, sidecar).
SCORE_MAP_NOTE: str = (
    "only the 1x1 classifier follows this layer, so Grad-CAM here is a rescaled class-score map: "
    "the same for every question, it shows where the class scores high, not why"
)


def describe_layer(layer: str) -> str:
    """A one-line description of what the map at ``layer`` is."""
    if layer in SCORE_MAP_LAYERS:
        return SCORE_MAP_NOTE
    return "Grad-CAM at a coarser layer (its receptive field spans context), upsampled bilinearly to the B-scan"


#: What a region question changes at the context layers (measured: ``benchmarks/bench_gradcam.py``).
REGION_NOTE: str = (
    "the question sets how the layer's channels are weighted, not where they respond: a region's map keeps "
    "much of its class's pattern across the B-scan, with more weight in and near the region"
)


__all__ = ["DEFAULT_LAYER", "LAYER_DESCRIPTIONS", "REGION_NOTE", "SCORE_MAP_LAYERS", "SCORE_MAP_NOTE", "describe_layer"]

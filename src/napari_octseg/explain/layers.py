"""Which layer Grad-CAM explains by default, and what the map at each layer is (no torch: the CLI's
``--help`` and the dock read it).

The default is chosen by measurement: ``benchmarks/bench_gradcam.py`` (deletion curves against random
order and against the class-score map, on Duke DME Subject_07-08; ``benchmarks/results/gradcam_layers.csv``).
"""

from __future__ import annotations

#: The layer explained unless another is chosen.
DEFAULT_LAYER: str = "decoder.1"
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


__all__ = ["DEFAULT_LAYER", "LAYER_DESCRIPTIONS", "SCORE_MAP_LAYERS", "SCORE_MAP_NOTE", "describe_layer"]

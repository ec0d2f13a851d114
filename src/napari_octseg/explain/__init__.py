"""Grad-CAM for segmentation (all classes, a chosen layer, a question about a region) and its evaluation.

``gradcam`` (:mod:`.volume`) explains a volume; ``gradcam_batch`` (:mod:`._batch`) one batch of
normalised B-scans; :mod:`.layers` says which layer is the default and what each map is; :mod:`.region`
turns rectangles, polygons and label values into region masks; :mod:`.faithfulness` and :mod:`.evaluate`
measure how faithful and how localised the maps are; :mod:`.export` writes the maps and the per-class table.

Names are imported on first use, so that ``octseg --help`` (which reads :mod:`.layers` and :mod:`.export`)
imports no torch.
"""

from __future__ import annotations

from ..core.lazy import lazy_exports

#: Public name -> the submodule defining it.
_EXPORTS: dict[str, str] = {
    "REDUCTIONS": "_batch",
    "TARGETS": "_batch",
    "BatchGradCam": "_batch",
    "gradcam_batch": "_batch",
    "layer_module": "_batch",
    "mass_near_region": "evaluate",
    "DEFAULT_LAYER": "layers",
    "SCORE_MAP_LAYERS": "layers",
    "describe_layer": "layers",
    "GradCamResult": "volume",
    "gradcam": "volume",
    "resolve_classes": "volume",
    "label_mask": "region",
    "parse_region": "region",
    "polygon_mask": "region",
    "rectangle_mask": "region",
}

__all__ = sorted(_EXPORTS)

# a loaded name becomes a plain attribute, so later look-ups (and monkeypatching) see it
__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)

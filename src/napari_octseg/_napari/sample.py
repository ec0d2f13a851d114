"""npe2 sample data: a synthetic macular OCT volume with its ground-truth labels."""

from __future__ import annotations

from typing import Any

from ..synthetic import make_volume
from ._common import image_layer_kwargs, labels_layer_kwargs
from .reader import with_units

SAMPLE_NAME = "synthetic macula"


def make_sample_macula() -> list[tuple[Any, dict[str, Any], str]]:
    """Image layer (µm scale) + ground-truth Labels layer of :func:`~napari_octseg.synthetic.make_volume`.

    Default size (25 B-scans of 496 x 512 pixels, fluid pockets, seed 0); about 2 s to make.
    """
    volume = make_volume()
    image = image_layer_kwargs(volume, SAMPLE_NAME)
    labels = labels_layer_kwargs(
        f"{SAMPLE_NAME} ground truth",
        scale=volume.scale_um,
        metadata={"source": "synthetic", "seed": volume.meta["seed"]},
    )
    return [(volume.data, image, "image"), (volume.labels, with_units(labels, volume), "labels")]

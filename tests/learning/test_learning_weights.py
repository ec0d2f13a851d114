"""The bundled default weights: present, loadable without code execution, documented, and good."""

from __future__ import annotations

import numpy as np
import torch

from napari_octseg.core.classes import CLASS_NAMES
from napari_octseg.core.progress import run_generator
from napari_octseg.learning import confusion_matrix, scores
from napari_octseg.models import bundled_path, load_model


def test_bundled_weights_load_and_carry_their_training_record():
    path = bundled_path()
    assert path.is_file(), f"{path} is missing: the bundled model must ship with the package"
    assert path.stat().st_size <= 20 * 1024 * 1024
    assert path.with_suffix(".md").is_file(), "the model card must ship next to the weights"
    loaded = load_model(None)
    assert loaded.class_names == CLASS_NAMES
    record = loaded.training
    for key in ("data", "split", "command", "epoch", "hardware", "val_metrics", "wall_time_minutes"):
        assert key in record, key
    assert record["split"]["train_subjects"] == [1, 2, 3, 4, 5, 6]
    assert record["split"]["val_subjects"] == [7, 8]
    x = torch.rand(1, 1, 96, 80)
    with torch.inference_mode():
        assert loaded.model(x).shape == (1, len(CLASS_NAMES), 96, 80)


def test_bundled_weights_segment_a_validation_bscan(duke_dir):
    from napari_octseg.inference import segment

    torch.set_num_threads(1)
    with np.load(duke_dir / "Subject_08.npz", allow_pickle=False) as npz:
        image, truth = npz["images"][5:6], npz["labels"][5:6]
    result = run_generator(segment(image, load_model(None), device="cpu"))
    s = scores(confusion_matrix(result.labels, truth, len(CLASS_NAMES)))
    # A floor well below the model card's figures: catches broken weights or normalisation.
    assert s["mean_dice_layers"] > 0.75
    assert s["pixel_accuracy"] > 0.9


def test_bundled_weights_heatmaps_lie_on_their_layers(duke_dir):
    """At the paper's ``decoder`` layer (a rescaled class-score map, so this checks the model's scores, not
    an explanation) each retinal layer class puts most of its mass near that layer."""
    from napari_octseg.explain import gradcam, mass_near_region

    torch.set_num_threads(1)
    with np.load(duke_dir / "Subject_07.npz", allow_pickle=False) as npz:
        images = npz["images"][4:7]
    layers = tuple(range(1, 8))
    result = run_generator(gradcam(images, load_model(None), classes=layers, layer="decoder", device="cpu"))
    mass = mass_near_region(result.heatmaps, result.labels, layers, radius_px=5.0)
    assert (mass > 0.75).all(), dict(zip(result.class_names, mass.round(3)))

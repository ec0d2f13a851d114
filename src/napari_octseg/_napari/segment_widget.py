"""Dock widget **Segment layers**: image layer -> a new, named and coloured Labels layer.

A thin adapter: it reads the chosen layer, runs :func:`napari_octseg.inference.segment` in a worker
thread (progress bar, Cancel) and turns the result into a *new* Labels layer. It never writes into an
existing Labels layer.

The new layer's metadata holds, under ``"octseg_auto_labels"``, one digest per B-scan of the automatic
result (:func:`napari_octseg.inference.bscan_hashes`), so the fine-tune widget can tell which B-scans
the user has since edited (:func:`napari_octseg.inference.edited_bscans`) without a copy of the volume.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from functools import partial
from pathlib import Path
from typing import Any

import napari
from magicgui.widgets import ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, SpinBox

from ..core.errors import CheckpointError, OctsegError
from ..core.progress import Progress
from ..inference import SegmentationResult, bscan_hashes, segment
from ..models.device import DEVICE_CHOICES, select_device
from ..models.registry import bundled_path, load_model
from ._common import Image, labels_layer_kwargs, report_error, start_worker, unique_layer_name, volume_from_layer

DEFAULT_CHOICE = "bundled default"
FILE_CHOICE = "checkpoint file"
#: Metadata key of the record of the automatic result (per-B-scan digests).
AUTO_LABELS_KEY = "octseg_auto_labels"
#: Metadata key describing how the labels were made (model, classes, device, time).
SEGMENTATION_KEY = "octseg_segmentation"


def _segmentation_job(
    layer: Image,
    model_spec: str | None,
    device: str,
    batch_size: int,
    cancel: Callable[[], bool],
) -> Generator[Progress, None, tuple[Image, Any, SegmentationResult]]:
    """Worker-thread work: rebuild the volume, load the model, segment (yielding progress)."""
    volume = volume_from_layer(layer)
    loaded = load_model(model_spec, device="cpu")
    result = yield from segment(volume, loaded, batch_size=batch_size, device=device, cancel=cancel)
    return layer, loaded, result


class SegmentWidget(Container):
    """Segment the retinal layers of an OCT image layer into a new Labels layer."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self.image = ComboBox(label="image", choices=self._image_choices)
        self.model_choice = ComboBox(label="model", choices=[DEFAULT_CHOICE, FILE_CHOICE], value=DEFAULT_CHOICE)
        self.checkpoint = FileEdit(label="checkpoint", mode="r", filter="*.pt", visible=False)
        self.model_info = Label(value="")
        self.device = ComboBox(label="device", choices=list(DEVICE_CHOICES), value="auto")
        self.batch_size = SpinBox(label="batch size", value=4, min=1, max=256)
        self.run_button = PushButton(text="Segment layers")
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        super().__init__(
            widgets=[
                self.image,
                self.model_choice,
                self.checkpoint,
                self.model_info,
                self.device,
                self.batch_size,
                self.run_button,
                self.progress,
                self.cancel_button,
                self.status,
            ]
        )
        self._worker: Any = None
        self._cancel_requested = False
        self.model_choice.changed.connect(self._update_model_info)
        self.checkpoint.changed.connect(self._update_model_info)
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        for layer in viewer.layers:
            layer.events.name.connect(self._refresh_images)
        self._update_model_info()

    # -- choices and messages ------------------------------------------------------------------

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Image)]

    def _refresh_images(self, _event: Any = None) -> None:
        self.image.reset_choices()

    def _on_layers_changed(self, event: Any) -> None:
        if event.type == "inserted":
            event.value.events.name.connect(self._refresh_images)
        self._refresh_images()

    def _model_spec(self) -> str | None:
        """``None`` for the bundled default, else the chosen checkpoint path."""
        if self.model_choice.value == DEFAULT_CHOICE:
            return None
        return str(self.checkpoint.value)

    def _update_model_info(self, _value: Any = None) -> None:
        use_file = self.model_choice.value == FILE_CHOICE
        self.checkpoint.visible = use_file
        if not use_file:
            path = bundled_path()
            if path.is_file():
                self.model_info.value = f"bundled model: {path.name}"
            else:
                self.model_info.value = (
                    f"The bundled default model ({path.name}) is not installed.\nChoose 'checkpoint file' instead."
                )
        else:
            path = Path(self.checkpoint.value)
            self.model_info.value = f"model file: {path.name}" if path.is_file() else "Choose a checkpoint (.pt) file."

    # -- running -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._worker is not None

    def start(self, _value: Any = None) -> None:
        """Start segmenting the chosen image layer (no-op while a run is in progress)."""
        if self.running:
            return
        layer = self.image.value
        try:
            if layer is None:
                raise OctsegError("no image layer to segment: open an OCT volume first")
            spec = self._model_spec()
            if spec is None and not bundled_path().is_file():
                raise CheckpointError(
                    f"the bundled default model ({bundled_path().name}) is not installed; choose a checkpoint file"
                )
            if spec is not None and not Path(spec).is_file():
                raise CheckpointError(f"{spec}: no such model file")
            select_device(self.device.value)
        except OctsegError as exc:
            report_error(exc)
            return
        self._cancel_requested = False
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        self.status.value = f"segmenting {layer.name}..."
        device, batch_size = self.device.value, int(self.batch_size.value)
        # start_worker needs a generator *function* (napari picks the worker type from it): a partial
        # of one qualifies, a lambda returning a generator does not.
        self._worker = start_worker(
            partial(_segmentation_job, layer, spec, device, batch_size, self._cancel_is_requested),
            on_yield=self._on_progress,
            on_return=self._on_result,
            on_finish=self._on_finish,
        )

    def _cancel_is_requested(self) -> bool:
        return self._cancel_requested

    def cancel(self, _value: Any = None) -> None:
        """Ask the running segmentation to stop at its next batch (no layer is added)."""
        if self.running:
            self._cancel_requested = True
            self.status.value = "cancelling..."

    def _on_progress(self, event: Any) -> None:
        if isinstance(event, Progress):
            self.progress.max = max(event.total, 1)
            self.progress.value = event.done
            info = event.info or {}
            self.status.value = (
                f"B-scan {event.done}/{event.total} on {info.get('device', '?')} "
                f"(batch {info.get('batch_size', '?')})"
            )

    def _on_result(self, payload: Any) -> None:
        if payload is None:  # the worker was aborted: nothing to add
            return
        layer, loaded, result = payload
        self.add_labels_layer(layer, loaded, result)

    def _on_finish(self) -> None:
        self._worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        if self._cancel_requested:
            self.status.value = "cancelled: no layer added"

    def add_labels_layer(self, image: Image, loaded: Any, result: SegmentationResult) -> Any:
        """Add ``result`` as a new Labels layer aligned with ``image``; return the layer."""
        labels = result.labels if image.ndim == 3 else result.labels[0]
        hashes = bscan_hashes(result.labels)
        metadata = {
            SEGMENTATION_KEY: {
                "image_layer": image.name,
                "model_source": loaded.source,
                "class_names": list(result.class_names),
                "device": result.device,
                "seconds": round(result.seconds, 3),
                "batch_size": result.batch_size,
            },
            AUTO_LABELS_KEY: {
                "method": "blake2b-128 per B-scan (napari_octseg.inference.bscan_hashes)",
                "bscan_hashes": hashes,
            },
        }
        name = unique_layer_name(self._viewer, f"{image.name} labels")
        kwargs = labels_layer_kwargs(name, result.class_names, scale=tuple(image.scale), metadata=metadata)
        kwargs["translate"] = tuple(image.translate)
        new_layer = self._viewer.add_labels(labels, **kwargs)
        n = result.labels.shape[0]
        self.status.value = f"added '{name}': {n} B-scan(s) in {result.seconds:.1f} s on {result.device}"
        return new_layer

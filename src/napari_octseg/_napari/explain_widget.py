"""Dock widget **Explain (Grad-CAM)**: one colour-mapped heatmap layer per class over the B-scans.

A thin adapter around :func:`napari_octseg.explain.gradcam`: it reads the chosen image layer, runs
Grad-CAM in a worker thread (progress bar, Cancel) and adds one Image layer per class, named
``Grad-CAM <class> (<image>)``, inferno colour map, additive blending, contrast 0..1, aligned with the
image. Only the class picked under **show** is visible (the dropdown switches it); a table lists each
class's mean and max heatmap intensity. Errors become one notification and add no layer.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from functools import partial
from pathlib import Path
from typing import Any

import napari
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    Select,
    Table,
)

from qtpy.QtWidgets import QStyledItemDelegate

from ..core.classes import CLASS_NAMES, SCORED_CLASSES
from ..core.errors import CheckpointError, InputError, OctsegError
from ..core.progress import Progress
from ..explain import GradCamResult, gradcam
from ..models.device import DEVICE_CHOICES, select_device
from ..models.registry import bundled_path, load_model
from ._common import Image, report_error, start_worker, unique_layer_name, volume_from_layer

DEFAULT_CHOICE = "bundled default"
FILE_CHOICE = "checkpoint file"
#: (label shown, layer name passed to gradcam). Coarser decoder levels exist in every SegNet of depth >= 2.
LAYER_CHOICES: list[tuple[str, str]] = [
    ("last decoder conv (decoder)", "decoder"),
    ("1x1 classifier (final)", "final"),
    ("decoder level 1 (1/2 resolution)", "decoder.1"),
    ("decoder level 2 (1/4 resolution)", "decoder.2"),
    ("decoder level 3 (1/8 resolution)", "decoder.3"),
]
COLORMAP = "inferno"
#: Heatmap intensity per class: mean of its [0, 1] map (how widespread the evidence is) and its raw
#: Grad-CAM peak relative to the strongest class of the run (how strong it is).
TABLE_COLUMNS = ("mean", "max (rel.)")
#: Metadata key of each heatmap layer: class, layer, statistics, model.
GRADCAM_KEY = "octseg_gradcam"


def _gradcam_job(
    layer: Image,
    model_spec: str | None,
    classes: list[int],
    conv_layer: str,
    target: str,
    device: str,
    cancel: Callable[[], bool],
) -> Generator[Progress, None, tuple[Image, GradCamResult]]:
    """Worker-thread work: rebuild the volume, load the model, run Grad-CAM (yielding progress)."""
    volume = volume_from_layer(layer)
    loaded = load_model(model_spec, device="cpu")
    result = yield from gradcam(volume, loaded, classes, conv_layer, target=target, device=device, cancel=cancel)
    return layer, result


def heatmap_layer_name(class_name: str, image_name: str) -> str:
    """``Grad-CAM <class> (<image>)``."""
    return f"Grad-CAM {class_name} ({image_name})"


class ExplainWidget(Container):
    """Per-class Grad-CAM heatmaps of an OCT image layer, as colour-mapped image layers."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self.image = ComboBox(label="image", choices=self._image_choices)
        self.model_choice = ComboBox(label="model", choices=[DEFAULT_CHOICE, FILE_CHOICE], value=DEFAULT_CHOICE)
        self.checkpoint = FileEdit(label="checkpoint", mode="r", filter="*.pt", visible=False)
        self.model_info = Label(value="")
        class_choices = [(f"{i} {name}", i) for i, name in enumerate(CLASS_NAMES)]
        self.classes = Select(label="classes", choices=class_choices, value=list(SCORED_CLASSES))
        # tall enough for the 10 classes without a scroll bar, no taller
        self.classes.native.setFixedHeight(10 * self.classes.native.sizeHintForRow(0) + 6)
        self.conv_layer = ComboBox(label="conv layer", choices=LAYER_CHOICES, value="decoder")
        self.target = ComboBox(
            label="score pixels",
            choices=[("predicted as the class", "predicted"), ("whole B-scan", "image")],
            value="predicted",
        )
        self.device = ComboBox(label="device", choices=list(DEVICE_CHOICES), value="auto")
        self.run_button = PushButton(text="Explain (Grad-CAM)")
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.show_class = ComboBox(label="show", choices=[], enabled=False)
        self.table = Table(value={"data": [], "columns": list(TABLE_COLUMNS)})
        self.table.read_only = True
        # magicgui's delegate shows numbers below 0.1 as 2.600e-02; the plain one shows our text
        self._plain_cells = QStyledItemDelegate(self.table.native)
        self.table.native.setItemDelegate(self._plain_cells)
        self.table.visible = False
        super().__init__(
            widgets=[
                self.image,
                self.model_choice,
                self.checkpoint,
                self.model_info,
                self.classes,
                self.conv_layer,
                self.target,
                self.device,
                self.run_button,
                self.progress,
                self.cancel_button,
                self.status,
                self.show_class,
                self.table,
            ]
        )
        self._worker: Any = None
        self._cancel_requested = False
        #: Heatmap layers of the latest run, by class name.
        self.heatmap_layers: dict[str, Image] = {}
        self.model_choice.changed.connect(self._update_model_info)
        self.checkpoint.changed.connect(self._update_model_info)
        self.run_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.show_class.changed.connect(self._show_selected)
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        for layer in viewer.layers:
            layer.events.name.connect(self._refresh_images)
        self._update_model_info()

    # -- choices and messages ------------------------------------------------------------------

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Image) and GRADCAM_KEY not in layer.metadata
        ]

    def _refresh_images(self, _event: Any = None) -> None:
        self.image.reset_choices()

    def _on_layers_changed(self, event: Any) -> None:
        if event.type == "inserted":
            event.value.events.name.connect(self._refresh_images)
        else:
            self.heatmap_layers = {k: v for k, v in self.heatmap_layers.items() if v is not event.value}
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
        """Start Grad-CAM on the chosen image layer (no-op while a run is in progress)."""
        if self.running:
            return
        layer = self.image.value
        try:
            if layer is None:
                raise OctsegError("no image layer to explain: open an OCT volume first")
            classes = sorted(self.classes.value)
            if not classes:
                raise InputError("select at least one class to explain")
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
        self.status.value = f"explaining {layer.name}..."
        job = partial(
            _gradcam_job,
            layer,
            spec,
            classes,
            self.conv_layer.value,
            self.target.value,
            self.device.value,
            self._cancel_is_requested,
        )
        self._worker = start_worker(job, on_yield=self._on_progress, on_return=self._on_result, on_finish=self._on_finish)

    def _cancel_is_requested(self) -> bool:
        return self._cancel_requested

    def cancel(self, _value: Any = None) -> None:
        """Ask the running Grad-CAM to stop before its next B-scan (no layer is added)."""
        if self.running:
            self._cancel_requested = True
            self.status.value = "cancelling..."

    def _on_progress(self, event: Any) -> None:
        if isinstance(event, Progress):
            self.progress.max = max(event.total, 1)
            self.progress.value = event.done
            self.status.value = f"Grad-CAM: B-scan {event.done}/{event.total}"

    def _on_result(self, payload: Any) -> None:
        if payload is None:  # the worker was aborted: nothing to add
            return
        image, result = payload
        self.add_heatmap_layers(image, result)

    def _on_finish(self) -> None:
        self._worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        if self._cancel_requested:
            self.status.value = "cancelled: no layer added"

    # -- results ---------------------------------------------------------------------------------

    def add_heatmap_layers(self, image: Image, result: GradCamResult) -> list[Image]:
        """Add one heatmap layer per class of ``result``, aligned with ``image``; return them.

        Only the first class's layer (or the class shown before, if it is among them) is visible.
        """
        previous = self.show_class.value
        shown = previous if previous in result.class_names else result.class_names[0]
        layers: dict[str, Image] = {}
        for k, (c, name) in enumerate(zip(result.classes, result.class_names, strict=True)):
            data = result.heatmaps[k] if image.ndim == 3 else result.heatmaps[k, 0]
            layers[name] = self._viewer.add_image(
                data,
                name=unique_layer_name(self._viewer, heatmap_layer_name(name, image.name)),
                colormap=COLORMAP,
                blending="additive",
                contrast_limits=(0.0, 1.0),
                scale=tuple(image.scale),
                translate=tuple(image.translate),
                units=tuple(image.units),
                visible=name == shown,
                metadata={
                    GRADCAM_KEY: {
                        "class": c,
                        "class_name": name,
                        "image_layer": image.name,
                        "layer": result.layer,
                        "target": result.target,
                        "reduction": result.reduction,
                        "stats": dict(result.stats[c]),
                        "model_source": result.model_source,
                    }
                },
            )
        self.heatmap_layers = layers
        self.show_class.changed.disconnect(self._show_selected)
        self.show_class.choices = list(result.class_names)
        self.show_class.value = shown
        self.show_class.changed.connect(self._show_selected)
        self.show_class.enabled = True
        self._fill_table(result)
        self._viewer.layers.selection.active = image
        self.status.value = (
            f"added {len(layers)} heatmap layer(s) ({result.layer}) in {result.seconds:.1f} s on {result.device}"
        )
        return list(layers.values())

    def _fill_table(self, result: GradCamResult) -> None:
        stats = [result.stats[c] for c in result.classes]
        strongest = max(s["max"] for s in stats)
        rows = [
            [f"{s['mean_normalized']:.3f}", f"{s['max'] / strongest:.3f}" if strongest > 0 else "0.000"]
            for s in stats
        ]
        self.table.value = {"data": rows, "index": list(result.class_names), "columns": list(TABLE_COLUMNS)}
        self.table.visible = True
        header = self.table.native.horizontalHeader()
        header.setStretchLastSection(True)
        self.table.native.resizeColumnsToContents()
        height = self.table.native.horizontalHeader().height() + sum(
            self.table.native.rowHeight(r) for r in range(len(rows))
        )
        self.table.native.setMinimumHeight(height + 4)

    def _show_selected(self, name: Any = None) -> None:
        """Make the chosen class's heatmap the only visible one of the latest run."""
        name = self.show_class.value if name is None else name
        for class_name, layer in self.heatmap_layers.items():
            layer.visible = class_name == name

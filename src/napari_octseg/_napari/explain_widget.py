"""Dock widget **Explain (Grad-CAM)**: one colour-mapped heatmap layer per class over the B-scans.

A thin adapter around :func:`napari_octseg.explain.gradcam`: it reads the chosen image layer, runs
Grad-CAM in a worker thread (progress bar, Cancel) and adds one Image layer per class, named
``Grad-CAM <class> (<image>)``, inferno colour map, additive blending, contrast 0..1, aligned with the
image. Only the class picked under **show** is visible (the dropdown switches it); a table lists each
class's mean and max heatmap intensity and **Save table** writes it (with the feature-importance
weights) as CSV. The **question** is what each class's score is taken over: its predicted pixels, the
whole B-scan, or a region (Seg-Grad-CAM): the selected rectangle/polygon of a Shapes layer, or the pixels
of one label value (under the cursor, or chosen) of a Labels layer, in the B-scan on screen. A line under
the layer choice says what the map at that layer is (at the paper's layers: a rescaled class-score map).
Heatmap layers are named ``Grad-CAM <class> · <image>`` (class first, so a narrow layer list keeps it).
Labels layers over the same image are hidden while heatmaps are
shown (their bright colours would swamp the additive heatmap) and come back when **labels under heatmaps**
is ticked; their data are never touched. Errors become one notification and add no layer.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from functools import partial
from typing import Any

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Label, PushButton, Select, SpinBox, Table
from qtpy.QtWidgets import QFileDialog, QStyledItemDelegate

from ..core.classes import CLASS_NAMES, SCORED_CLASSES
from ..core.errors import InputError
from ..core.progress import Progress
from ..explain import GradCamResult, gradcam
from ..explain.export import write_table
from ..explain.layers import DEFAULT_LAYER, LAYER_DESCRIPTIONS, REGION_NOTE, describe_layer
from ..models.registry import load_model
from ._common import Image, short_name, unique_layer_name, volume_from_layer
from ._explain_region import QUESTIONS, REGION_QUESTIONS, region_from_layers
from ._model_panel import DEFAULT_CHOICE, FILE_CHOICE, ModelJobWidget

__all__ = ["COLORMAP", "DEFAULT_CHOICE", "FILE_CHOICE", "GRADCAM_KEY", "ExplainWidget", "heatmap_layer_name"]

#: (label shown, layer name passed to gradcam): the measured default first, the paper's two layers last.
LAYER_CHOICES: list[tuple[str, str]] = [(text, name) for name, text in LAYER_DESCRIPTIONS]
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
    region: np.ndarray | None = None,
) -> Generator[Progress, None, tuple[Image, GradCamResult]]:
    """Worker-thread work: rebuild the volume, load the model, run Grad-CAM (yielding progress)."""
    volume = volume_from_layer(layer)
    loaded = load_model(model_spec, device="cpu")
    result = yield from gradcam(
        volume, loaded, classes, conv_layer, target=target, region=region, device=device, cancel=cancel
    )
    return layer, result


def heatmap_layer_name(class_name: str, image_name: str) -> str:
    """``Grad-CAM <class> · <image without extension>``, e.g. ``Grad-CAM EZ+OS · Subject_07``."""
    return f"Grad-CAM {class_name} · {short_name(image_name)}"


def question_text(result: GradCamResult) -> str:
    """The question a result answers, in the dock's words (``region in B-scan 5``, ``whole B-scan``, ...)."""
    if result.target == "region":
        scans = ", ".join(str(b) for b in result.bscans)
        return f"region in B-scan {scans}"
    return "whole B-scan" if result.target == "image" else "each class's predicted pixels"


class ExplainWidget(ModelJobWidget):
    """Per-class Grad-CAM heatmaps of an OCT image layer, as colour-mapped image layers."""

    run_text = "Explain (Grad-CAM)"
    run_tooltip = "compute one Grad-CAM heatmap layer per chosen class (the image and labels are never changed)"
    action = "explain"
    busy = "explaining"

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        class_choices = [(f"{i} {name}", i) for i, name in enumerate(CLASS_NAMES)]
        #: Heatmap layers of the latest run, by class name.
        self.heatmap_layers: dict[str, Image] = {}
        self.classes = Select(
            label="classes",
            choices=class_choices,
            value=list(SCORED_CLASSES),
            tooltip="classes to explain, one heatmap layer each (Ctrl/Shift-click for several)",
        )
        # tall enough for the 10 classes without a scroll bar, no taller
        self.classes.native.setFixedHeight(10 * self.classes.native.sizeHintForRow(0) + 6)
        self.conv_layer = ComboBox(
            label="conv layer",
            choices=LAYER_CHOICES,
            value=DEFAULT_LAYER,
            tooltip="the network layer whose activations are weighted (coarser levels: blurrier, more context)",
        )
        self.layer_note = Label(value=describe_layer(DEFAULT_LAYER))
        self.layer_note.native.setWordWrap(True)
        self.target = ComboBox(
            label="question",
            choices=QUESTIONS,
            value="predicted",
            tooltip=(
                "what each class's score is taken over: its predicted pixels, the whole B-scan, or a region; "
                f"for a region, {REGION_NOTE}"
            ),
        )
        self.region_layer = ComboBox(
            label="region layer",
            choices=self._region_layers,
            visible=False,
            tooltip="the Shapes layer (selected rectangle/polygon) or Labels layer that holds the region",
        )
        self.label_value = SpinBox(label="label value", value=-1, min=-1, max=255, visible=False)
        self.label_value.tooltip = "-1: the label under the cursor when Explain is pressed"
        #: Region mask of the run being started (read from the layers in the GUI thread).
        self._region: np.ndarray | None = None
        #: The latest result, for Save table.
        self.result: GradCamResult | None = None
        self._result_image = ""
        # choices from the latest run (a callable: napari resets every dock's choices on each layer change)
        self.show_class = ComboBox(
            label="show",
            choices=self._heatmap_choices,
            enabled=False,
            tooltip="the class whose heatmap layer is visible (the others are hidden, not removed)",
        )
        self.show_labels = CheckBox(
            text="labels under heatmaps",
            value=False,
            enabled=False,
            tooltip="show the Labels layers that were hidden so the heatmap is not swamped (their data never change)",
        )

        #: Labels layers this widget hid, to show again (only their visibility is changed).
        self._hidden_labels: list[napari.layers.Labels] = []
        self.table = Table(
            value={"data": [], "columns": list(TABLE_COLUMNS)},
            tooltip="per class: mean of its [0, 1] heatmap, and its peak relative to the strongest class",
        )
        self.table.read_only = True
        # magicgui's delegate shows numbers below 0.1 as 2.600e-02; the plain one shows our text
        self._plain_cells = QStyledItemDelegate(self.table.native)
        self.table.native.setItemDelegate(self._plain_cells)
        self.table.visible = False
        self.save_table_button = PushButton(
            text="Save table (CSV)...", visible=False, tooltip="the per-class table with feature-importance weights"
        )
        super().__init__(
            viewer,
            options=[self.classes, self.conv_layer, self.layer_note, self.target, self.region_layer, self.label_value],
            results=[self.show_class, self.show_labels, self.table, self.save_table_button],
        )
        self.show_class.changed.connect(self._show_selected)
        self.show_labels.changed.connect(self._labels_toggled)
        self.conv_layer.changed.connect(lambda name: setattr(self.layer_note, "value", describe_layer(name)))
        self.target.changed.connect(self._question_changed)
        self.save_table_button.changed.connect(self._ask_and_save_table)
        self._viewer.layers.events.inserted.connect(lambda _e: self.region_layer.reset_choices())
        self._viewer.layers.events.removed.connect(lambda _e: self.region_layer.reset_choices())

    def _region_layers(self, _widget: Any = None) -> list[tuple[str, Any]]:
        viewer = getattr(self, "_viewer", None)  # None while the base class is being set up
        if viewer is None:
            return []
        kind = napari.layers.Labels if self.target.value == "label" else napari.layers.Shapes
        return [(layer.name, layer) for layer in viewer.layers if isinstance(layer, kind)]

    def _question_changed(self, question: str) -> None:
        self.region_layer.visible = question in REGION_QUESTIONS
        self.label_value.visible = question == "label"
        self.region_layer.reset_choices()

    def _offers_image(self, layer: Image) -> bool:
        return GRADCAM_KEY not in layer.metadata

    def _heatmap_choices(self, _widget: Any = None) -> list[str]:
        """Choices of "show": the classes of the latest run's heatmap layers."""
        return list(self.heatmap_layers)

    def _layer_removed(self, layer: Any) -> None:
        self.heatmap_layers = {k: v for k, v in self.heatmap_layers.items() if v is not layer}
        self._hidden_labels = [lab for lab in self._hidden_labels if lab is not layer]

    def _check_options(self) -> None:
        if not self.classes.value:
            raise InputError("select at least one class to explain")
        image = self.image.value
        self._region = region_from_layers(
            self._viewer, image, self.target.value, self.region_layer.value, int(self.label_value.value)
        )

    def _job(
        self, layer: Image, model_spec: str | None, cancel: Callable[[], bool]
    ) -> Callable[[], Generator[Any, None, Any]]:
        classes = sorted(self.classes.value)
        return partial(
            _gradcam_job,
            layer,
            model_spec,
            classes,
            self.conv_layer.value,
            "predicted" if self._region is not None else self.target.value,
            self.device.value,
            cancel,
            self._region,
        )

    def _progress_text(self, event: Progress) -> str:
        return f"Grad-CAM: B-scan {event.done}/{event.total}"

    def _show_result(self, payload: tuple[Image, GradCamResult]) -> str:
        self.add_heatmap_layers(*payload)
        return str(self.status.value)

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
        self.show_class.reset_choices()
        self.show_class.value = shown
        self.show_class.changed.connect(self._show_selected)
        self.show_class.enabled = True
        self._fill_table(result)
        self.result = result
        self._result_image = image.name
        self.save_table_button.visible = True
        self.show_labels.enabled = True
        self._labels_toggled(self.show_labels.value)
        self._viewer.layers.selection.active = image
        self.status.value = (
            f"added {len(layers)} heatmap layer(s) ({result.layer}; question: {question_text(result)}) "
            f"in {result.seconds:.1f} s on {result.device}"
        )
        return list(layers.values())

    def _fill_table(self, result: GradCamResult) -> None:
        stats = [result.stats[c] for c in result.classes]
        strongest = max(s["max"] for s in stats)
        rows = [
            [f"{s['mean_normalized']:.3f}", f"{s['max'] / strongest:.3f}" if strongest > 0 else "0.000"] for s in stats
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

    def _labels_toggled(self, show: bool) -> None:
        """Hide the visible Labels layers of the heatmaps' shape (the image's), or show again those it hid."""
        if show:
            for labels in self._hidden_labels:
                labels.visible = True
            self._hidden_labels = []
            return
        if not self.heatmap_layers:
            return
        shape = tuple(next(iter(self.heatmap_layers.values())).data.shape)
        for layer in self._viewer.layers:
            if isinstance(layer, napari.layers.Labels) and layer.visible and tuple(layer.data.shape) == shape:
                layer.visible = False
                self._hidden_labels.append(layer)

    def _show_selected(self, name: Any = None) -> None:
        """Make the chosen class's heatmap the only visible one of the latest run."""
        name = self.show_class.value if name is None else name
        for class_name, layer in self.heatmap_layers.items():
            layer.visible = class_name == name

    def save_table(self, path: str) -> None:
        """Write the latest run's per-class table (the paper's Table 3 columns) as CSV, atomically."""
        if self.result is None:
            raise InputError("no Grad-CAM result to save yet")
        write_table(path, [{"input": self._result_image, **row} for row in self.result.stats_rows()])
        self.status.value = f"saved the per-class table to {path}"

    def _ask_and_save_table(self, _value: Any = None) -> None:
        path, _ = QFileDialog.getSaveFileName(self.native, "Save Grad-CAM table", "gradcam_table.csv", "CSV (*.csv)")
        if path:
            self.save_table(path)

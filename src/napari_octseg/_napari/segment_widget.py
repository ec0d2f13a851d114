"""Dock widget **Segment layers**: image layer -> a new, named and coloured Labels layer.

A thin adapter: it reads the chosen layer, runs :func:`napari_octseg.inference.segment` in a worker
thread (progress bar, Cancel) and turns the result into a *new* Labels layer. It never writes into an
existing Labels layer.

The new layer's metadata holds, under ``"octseg_auto_labels"``, one digest per B-scan of the automatic
result (:func:`napari_octseg.io.provenance.edit_record`), so the fine-tune widget can tell which B-scans
the user has since edited (:func:`napari_octseg.io.provenance.edited_bscans`) without a copy of the
volume, also after the layer was saved with the plugin's writer and opened again,
and, under ``"octseg_quality"``, the per-B-scan quality (:mod:`napari_octseg.quality`), shown in the dock's
quality panel; an optional "uncertainty" Image layer shows the per-pixel uncertainty.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from functools import partial
from typing import Any

import napari
from magicgui.widgets import CheckBox, ComboBox, LineEdit
from napari.utils.notifications import show_warning

from ..core.classes import CLASS_NAMES
from ..core.intensity import REFLECTIVITY_CHOICES
from ..core.progress import Progress
from ..grid import parse_scale
from ..inference import SegmentationResult, segment
from ..io._sidecar import scan_date
from ..io.provenance import EDIT_RECORD_KEY, SEGMENTATION_KEY, edit_record
from ..models.device import select_device
from ..models.memory import check_model_memory
from ..models.registry import load_model
from ._common import Image, labels_layer_kwargs, unique_layer_name, volume_from_layer
from ._legend import ClassLegend
from ._model_panel import DEFAULT_CHOICE, FILE_CHOICE, ModelJobWidget
from .boundary_layer import add_boundary_layer
from .quality_panel import QUALITY_KEY, QualityPanel
from .reader_choice import prefer_plugin_for_own_files

__all__ = ["AUTO_LABELS_KEY", "DEFAULT_CHOICE", "FILE_CHOICE", "QUALITY_KEY", "SEGMENTATION_KEY", "SegmentWidget"]

#: Metadata key of the record of the automatic result (per-B-scan digests; :mod:`napari_octseg.io.provenance`).
AUTO_LABELS_KEY = EDIT_RECORD_KEY


def _segmentation_job(
    layer: Image,
    model_spec: str | None,
    device: str,
    batch_size: int,
    cancel: Callable[[], bool],
    scale_um: tuple[float, float, float] | None = None,
    reflectivity: str = "auto",
    mirror_check: bool = False,
) -> Generator[Progress, None, tuple[Image, Any, SegmentationResult]]:
    """Worker-thread work: rebuild the volume, load the model, segment (yielding progress)."""
    volume = volume_from_layer(layer)
    loaded = load_model(model_spec, device="cpu")
    check_model_memory(volume.shape, loaded, batch_size, select_device(device))
    result = yield from segment(
        volume,
        loaded,
        batch_size=batch_size,
        device=device,
        cancel=cancel,
        scale_um=scale_um or volume.scale_um,
        reflectivity=reflectivity,
        return_uncertainty=True,
        mirror_check=mirror_check,
    )
    return layer, loaded, result


class SegmentWidget(ModelJobWidget):
    """Segment the retinal layers of an OCT image layer into a new Labels layer."""

    run_text = "Segment layers"
    run_tooltip = "segment the chosen image into a NEW Labels layer (existing layers are never changed)"
    action = "segment"
    busy = "segmenting"

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        prefer_plugin_for_own_files()  # *.labels.tif reopens through this plugin, without napari's dialog
        self.scale_um = LineEdit(
            label="scale (µm)",
            value="",
            tooltip="Z,Y,X: µm per pixel along B-scan, depth, A-scan. Needed when the image layer has no scale "
            "(B-scans are resampled to the model's training spacing); empty: the image's own scale.",
        )
        self.reflectivity = ComboBox(
            label="grey values",
            choices=list(REFLECTIVITY_CHOICES),
            value="auto",
            tooltip="auto: the file's word, else detected; linear: raw reflectivity (shown as x**0.25); "
            "display: already compressed grey values",
        )
        self.uncertainty_check = CheckBox(
            text="add an uncertainty layer",
            value=False,
            tooltip="per-pixel uncertainty (1 - margin of the two likeliest classes) as an Image layer",
        )
        self.mirror_check = CheckBox(
            text="check by mirroring (1.5 x time)",
            value=False,
            tooltip="also segment every B-scan mirrored left-right: B-scans whose labels then change get a lower "
            "quality ('labels change when the B-scan is mirrored'); the labels themselves are the same",
        )
        self.boundaries_check = CheckBox(
            text="add boundary lines",
            value=True,
            tooltip="the 8 boundary surfaces (ILM ... BM, as 'octseg thickness --surfaces' writes them) as a "
            "Shapes layer of lines on each B-scan, each in the colour of the layer below it (BM violet); "
            "the lines follow brush edits of the labels (redrawn on the edited B-scans when a stroke ends)",
        )
        self.quality_panel = QualityPanel(viewer)
        #: Class names and colours of the Labels layers this dock makes; its position is the end of the
        #: dock, so rows added later (options above the run button, results below) keep the legend last.
        self.legend = ClassLegend()
        super().__init__(
            viewer,
            options=[
                self.scale_um,
                self.reflectivity,
                self.uncertainty_check,
                self.mirror_check,
                self.boundaries_check,
            ],
            results=[self.quality_panel, self.legend],
            batch_size=4,
        )

    def _check_options(self) -> None:
        parse_scale(self.scale_um.value, "scale")

    def _job(
        self, layer: Image, model_spec: str | None, cancel: Callable[[], bool]
    ) -> Callable[[], Generator[Any, None, Any]]:
        batch_size = self.batch_size.value if self.batch_size is not None else 4
        return partial(
            _segmentation_job,
            layer,
            model_spec,
            self.device.value,
            int(batch_size),
            cancel,
            parse_scale(self.scale_um.value, "scale"),
            self.reflectivity.value,
            bool(self.mirror_check.value),
        )

    def _progress_text(self, event: Progress) -> str:
        info = event.info or {}
        return f"B-scan {event.done}/{event.total} on {info.get('device', '?')} (batch {info.get('batch_size', '?')})"

    def _show_result(self, payload: tuple[Image, Any, SegmentationResult]) -> str:
        layer = self.add_labels_layer(*payload)
        image, _, result = payload
        if self.uncertainty_check.value and result.uncertainty is not None:
            self.add_uncertainty_layer(image, result)
        if self.boundaries_check.value and tuple(result.class_names) == CLASS_NAMES:
            add_boundary_layer(self._viewer, layer, base=image.name)
            self._viewer.layers.selection.active = layer  # the brush and the docks work on the labels
        if result.quality is not None:
            self.quality_panel.show_quality(result.quality.summary(), layer)
        return str(self.status.value)

    def add_uncertainty_layer(self, image: Image, result: SegmentationResult) -> Any:
        """Add the per-pixel uncertainty (0-1) as an Image layer aligned with ``image``; return it."""
        assert result.uncertainty is not None
        data = result.uncertainty if image.ndim == 3 else result.uncertainty[0]
        return self._viewer.add_image(
            data,
            name=unique_layer_name(self._viewer, f"{image.name} uncertainty"),
            colormap="magma",
            contrast_limits=(0.0, 1.0),
            opacity=0.7,
            blending="additive",
            scale=tuple(image.scale),
            translate=tuple(image.translate),
            units=tuple(image.units),
            metadata={"octseg_uncertainty": "1 - margin of the two likeliest classes: 0 certain, 1 a tie"},
        )

    def add_labels_layer(self, image: Image, loaded: Any, result: SegmentationResult) -> Any:
        """Add ``result`` as a new Labels layer aligned with ``image``; return the layer."""
        labels = result.labels if image.ndim == 3 else result.labels[0]
        volume = volume_from_layer(image)
        metadata = {
            SEGMENTATION_KEY: {
                "image_layer": image.name,
                # the scan's file and what its reader knew: the labels file and the CSVs name them
                "image_source": volume.meta.get("source"),
                "laterality": volume.laterality,
                "scan_pattern": volume.scan_pattern,
                "scan_date": scan_date(volume),
                "model_source": loaded.source,
                "class_names": list(result.class_names),
                "device": result.device,
                "seconds": round(result.seconds, 3),
                "batch_size": result.batch_size,
                "preprocessing": result.provenance(),
            },
            AUTO_LABELS_KEY: edit_record(result.labels),
        }
        if result.quality is not None:
            metadata[QUALITY_KEY] = result.quality.summary()
        name = unique_layer_name(self._viewer, f"{image.name} labels")
        kwargs = labels_layer_kwargs(name, result.class_names, scale=tuple(image.scale), metadata=metadata)
        kwargs["translate"] = tuple(image.translate)
        kwargs["units"] = tuple(image.units)  # µm only when the image has them (no mixed-unit warning)
        new_layer = self._viewer.add_labels(labels, **kwargs)
        n = result.labels.shape[0]
        flagged = int(result.quality.flagged.sum()) if result.quality is not None else 0
        self.status.value = f"added '{name}': {n} B-scan(s) in {result.seconds:.1f} s on {result.device}"
        if flagged:
            self.status.value += f"; {flagged} flagged, see quality below"
        for note in result.notes:
            show_warning(f"{image.name}: {note}")
        if result.notes:
            self.status.value += " - " + "; ".join(result.notes)
        return new_layer

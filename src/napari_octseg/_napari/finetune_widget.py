"""Dock widget **Fine-tune on corrections**: learn from the B-scans the user corrected.

The widget reads the image and the corrected Labels layer, works out which B-scans were corrected
(those differing from the automatic result kept in the layer's metadata, or a list the user types),
runs :func:`napari_octseg.learning.finetune.finetune` through the docks' job runner with a live loss
curve, saves the new model under the name the user typed in the model library (a folder shown in the
dock; the Segment and Explain docks and ``octseg segment --model NAME`` list and use it), and then
offers to segment the remaining B-scans with the new model into a NEW Labels layer. The corrected
layer is only ever read; it defaults to the latest layer the Segment dock made.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import CheckBox, ComboBox, FileEdit, Label, LineEdit, PushButton, SpinBox
from napari.utils.notifications import show_info, show_warning
from qtpy.QtCore import Qt

from ..core.errors import InputError, OctsegError
from ..learning.finetune import (
    DEFAULT_EPOCHS,
    DEFAULT_FREEZE_ENCODER_EPOCHS,
    DEFAULT_LR,
    DEFAULT_SELF_REPLAY_BSCANS,
    check_out_path,
    format_bscans,
    load_replay,
)
from ..models.device import DEVICE_CHOICES
from ..models.library import default_model_name, library_dir, library_path, model_name
from . import _common
from ._bscan_picker import BscanPicker, corrected_bscans, full_width
from ._common import Image, Labels, labels_layer_kwargs, short_name, unique_layer_name, volume_from_layer
from ._dock import ScrollDock
from ._loss_plot import LossPlot
from ._model_panel import DEFAULT_CHOICE, FILE_CHOICE, ModelChooser, library_changed
from ._runner import JobRunner
from .segment_widget import AUTO_LABELS_KEY, SEGMENTATION_KEY

__all__ = ["DEFAULT_CHOICE", "FILE_CHOICE", "FinetuneWidget", "corrected_bscans"]


def _segmented(layer: Any) -> bool:
    """Whether ``layer`` is a Labels layer the Segment dock made (it carries the automatic-result record)."""
    return isinstance(layer, Labels) and AUTO_LABELS_KEY in layer.metadata


class FinetuneWidget(ScrollDock):
    """Fine-tune the segmentation model on corrected B-scans, then re-segment the rest."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.new_model: Any = None
        self.new_checkpoint: Path | None = None
        self.used_bscans: list[int] = []

        self.image_combo = ComboBox(label="image", choices=self._image_choices, tooltip="the OCT image layer")
        self.labels_combo = ComboBox(
            label="labels",
            choices=self._labels_choices,
            tooltip="the Labels layer you corrected (default: the latest one Segment layers made); only read",
        )
        self.picker = BscanPicker(viewer, lambda: self.image_combo.value, lambda: self.labels_combo.value)
        self.bscans_edit, self.detected_label, self.suggestions = (
            self.picker.edit,
            self.picker.detected,
            self.picker.suggestions,
        )
        self.base_model = ModelChooser(
            label="base model",
            tooltip="the model to start from: bundled, one from the model library, or a checkpoint file",
        )
        self.base_combo, self.base_file, self.base_info = (
            self.base_model.choice,
            self.base_model.checkpoint,
            self.base_model.info,
        )
        self.epochs_spin = SpinBox(
            label="epochs", min=1, max=500, value=DEFAULT_EPOCHS, tooltip="passes over the corrected B-scans"
        )
        self.lr_edit = LineEdit(label="learning rate", value=f"{DEFAULT_LR:g}", tooltip="Adam learning rate, e.g. 1e-4")
        self.freeze_spin = SpinBox(
            label="frozen epochs",
            min=0,
            max=500,
            value=DEFAULT_FREEZE_ENCODER_EPOCHS,
            tooltip="epochs at the start during which only the decoder learns (limits forgetting)",
        )
        self.replay_files = FileEdit(
            label="replay data",
            mode=FileDialogMode.EXISTING_FILES,
            filter="*.npz",
            tooltip="optional .npz files (images, labels) from the base model's training data, "
            "mixed in against forgetting",
        )
        self.self_replay_spin = SpinBox(
            label="self-replay",
            min=0,
            max=1000,
            value=DEFAULT_SELF_REPLAY_BSCANS,
            tooltip="uncorrected B-scans of this volume, labelled by the base model, mixed in so the model "
            "keeps what it did right (0: off)",
        )
        self.device_combo = ComboBox(
            label="device",
            choices=list(DEVICE_CHOICES),
            value="auto",
            tooltip="auto = CUDA GPU, then Apple MPS, then CPU",
        )
        self.name_edit = LineEdit(
            label="save as",
            value="",
            tooltip="name of the new model in the model library; Segment layers, Explain and "
            "'octseg segment --model NAME' find it by this name",
        )
        self.library_label = Label(label="library", value="")
        self.library_label.native.setWordWrap(True)
        self.library_label.native.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.run_btn = PushButton(text="Fine-tune", tooltip="train a new model from the corrected B-scans (a new file)")
        self.runner = JobRunner(run_buttons=[self.run_btn], cancel_text="cancelled: nothing was written or added")
        self.progress, self.cancel_btn, self.status = (
            self.runner.progress,
            self.runner.cancel_button,
            self.runner.status,
        )
        self.keep_check = CheckBox(
            text="keep corrected B-scans as they are",
            value=True,
            tooltip="copy the corrected B-scans into the new layer instead of re-segmenting them",
        )
        self.segment_btn = PushButton(
            text="Segment the rest with the new model",
            enabled=False,
            tooltip="segment the other B-scans with the new model into a NEW Labels layer",
        )
        self.loss_plot = LossPlot()
        self.extend(
            [
                self.image_combo,
                self.labels_combo,
                self.picker.list_row,
                *self.base_model.widgets,
                self.epochs_spin,
                self.lr_edit,
                self.freeze_spin,
                self.replay_files,
                self.self_replay_spin,
                self.device_combo,
                self.name_edit,
                self.library_label,
                self.run_btn,
                *self.runner.widgets(),
            ]
        )
        # Rows of buttons and long lines span the dock's width (no empty label column beside them), so the
        # dock is no wider than the others.
        self.content_layout().insertWidget(self.index(self.base_combo), self.picker.block.native)
        self.content_layout().addWidget(self.loss_plot)
        self._finishing = full_width(self.keep_check, self.segment_btn)
        self.content_layout().addWidget(self._finishing.native)

        self.labels_combo.changed.connect(self.picker.detect)
        self.image_combo.changed.connect(self._suggest_name)
        self.run_btn.changed.connect(self.run)
        self.segment_btn.changed.connect(self.segment_rest)
        viewer.layers.events.inserted.connect(self._layer_inserted)
        viewer.layers.events.removed.connect(self._layers_changed)
        self._select_segmented()
        self._suggest_name()
        self.picker.detect()
        self.compact()

    @property
    def worker(self) -> Any:
        """The running job's worker, or ``None``."""
        return self.runner.worker

    # ------------------------------------------------------------------ layer choices
    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _labels_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Labels)]

    def _layers_changed(self, _event: Any = None) -> None:
        self.reset_choices()

    def _layer_inserted(self, event: Any) -> None:
        self.reset_choices()
        if _segmented(event.value) and not _segmented(self.labels_combo.value):
            self._select_segmented()

    def _select_segmented(self) -> None:
        """Choose the latest Labels layer the Segment dock made, and the image it was made from."""
        made = [layer for layer in self.viewer.layers if _segmented(layer)]
        if not made:
            return
        self.labels_combo.value = made[-1]
        source = made[-1].metadata.get(SEGMENTATION_KEY, {}).get("image_layer")
        if source in self.viewer.layers and isinstance(self.viewer.layers[source], Image):
            self.image_combo.value = self.viewer.layers[source]

    def _suggest_name(self, _value: Any = None) -> None:
        """Default model name ``<image>-<date>`` (kept once the user typed one)."""
        image = self.image_combo.value
        if image is not None and (not self.name_edit.value or self.name_edit.value == getattr(self, "_suggested", "")):
            self._suggested = default_model_name(short_name(image.name))
            self.name_edit.value = self._suggested
        self.library_label.value = str(library_dir())

    # ------------------------------------------------------------------ which B-scans
    def detect_corrected(self, _value: Any = None) -> list[int]:
        """Fill the B-scan list with the B-scans that differ from the layer's automatic result."""
        return self.picker.detect()

    def add_current_bscan(self, _value: Any = None) -> None:
        """Add the B-scan shown in the viewer to the list."""
        self.picker.add_current()

    # ------------------------------------------------------------------ fine-tuning
    def _inputs(self) -> dict[str, Any]:
        from ..models.registry import load_model

        image, labels = self.image_combo.value, self.labels_combo.value
        if image is None or labels is None:
            raise InputError("choose an image layer and its corrected Labels layer")
        volume = volume_from_layer(image)
        data = np.asarray(labels.data)
        if data.ndim == 2:
            data = data[None]
        bscans = self.picker.picked(volume.n_bscans)
        if not bscans:
            raise InputError("no B-scans to learn from: correct some, or type their indices")
        try:
            lr = float(self.lr_edit.value)
        except ValueError:
            raise InputError(f"learning rate {self.lr_edit.value!r} is not a number") from None
        if not lr > 0:
            raise InputError("learning rate must be positive")
        base_spec = self.base_model.spec()
        name = model_name(self.name_edit.value or default_model_name(short_name(image.name)))
        out = library_path(name)
        if out.exists():
            raise InputError(
                f"a model named {name!r} is already in the model library ({out.parent}); choose another name"
            )
        base = load_model(base_spec, device="cpu")
        out = check_out_path(out, base, overwrite=False)
        chosen = self.replay_files.value
        files = chosen if isinstance(chosen, tuple) else (chosen,) if chosen is not None else ()
        paths = [p for p in files if str(p) not in ("", ".")]
        replay = load_replay(paths) if paths else None
        source = {"image_layer": image.name, "labels_layer": labels.name, "image_source": volume.meta.get("source")}
        return dict(
            volume=volume, labels=data, bscans=bscans, base=base, out_path=out, lr=lr, replay=replay, data_source=source
        )

    def run(self, _value: Any = None) -> None:
        """Start fine-tuning in the background (errors become one notification; nothing changes)."""
        from ..learning.finetune import FinetuneOptions, finetune

        if self.runner.running:
            return
        try:
            kw = self._inputs()
            gen = finetune(
                kw["volume"],
                kw["labels"],
                kw["bscans"],
                kw["base"],
                epochs=self.epochs_spin.value,
                lr=kw["lr"],
                out_path=kw["out_path"],
                freeze_encoder_epochs=self.freeze_spin.value,
                device=self.device_combo.value,
                replay=kw["replay"],
                data_source=kw["data_source"],
                options=FinetuneOptions(self_replay_bscans=self.self_replay_spin.value),
                cancel=self.runner.cancel_requested,
            )
        except OctsegError as exc:
            _common.report_error(exc)
            return
        self.used_bscans = kw["bscans"]
        self.loss_plot.clear()
        self.segment_btn.enabled = False
        self.runner.start(
            gen,
            busy=f"fine-tuning on B-scans {format_bscans(kw['bscans'])}...",
            on_yield=self._on_event,
            on_return=self._on_result,
            on_finish=self._on_finish,
        )

    def cancel(self, _value: Any = None) -> None:
        """Stop the running job at its next step (nothing is written or added)."""
        self.runner.cancel()

    def _on_event(self, event: Any) -> None:
        total = max(1, event.n_epochs * event.n_steps)
        self.progress.max = total
        if event.kind == "step":
            self.progress.value = min(total, (event.epoch - 1) * event.n_steps + event.step)
            self.loss_plot.add_step(event.epoch - 1 + event.step / max(1, event.n_steps), event.train_loss)
        else:
            self.loss_plot.add_epoch(float(event.epoch), event.val_loss)
            val = f", corrected B-scans {event.val_loss:.4f}" if event.val_loss is not None else ""
            self.status.value = f"epoch {event.epoch}/{event.n_epochs}: loss {event.train_loss:.4f}{val}"

    def _on_result(self, result: Any) -> str:
        if result.checkpoint_path is None:
            show_warning(result.message)
            return str(result.message)
        self.new_model, self.new_checkpoint = result.model, Path(result.checkpoint_path)
        show_info(result.message)
        library_changed.emit()
        self._suggested = ""
        self.name_edit.value = ""
        self._suggest_name()
        return f"saved model '{self.new_checkpoint.stem}' in the library (best epoch {result.best_epoch})"

    def _on_finish(self) -> None:
        self.segment_btn.enabled = self.new_model is not None

    # ------------------------------------------------------------------ re-segmentation
    def segment_rest(self, _value: Any = None) -> None:
        """Segment the B-scans not learned from (or all) with the new model into a new Labels layer."""
        from ..learning.resegment import bscans_to_segment, segment_rest

        image, labels = self.image_combo.value, self.labels_combo.value
        if self.new_model is None or image is None or self.runner.running:
            return
        try:
            volume = volume_from_layer(image)
        except OctsegError as exc:
            _common.report_error(exc)
            return
        keep = bool(self.keep_check.value) and labels is not None and np.size(labels.data) == np.prod(volume.shape)
        rest = bscans_to_segment(volume.n_bscans, self.used_bscans, keep)
        if not rest:
            show_info("every B-scan was learned from; nothing left to segment")
            return
        ref = labels if keep else image
        scale, translate, units, ndim = tuple(ref.scale), tuple(ref.translate), tuple(ref.units), ref.ndim
        corrected = np.asarray(labels.data) if keep else None
        model, checkpoint = self.new_model, self.new_checkpoint

        def on_done(result: Any) -> str:
            name = unique_layer_name(self.viewer, f"{image.name} labels (fine-tuned)")
            meta = {AUTO_LABELS_KEY: result.record, "octseg_model": str(checkpoint), "octseg_kept_bscans": result.kept}
            kwargs = labels_layer_kwargs(name, model.class_names, scale, meta)
            kwargs["translate"] = translate
            kwargs["units"] = units
            self.viewer.add_labels(result.labels if ndim == 3 else result.labels[0], **kwargs)
            return f"added layer {name!r}"

        self.segment_btn.enabled = False
        cancel = self.runner.cancel_requested
        self.runner.start(
            partial(
                segment_rest, volume, model, corrected, self.used_bscans, device=self.device_combo.value, cancel=cancel
            ),
            busy=f"segmenting {len(rest)} B-scan(s) with the new model...",
            on_return=on_done,
            on_finish=self._on_finish,
            progress_text=lambda p: f"B-scan {p.done}/{p.total} with the new model",
        )

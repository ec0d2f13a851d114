"""Dock widget **Fine-tune on corrections**: learn from the B-scans the user corrected.

The widget reads the image and the corrected Labels layer, works out which B-scans were corrected
(those differing from the automatic result kept in the layer's metadata, or a list the user types),
runs :func:`napari_octseg.learning.finetune.finetune` in a worker with a live loss curve, and then
offers to segment the remaining B-scans with the new model into a NEW Labels layer. The corrected
layer is only ever read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, ProgressBar, PushButton, SpinBox
from napari.utils.notifications import show_info, show_warning

from ..core.errors import InputError, OctsegError
from ..core.volume import OctVolume
from ..inference import bscan_hashes, edited_bscans
from ..learning.finetune import (
    DEFAULT_EPOCHS,
    DEFAULT_FREEZE_ENCODER_EPOCHS,
    DEFAULT_LR,
    DEFAULT_SELF_REPLAY_BSCANS,
    changed_bscans,
    check_out_path,
    format_bscans,
    load_replay,
    parse_bscans,
)
from ..models.device import DEVICE_CHOICES
from ._common import (
    Image,
    Labels,
    labels_layer_kwargs,
    report_error,
    start_worker,
    unique_layer_name,
    volume_from_layer,
)
from ._loss_plot import LossPlot
from ._model_panel import DEFAULT_CHOICE, FILE_CHOICE, checked_model_spec, model_info_text
from .quality_panel import CorrectionSuggestions
from .segment_widget import AUTO_LABELS_KEY


def default_output_path(stem: str = "finetuned") -> Path:
    """A new checkpoint path in the user's cache folder (never inside the package)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = cache / "napari-octseg" / "finetuned"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_") or "finetuned"
    name = f"{name}-{datetime.now():%Y%m%d-%H%M%S}"
    path = folder / f"{name}.pt"
    k = 2
    while path.exists():
        path = folder / f"{name}-{k}.pt"
        k += 1
    return path


def corrected_bscans(layer: Labels) -> list[int] | None:
    """B-scans of ``layer`` edited since the automatic segmentation, or ``None`` if it kept no record.

    The record is the segment widget's per-B-scan digests (``{"bscan_hashes": [...]}``) or, from other
    tools, a full copy of the automatic labels.
    """
    record = layer.metadata.get(AUTO_LABELS_KEY)
    data = np.asarray(layer.data)
    data = data[None] if data.ndim == 2 else data
    if isinstance(record, dict) and "bscan_hashes" in record:
        try:
            return edited_bscans(data, list(record["bscan_hashes"]))
        except OctsegError:
            return None
    if not isinstance(record, np.ndarray) or record.size != data.size:
        return None
    return changed_bscans(data, record.reshape(data.shape))


def _relay(gen: Generator[Any, None, Any]) -> Generator[Any, None, Any]:
    """Re-yield ``gen``; ``partial(_relay, gen)`` is a generator function, as napari's worker needs."""
    return (yield from gen)


class FinetuneWidget(Container):
    """Fine-tune the segmentation model on corrected B-scans, then re-segment the rest."""

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__(labels=True)
        self.viewer = viewer
        self.worker: Any = None
        self._cancel_requested = False
        self.new_model: Any = None
        self.new_checkpoint: Path | None = None
        self.used_bscans: list[int] = []

        self.image_combo = ComboBox(label="image", choices=self._image_choices)
        self.labels_combo = ComboBox(label="corrected labels", choices=self._labels_choices)
        self.bscans_edit = LineEdit(
            label="B-scans", tooltip="0-based B-scan indices to learn from, e.g. 0, 5, 9 or 3-6"
        )
        self.detected_label = Label(label="", value="")
        self.suggestions = CorrectionSuggestions(viewer, lambda: self.labels_combo.value, self._use_suggestions)
        self.detect_btn = PushButton(text="Detect corrected")
        self.current_btn = PushButton(text="Add current B-scan")
        self.base_combo = ComboBox(label="base model", choices=[DEFAULT_CHOICE, FILE_CHOICE], value=DEFAULT_CHOICE)
        self.base_file = FileEdit(label="checkpoint", mode="r", filter="*.pt", visible=False)
        self.base_info = Label(label="", value=model_info_text(DEFAULT_CHOICE, None))
        self.epochs_spin = SpinBox(label="epochs", min=1, max=500, value=DEFAULT_EPOCHS)
        self.lr_edit = LineEdit(label="learning rate", value=f"{DEFAULT_LR:g}")
        self.freeze_spin = SpinBox(
            label="frozen-encoder epochs",
            min=0,
            max=500,
            value=DEFAULT_FREEZE_ENCODER_EPOCHS,
            tooltip="epochs at the start during which only the decoder learns (limits forgetting)",
        )
        self.replay_files = FileEdit(
            label="replay data",
            mode="rm",
            filter="*.npz",
            tooltip="optional .npz files (images, labels) from the base model's training data, mixed in against forgetting",
        )
        self.self_replay_spin = SpinBox(
            label="self-replay B-scans",
            min=0,
            max=1000,
            value=DEFAULT_SELF_REPLAY_BSCANS,
            tooltip="uncorrected B-scans of this volume, labelled by the base model, mixed in so the model "
            "keeps what it did right (0: off)",
        )
        self.device_combo = ComboBox(label="device", choices=list(DEVICE_CHOICES), value="auto")
        self.out_edit = FileEdit(label="save as", mode="w", filter="*.pt", value=default_output_path())
        self.run_btn = PushButton(text="Fine-tune")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1)
        self.status = Label(label="", value="")
        self.keep_check = CheckBox(text="keep corrected B-scans as they are", value=True)
        self.segment_btn = PushButton(text="Segment the rest with the new model", enabled=False)
        self.extend(
            [
                self.image_combo,
                self.labels_combo,
                self.bscans_edit,
                self.detected_label,
                Container(widgets=[self.detect_btn, self.current_btn], layout="horizontal", labels=False),
                self.suggestions,
                self.base_combo,
                self.base_file,
                self.base_info,
                self.epochs_spin,
                self.lr_edit,
                self.freeze_spin,
                self.replay_files,
                self.self_replay_spin,
                self.device_combo,
                self.out_edit,
                Container(widgets=[self.run_btn, self.cancel_btn], layout="horizontal", labels=False),
                self.progress,
                self.status,
                self.keep_check,
                self.segment_btn,
            ]
        )
        self.loss_plot = LossPlot()
        self.native.layout().insertWidget(self.index(self.status) + 1, self.loss_plot)

        self.labels_combo.changed.connect(self.detect_corrected)
        self.detect_btn.changed.connect(self.detect_corrected)
        self.current_btn.changed.connect(self.add_current_bscan)
        self.base_combo.changed.connect(self._base_changed)
        self.base_file.changed.connect(self._base_changed)
        self.run_btn.changed.connect(self.run)
        self.cancel_btn.changed.connect(self.cancel)
        self.segment_btn.changed.connect(self.segment_rest)
        for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
            event.connect(self._layers_changed)
        self.detect_corrected()

    # ------------------------------------------------------------------ layer choices
    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)]

    def _labels_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Labels)]

    def _layers_changed(self, _event: Any = None) -> None:
        self.reset_choices()

    def _base_changed(self, _value: Any = None) -> None:
        self.base_file.visible = self.base_combo.value == FILE_CHOICE
        self.base_info.value = model_info_text(self.base_combo.value, self.base_file.value)

    # ------------------------------------------------------------------ which B-scans
    def detect_corrected(self, _value: Any = None) -> list[int]:
        """Fill the B-scan list with the B-scans that differ from the layer's automatic result."""
        layer = self.labels_combo.value
        if layer is None:
            self.detected_label.value = "no Labels layer"
            return []
        found = corrected_bscans(layer)
        if found is None:
            self.detected_label.value = "no automatic result stored: type the B-scans"
            return []
        self.detected_label.value = f"corrected: {format_bscans(found) or 'none yet'}"
        if found:
            self.bscans_edit.value = format_bscans(found)
        return found

    def _use_suggestions(self, indices: list[int]) -> None:
        """Put the B-scans proposed for correction in the list (the user corrects them, then fine-tunes)."""
        self.bscans_edit.value = format_bscans(sorted(indices))

    def add_current_bscan(self, _value: Any = None) -> None:
        """Add the B-scan shown in the viewer to the list."""
        layer = self.image_combo.value
        if layer is None or layer.ndim < 3:
            self.bscans_edit.value = self.bscans_edit.value or "0"
            return
        n = layer.data.shape[-3]
        index = min(n - 1, max(0, int(round(layer.world_to_data(self.viewer.dims.point)[-3]))))
        try:
            current = parse_bscans(self.bscans_edit.value, n)
        except OctsegError as exc:
            report_error(exc)
            return
        self.bscans_edit.value = format_bscans([*current, index])

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
        if not self.bscans_edit.value.strip():
            self.detect_corrected()
        bscans = parse_bscans(self.bscans_edit.value, volume.n_bscans)
        if not bscans:
            raise InputError("no B-scans to learn from: correct some, or type their indices")
        try:
            lr = float(self.lr_edit.value)
        except ValueError:
            raise InputError(f"learning rate {self.lr_edit.value!r} is not a number") from None
        if not lr > 0:
            raise InputError("learning rate must be positive")
        base_spec = checked_model_spec(self.base_combo.value, self.base_file.value)
        base = load_model(base_spec, device="cpu")
        out = check_out_path(self.out_edit.value, base, overwrite=False)
        paths = [p for p in (self.replay_files.value or ()) if str(p) not in ("", ".")]
        replay = load_replay(paths) if paths else None
        source = {"image_layer": image.name, "labels_layer": labels.name, "image_source": volume.meta.get("source")}
        return dict(
            volume=volume, labels=data, bscans=bscans, base=base, out_path=out, lr=lr, replay=replay, data_source=source
        )

    def run(self, _value: Any = None) -> None:
        """Start fine-tuning in a worker (errors become one notification; nothing changes)."""
        from ..learning.finetune import FinetuneOptions, finetune

        if self.worker is not None:
            return
        try:
            kw = self._inputs()
        except OctsegError as exc:
            report_error(exc)
            return
        self.used_bscans = kw["bscans"]
        self.loss_plot.clear()
        self.progress.value = 0
        self.status.value = f"fine-tuning on B-scans {format_bscans(kw['bscans'])}..."
        self._busy(True)
        epochs, freeze, device = self.epochs_spin.value, self.freeze_spin.value, self.device_combo.value
        self._cancel_requested = False
        try:
            gen = finetune(
                kw["volume"],
                kw["labels"],
                kw["bscans"],
                kw["base"],
                epochs=epochs,
                lr=kw["lr"],
                out_path=kw["out_path"],
                freeze_encoder_epochs=freeze,
                device=device,
                replay=kw["replay"],
                data_source=kw["data_source"],
                options=FinetuneOptions(self_replay_bscans=self.self_replay_spin.value),
                cancel=lambda: self._cancel_requested,
            )
        except OctsegError as exc:
            report_error(exc)
            self._busy(False)
            return
        self.worker = start_worker(
            partial(_relay, gen),
            on_yield=self._on_event,
            on_return=self._on_result,
            on_finish=self._on_finish,
        )

    def cancel(self, _value: Any = None) -> None:
        if self.worker is not None:
            self.status.value = "cancelling..."
            self._cancel_requested = True

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

    def _on_result(self, result: Any) -> None:
        if result.checkpoint_path is None:
            show_warning(result.message)
            self.status.value = result.message
            return
        self.new_model, self.new_checkpoint = result.model, result.checkpoint_path
        self.status.value = f"saved {Path(result.checkpoint_path).name} (best epoch {result.best_epoch})"
        show_info(result.message)
        self.out_edit.value = default_output_path(Path(result.checkpoint_path).stem.rsplit("-", 2)[0])
        self.segment_btn.enabled = True

    def _on_finish(self) -> None:
        self.worker = None
        self._busy(False)
        if self._cancel_requested:
            self.status.value = "cancelled: nothing was written or added"

    def _busy(self, busy: bool) -> None:
        self.run_btn.enabled = not busy
        self.segment_btn.enabled = not busy and self.new_model is not None
        self.cancel_btn.enabled = busy

    # ------------------------------------------------------------------ re-segmentation
    def segment_rest(self, _value: Any = None) -> None:
        """Segment the B-scans not learned from (or all) with the new model into a new Labels layer."""
        from ..inference import segment

        image, labels = self.image_combo.value, self.labels_combo.value
        if self.new_model is None or image is None or self.worker is not None:
            return
        try:
            volume = volume_from_layer(image)
        except OctsegError as exc:
            report_error(exc)
            return
        keep = bool(self.keep_check.value) and labels is not None and np.size(labels.data) == np.prod(volume.shape)
        rest = [i for i in range(volume.n_bscans) if not (keep and i in self.used_bscans)]
        if not rest:
            show_info("every B-scan was learned from; nothing left to segment")
            return
        sub = OctVolume(data=volume.data[rest], scale_um=volume.scale_um, reflectivity=volume.reflectivity)
        base = (
            np.array(labels.data, dtype=np.uint8, copy=True).reshape(volume.shape)
            if keep
            else np.zeros(volume.shape, np.uint8)
        )
        ref = labels if keep else image
        scale, translate, units, ndim = tuple(ref.scale), tuple(ref.translate), tuple(ref.units), ref.ndim
        kept = [i for i in range(volume.n_bscans) if i not in rest]
        self.status.value = f"segmenting {len(rest)} B-scan(s) with the new model..."
        self._busy(True)

        def on_progress(p: Any) -> None:
            self.progress.max, self.progress.value = max(1, p.total), p.done

        def on_done(result: Any) -> None:
            base[rest] = result.labels
            name = unique_layer_name(self.viewer, f"{image.name} labels (fine-tuned)")
            record = {"method": "blake2b-128 per B-scan", "bscan_hashes": bscan_hashes(base)}
            meta = {AUTO_LABELS_KEY: record, "octseg_model": str(self.new_checkpoint), "octseg_kept_bscans": kept}
            kwargs = labels_layer_kwargs(name, self.new_model.class_names, scale, meta)
            kwargs["translate"] = translate
            kwargs["units"] = units
            self.viewer.add_labels(base if ndim == 3 else base[0], **kwargs)
            self.status.value = f"added layer {name!r}"

        self._cancel_requested = False
        model, device = self.new_model, self.device_combo.value
        self.worker = start_worker(
            partial(_relay, segment(sub, model, device=device, cancel=lambda: self._cancel_requested)),
            on_yield=on_progress,
            on_return=on_done,
            on_finish=self._on_finish,
        )

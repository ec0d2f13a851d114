"""What the dock widgets that run a model on an image layer share (Segment layers, Explain).

:class:`ModelJobWidget` lays out, top to bottom: the image chooser (following the layer list), the
model chooser (bundled default or a checkpoint file, with a line saying what will be used, or that the
bundled model is missing), the subclass's own options, the device, an optional batch size, the run
button, a progress bar, Cancel and a status line, then the subclass's result widgets. It checks the
choices before starting (errors become one notification and start nothing), runs the subclass's job
in a worker thread and hands its result back on the GUI thread.

:func:`model_info_text` and :func:`checked_model_spec` are the model chooser's logic on its own, for
widgets that lay out their model rows differently.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import napari
from magicgui.widgets import ComboBox, Container, FileEdit, Label, ProgressBar, PushButton, SpinBox, Widget

from ..core.errors import CheckpointError, OctsegError
from ..core.progress import Progress
from ..models.device import DEVICE_CHOICES, select_device
from ..models.registry import bundled_path
from . import _common
from ._common import Image

DEFAULT_CHOICE = "bundled default"
FILE_CHOICE = "checkpoint file"


def model_info_text(choice: str, checkpoint: str | Path | None) -> str:
    """The line under the model chooser: which model will be used, or what to do."""
    if choice == DEFAULT_CHOICE:
        path = bundled_path()
        if path.is_file():
            return f"bundled model: {path.name}"
        return f"The bundled default model ({path.name}) is not installed.\nChoose 'checkpoint file' instead."
    path = Path(checkpoint) if checkpoint else None
    return f"model file: {path.name}" if path is not None and path.is_file() else "Choose a checkpoint (.pt) file."


def checked_model_spec(choice: str, checkpoint: str | Path | None) -> str | None:
    """``None`` for the bundled default, else the checkpoint path; raise CheckpointError if it is absent."""
    if choice == DEFAULT_CHOICE:
        if not bundled_path().is_file():
            raise CheckpointError(
                f"the bundled default model ({bundled_path().name}) is not installed; choose a checkpoint file"
            )
        return None
    spec = str(checkpoint)
    if not Path(spec).is_file():
        raise CheckpointError(f"{spec}: no such model file")
    return spec


class ModelJobWidget(Container):
    """Base of a dock widget that runs a model on an image layer in a worker thread.

    Subclasses set :attr:`run_text`, :attr:`action` and :attr:`busy`, create their own option and
    result widgets before calling ``super().__init__``, and implement :meth:`_job` and
    :meth:`_show_result`; they may override :meth:`_check_options`, :meth:`_progress_text`,
    :meth:`_offers_image` and :meth:`_layer_removed`.
    """

    #: Text of the run button.
    run_text = "Run"
    #: Verb of the "no image layer to ..." message.
    action = "process"
    #: Status while running: "<busy> <image>...".
    busy = "processing"

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        *,
        options: Sequence[Widget] = (),
        results: Sequence[Widget] = (),
        batch_size: int | None = None,
    ) -> None:
        self._viewer = viewer
        self.image = ComboBox(label="image", choices=self._image_choices)
        self.model_choice = ComboBox(label="model", choices=[DEFAULT_CHOICE, FILE_CHOICE], value=DEFAULT_CHOICE)
        self.checkpoint = FileEdit(label="checkpoint", mode="r", filter="*.pt", visible=False)
        self.model_info = Label(value="")
        self.device = ComboBox(label="device", choices=list(DEVICE_CHOICES), value="auto")
        self.batch_size = None if batch_size is None else SpinBox(label="batch size", value=batch_size, min=1, max=256)
        self.run_button = PushButton(text=self.run_text)
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        model_rows = [self.model_choice, self.checkpoint, self.model_info]
        run_rows = [self.device, *([self.batch_size] if self.batch_size is not None else [])]
        controls = [self.run_button, self.progress, self.cancel_button, self.status]
        super().__init__(widgets=[self.image, *model_rows, *options, *run_rows, *controls, *results])
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

    # -- what subclasses provide -----------------------------------------------------------------

    def _job(
        self, layer: Image, model_spec: str | None, cancel: Callable[[], bool]
    ) -> Callable[[], Generator[Any, None, Any]]:
        """A no-argument callable returning the progress generator to run (e.g. a ``partial``)."""
        raise NotImplementedError

    def _show_result(self, payload: Any) -> None:
        """Add the job's result to the viewer (GUI thread)."""
        raise NotImplementedError

    def _check_options(self) -> None:
        """Raise an OctsegError if the subclass's own options cannot run."""

    def _progress_text(self, event: Progress) -> str:
        return f"B-scan {event.done}/{event.total}"

    def _offers_image(self, layer: Image) -> bool:
        """Whether ``layer`` is offered in the image chooser."""
        return True

    def _layer_removed(self, layer: Any) -> None:
        """Forget ``layer`` if the widget holds on to it."""

    # -- choices and messages --------------------------------------------------------------------

    def _image_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Image) and self._offers_image(layer)
        ]

    def _refresh_images(self, _event: Any = None) -> None:
        self.image.reset_choices()

    def _on_layers_changed(self, event: Any) -> None:
        if event.type == "inserted":
            event.value.events.name.connect(self._refresh_images)
        else:
            self._layer_removed(event.value)
        self._refresh_images()

    def _model_spec(self) -> str | None:
        """``None`` for the bundled default, else the chosen checkpoint path."""
        if self.model_choice.value == DEFAULT_CHOICE:
            return None
        return str(self.checkpoint.value)

    def _update_model_info(self, _value: Any = None) -> None:
        self.checkpoint.visible = self.model_choice.value == FILE_CHOICE
        self.model_info.value = model_info_text(self.model_choice.value, self.checkpoint.value)

    # -- running ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._worker is not None

    def start(self, _value: Any = None) -> None:
        """Start the job on the chosen image layer (no-op while a run is in progress)."""
        if self.running:
            return
        layer = self.image.value
        try:
            if layer is None:
                raise OctsegError(f"no image layer to {self.action}: open an OCT volume first")
            self._check_options()
            spec = checked_model_spec(self.model_choice.value, self.checkpoint.value)
            select_device(self.device.value)
        except OctsegError as exc:
            # through the module, so a replaced _common.report_error (tests) sees it
            _common.report_error(exc)
            return
        self._cancel_requested = False
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        self.status.value = f"{self.busy} {layer.name}..."
        self._worker = _common.start_worker(
            self._job(layer, spec, self._cancel_is_requested),
            on_yield=self._on_progress,
            on_return=self._on_result,
            on_finish=self._on_finish,
        )

    def _cancel_is_requested(self) -> bool:
        return self._cancel_requested

    def cancel(self, _value: Any = None) -> None:
        """Ask the running job to stop at its next B-scan or batch (no layer is added)."""
        if self.running:
            self._cancel_requested = True
            self.status.value = "cancelling..."

    def _on_progress(self, event: Any) -> None:
        if isinstance(event, Progress):
            self.progress.max = max(event.total, 1)
            self.progress.value = event.done
            self.status.value = self._progress_text(event)

    def _on_result(self, payload: Any) -> None:
        if payload is None:  # the worker was aborted: nothing to add
            return
        self._show_result(payload)

    def _on_finish(self) -> None:
        self._worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False
        if self._cancel_requested:
            self.status.value = "cancelled: no layer added"

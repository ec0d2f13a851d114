"""What the dock widgets that run a model on an image layer share (Segment layers, Explain).

:class:`ModelJobWidget` lays out, top to bottom: the image chooser (following the layer list), the
model chooser (bundled default, the models of the user's model library by name, or a checkpoint file,
with a line saying what will be used, or that the bundled model is missing), the subclass's own
options, the device, an optional batch size, the run button, the job runner's progress bar, Cancel and
status line, then the subclass's result widgets. It checks the choices before starting (errors become
one notification and start nothing) and runs the subclass's job through the docks' one
:class:`~napari_octseg._napari._runner.JobRunner`.

:func:`model_info_text` and :func:`checked_model_spec` are the model chooser's logic on its own, for
widgets that lay out their model rows differently.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import napari
from magicgui.types import FileDialogMode
from magicgui.widgets import ComboBox, FileEdit, Label, PushButton, SpinBox, Widget
from psygnal import SignalInstance

from ..core.errors import CheckpointError, OctsegError
from ..core.progress import Progress
from ..models.device import DEVICE_CHOICES, select_device
from ..models.library import library_dir, library_models
from ..models.registry import bundled_path
from . import _common
from ._common import Image
from ._dock import ScrollDock
from ._runner import JobRunner

DEFAULT_CHOICE = "bundled default"
FILE_CHOICE = "checkpoint file"
#: Emitted when a model is added to the model library: every model chooser re-reads it.
library_changed = SignalInstance(name="library_changed")
#: Prefix of a library model in the model chooser ("library: <name>").
LIBRARY_PREFIX = "library: "


def model_choices() -> list[str]:
    """The model chooser's entries: the bundled default, each library model, a checkpoint file."""
    return [DEFAULT_CHOICE, *(LIBRARY_PREFIX + name for name in library_models()), FILE_CHOICE]


def _choices(_widget: Any = None) -> list[str]:
    """The model chooser's entries, re-read whenever its choices are reset."""
    return model_choices()


def model_info_text(choice: str, checkpoint: str | Path | None) -> str:
    """The line under the model chooser: which model will be used, or what to do."""
    if choice == DEFAULT_CHOICE:
        path = bundled_path()
        if path.is_file():
            return f"bundled model: {path.name}"
        return f"The bundled default model ({path.name}) is not installed.\nChoose 'checkpoint file' instead."
    if choice.startswith(LIBRARY_PREFIX):
        found = library_models().get(choice[len(LIBRARY_PREFIX) :])
        return f"library model: {found}" if found is not None else f"{choice}: no longer in {library_dir()}"
    chosen = Path(checkpoint) if checkpoint else None
    return (
        f"model file: {chosen.name}" if chosen is not None and chosen.is_file() else "Choose a checkpoint (.pt) file."
    )


def checked_model_spec(choice: str, checkpoint: str | Path | None) -> str | None:
    """``None`` for the bundled default, else the checkpoint path; raise CheckpointError if it is absent."""
    if choice == DEFAULT_CHOICE:
        if not bundled_path().is_file():
            raise CheckpointError(
                f"the bundled default model ({bundled_path().name}) is not installed; choose a checkpoint file"
            )
        return None
    if choice.startswith(LIBRARY_PREFIX):
        name = choice[len(LIBRARY_PREFIX) :]
        found = library_models().get(name)
        if found is None:
            raise CheckpointError(f"model {name!r} is no longer in the model library {library_dir()}")
        return str(found)
    spec = str(checkpoint)
    if not Path(spec).is_file():
        raise CheckpointError(f"{spec}: no such model file")
    return spec


class ModelChooser:
    """The model rows of a dock: which model (the bundled default, a library model by name, or a checkpoint
    file), the checkpoint file field (shown for "checkpoint file"), and a line saying what will be used.

    Add :attr:`widgets` to the dock's layout; :meth:`spec` is the checked choice. Every chooser re-reads the
    model library when :data:`library_changed` is emitted.
    """

    def __init__(self, label: str = "model", tooltip: str = "") -> None:
        self.choice = ComboBox(label=label, choices=_choices, value=DEFAULT_CHOICE, tooltip=tooltip)
        self.checkpoint = FileEdit(
            label="checkpoint",
            mode=FileDialogMode.EXISTING_FILE,
            filter="*.pt",
            visible=False,
            tooltip="a model checkpoint file (.pt)",
        )
        self.info = Label(label="", value=model_info_text(DEFAULT_CHOICE, None))
        self.info.native.setWordWrap(True)
        self.choice.changed.connect(self.update)
        self.checkpoint.changed.connect(self.update)
        library_changed.connect(self.refresh)

    @property
    def widgets(self) -> list[Widget]:
        """The chooser, the checkpoint file field and the info line, top to bottom."""
        return [self.choice, self.checkpoint, self.info]

    def update(self, _value: Any = None) -> None:
        """Show the file field for "checkpoint file" and say which model will be used."""
        self.checkpoint.visible = self.choice.value == FILE_CHOICE
        self.info.value = model_info_text(self.choice.value, self.path)

    def refresh(self) -> None:
        """Re-read the model library into the chooser (e.g. after fine-tuning saved a model)."""
        try:
            self.choice.reset_choices()
            self.update()
        except RuntimeError:  # the dock was closed and its Qt widgets deleted: stop listening
            library_changed.disconnect(self.refresh)

    def spec(self) -> str | None:
        """``None`` for the bundled default, else the checkpoint path; CheckpointError if it is absent."""
        return checked_model_spec(self.choice.value, self.path)

    @property
    def path(self) -> Path | None:
        """The checkpoint file chosen in the file field (``None`` when empty)."""
        value = self.checkpoint.value
        return value if isinstance(value, Path) else None


class ModelJobWidget(ScrollDock):
    """Base of a dock widget that runs a model on an image layer in a worker thread.

    Subclasses set :attr:`run_text`, :attr:`action` and :attr:`busy`, create their own option and
    result widgets before calling ``super().__init__``, and implement :meth:`_job` and
    :meth:`_show_result` (which returns the status line); they may override :meth:`_check_options`,
    :meth:`_progress_text`, :meth:`_offers_image` and :meth:`_layer_removed`.
    """

    #: Text of the run button.
    run_text = "Run"
    #: Tooltip of the run button.
    run_tooltip = "run on the chosen image in the background (Cancel stops it)"
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
        self.image = ComboBox(label="image", choices=self._image_choices, tooltip="the OCT image layer to use")
        self.models = ModelChooser(
            tooltip="the bundled model, a model you fine-tuned (model library), or a checkpoint (.pt) file"
        )
        self.model_choice, self.checkpoint, self.model_info = (
            self.models.choice,
            self.models.checkpoint,
            self.models.info,
        )
        self.device = ComboBox(
            label="device",
            choices=list(DEVICE_CHOICES),
            value="auto",
            tooltip="auto = CUDA GPU, then Apple MPS, then CPU",
        )
        self.batch_size = (
            None
            if batch_size is None
            else SpinBox(
                label="batch size",
                value=batch_size,
                min=1,
                max=256,
                tooltip="B-scans per forward pass: larger is faster on a GPU and needs more memory",
            )
        )
        self.run_button = PushButton(text=self.run_text, tooltip=self.run_tooltip)
        self.runner = JobRunner(run_buttons=[self.run_button], cancel_text="cancelled: no layer added")
        self.progress, self.cancel_button, self.status = (
            self.runner.progress,
            self.runner.cancel_button,
            self.runner.status,
        )
        model_rows = self.models.widgets
        run_rows = [self.device, *([self.batch_size] if self.batch_size is not None else [])]
        controls = [self.run_button, *self.runner.widgets()]
        super().__init__(widgets=[self.image, *model_rows, *options, *run_rows, *controls, *results])
        self.run_button.changed.connect(self.start)
        viewer.layers.events.inserted.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layers_changed)
        for layer in viewer.layers:
            layer.events.name.connect(self._refresh_images)
        self.compact()

    # -- what subclasses provide -----------------------------------------------------------------

    def _job(
        self, layer: Image, model_spec: str | None, cancel: Callable[[], bool]
    ) -> Callable[[], Generator[Any, None, Any]]:
        """A no-argument callable returning the progress generator to run (e.g. a ``partial``)."""
        raise NotImplementedError

    def _show_result(self, payload: Any) -> str | None:
        """Add the job's result to the viewer (GUI thread); return the status line."""
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

    # -- running ---------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.runner.running

    @property
    def _worker(self) -> Any:
        return self.runner.worker

    def start(self, _value: Any = None) -> None:
        """Start the job on the chosen image layer (no-op while a run is in progress)."""
        if self.running:
            return
        layer = self.image.value
        try:
            if layer is None:
                raise OctsegError(f"no image layer to {self.action}: open an OCT volume first")
            self._check_options()
            spec = self.models.spec()
            select_device(self.device.value)
        except OctsegError as exc:
            # through the module, so a replaced _common.report_error (tests) sees it
            _common.report_error(exc)
            return
        self.runner.start(
            self._job(layer, spec, self.runner.cancel_requested),
            busy=f"{self.busy} {layer.name}...",
            on_return=self._on_result,
            progress_text=self._progress_text,
        )

    def cancel(self, _value: Any = None) -> None:
        """Ask the running job to stop at its next B-scan or batch (no layer is added)."""
        self.runner.cancel()

    def _on_result(self, payload: Any) -> str | None:
        return self._show_result(payload)

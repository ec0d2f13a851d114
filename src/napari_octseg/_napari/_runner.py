"""The one job runner of the docks: a progress generator in a worker thread, a progress bar, Cancel, a status line.

Every dock (Segment, Explain, Fine-tune, Thickness) hands its long work to a :class:`JobRunner`:

* the work is a core progress generator (``segment``, ``gradcam``, ``finetune``, ``analyse``...) or a
  no-argument callable returning one; it runs in a napari ``thread_worker``;
* :class:`~napari_octseg.core.progress.Progress` events move the progress bar and the status line; other
  events (e.g. training epochs) go to the dock's ``on_yield``;
* Cancel sets a flag that the job sees through :meth:`JobRunner.cancel_requested` (pass it as the core
  function's ``cancel=``); the runner also stops any job at its next yield, so work without a ``cancel``
  argument stops too. Either way :class:`~napari_octseg.core.errors.Cancelled` ends the job and nothing is
  handed back;
* when the job ends the status line says what happened (the dock's own words on success, ``cancelled:
  nothing was changed`` or ``failed: <reason>`` otherwise), the progress bar shows 100 % after a success
  and resets to 0 % otherwise, the buttons come back, and an error is shown as exactly one notification.

The status line wraps within the dock's width and never widens the dock (a dock is about 330 px wide on a
1366 x 768 screen, and a wider status line hid the Cancel button behind a sideways scroll); its full text is
also its tooltip, for a word longer than the dock is wide (a file path).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

from magicgui.widgets import Container, Label, ProgressBar, PushButton, Widget
from qtpy.QtWidgets import QSizePolicy

from ..core.errors import Cancelled
from ..core.progress import Progress, cancellable
from . import _common

Job = Generator[Any, Any, Any] | Callable[[], Generator[Any, Any, Any]]

CANCELLED_TEXT = "cancelled: nothing was changed"


def _progress_text(event: Progress) -> str:
    stage = f"{event.stage}: " if event.stage else ""
    return f"{stage}{event.done}/{event.total}"


class StatusLabel(Label):
    """A word-wrapped status line that takes the width it is given and repeats its text in its tooltip.

    magicgui's ``Label`` has a fixed horizontal size policy, so a wrapped label asks for (and gets) the
    width of its preferred, golden-ratio shaped text block: about 330 px for a two-line status, wider than a
    dock on a small screen. Here the width is ignored (the label wraps to whatever the row gives it) and the
    height follows the wrapped text.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.native.setWordWrap(True)
        policy = QSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        policy.setHeightForWidth(True)
        self.native.setSizePolicy(policy)

    @property
    def value(self) -> str:
        """The status text."""
        return str(self.native.text())

    @value.setter
    def value(self, text: str) -> None:
        self.native.setText(str(text))
        self.native.setToolTip(str(text))


class JobRunner:
    """Runs one job at a time for a dock and owns its progress bar, Cancel button and status line.

    Parameters
    ----------
    run_buttons
        Buttons disabled while a job runs (the dock's "run" buttons).
    cancel_text
        Status after a cancelled job.
    """

    def __init__(self, run_buttons: Sequence[PushButton] = (), cancel_text: str = CANCELLED_TEXT) -> None:
        self.progress = ProgressBar(label="progress", min=0, max=1, value=0, tooltip="progress of the running job")
        self.cancel_button = PushButton(
            text="Cancel", enabled=False, tooltip="stop the running job at its next step; nothing is added or written"
        )
        self.status = StatusLabel(label="status", value="")
        self.run_buttons: list[PushButton] = list(run_buttons)
        self.cancel_text = cancel_text
        self.worker: Any = None
        self._cancel = False
        self._on_return: Callable[[Any], str | None] | None = None
        self._on_yield: Callable[[Any], None] | None = None
        self._on_finish: Callable[[], None] | None = None
        self._progress_text: Callable[[Progress], str] = _progress_text
        self._outcome = ""
        self._succeeded = False
        self.cancel_button.changed.connect(self.cancel)

    def widgets(self) -> list[Widget]:
        """Progress bar, Cancel and status line, to lay out in a dock (Cancel beside the bar)."""
        parts: list[Widget] = [self.progress, self.cancel_button]
        row = Container(widgets=parts, layout="horizontal", labels=False)
        row.margins = (0, 0, 0, 0)
        return [row, self.status]

    @property
    def running(self) -> bool:
        """Whether a job is in progress."""
        return self.worker is not None

    def cancel_requested(self) -> bool:
        """The ``cancel=`` callable of the running job: ``True`` once Cancel was pressed."""
        return self._cancel

    def start(
        self,
        job: Job,
        *,
        busy: str,
        on_return: Callable[[Any], str | None],
        on_yield: Callable[[Any], None] | None = None,
        progress_text: Callable[[Progress], str] | None = None,
        on_finish: Callable[[], None] | None = None,
    ) -> bool:
        """Run ``job`` in a worker thread; ``False`` (and nothing started) while another job runs.

        Parameters
        ----------
        job
            A progress generator, or a no-argument callable returning one (called in the worker thread).
        busy
            Status while the job starts, e.g. ``"segmenting scan..."``.
        on_return
            Called on the GUI thread with the job's return value; returns the status to show (or ``None``
            for ``"done"``). An exception it raises is reported like one of the job's.
        on_yield
            Called on the GUI thread with every event the job yields (after the runner's own handling).
        progress_text
            Status text of a :class:`Progress` event (default ``"<stage>: done/total"``).
        on_finish
            Called on the GUI thread after every end (success, error or cancel), once the runner is idle.
        """
        from napari.qt.threading import create_worker

        if self.running:
            return False
        self._cancel = False
        self._on_return, self._on_yield, self._on_finish = on_return, on_yield, on_finish
        self._progress_text = progress_text or _progress_text
        self._outcome = ""
        self._succeeded = False
        self.progress.max, self.progress.value = 1, 0
        self.status.value = busy
        for button in self.run_buttons:
            button.enabled = False
        self.cancel_button.enabled = True

        def work() -> Generator[Any, Any, Any]:
            gen = job() if callable(job) else job
            return (yield from cancellable(gen, self.cancel_requested, "cancelled"))

        self.worker = create_worker(work, _start_thread=False, _ignore_errors=True)
        self.worker.yielded.connect(self._yielded)
        self.worker.returned.connect(self._returned)
        self.worker.errored.connect(self._errored)
        self.worker.finished.connect(self._finished)
        self.worker.start()
        return True

    def cancel(self, _value: Any = None) -> None:
        """Ask the running job to stop at its next step."""
        if self.running and not self._cancel:
            self._cancel = True
            self.status.value = "cancelling..."

    # -- worker signals (GUI thread) ---------------------------------------------------------------

    def _yielded(self, event: Any) -> None:
        if isinstance(event, Progress):
            self.progress.max = max(event.total, 1)
            self.progress.value = min(event.done, self.progress.max)
            if not self._cancel:
                self.status.value = self._progress_text(event)
        if self._on_yield is not None:
            self._on_yield(event)

    def _returned(self, value: Any) -> None:
        if self._cancel and value is None:
            return
        try:
            text = self._on_return(value) if self._on_return is not None else None
        except Exception as exc:  # adding the result failed: one notification, the status says so
            self._errored(exc)
            return
        self._outcome = text or "done"
        self._succeeded = True

    def _errored(self, exc: BaseException) -> None:
        self._succeeded = False
        _common.report_error(exc)  # through the module, so a replaced report_error (tests) sees it
        if isinstance(exc, Cancelled) or self._cancel:
            self._outcome = self.cancel_text
        else:
            self._outcome = f"failed: {exc}"

    def _finished(self) -> None:
        self.worker = None
        # a finished job shows a full bar; a cancelled or failed one an empty bar (the status says which)
        self.progress.max, self.progress.value = 1, int(self._succeeded)
        self.status.value = self._outcome or (self.cancel_text if self._cancel else "stopped")
        for button in self.run_buttons:
            button.enabled = True
        self.cancel_button.enabled = False
        if self._on_finish is not None:
            self._on_finish()

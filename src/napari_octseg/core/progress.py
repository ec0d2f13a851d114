"""Progress events for long work, and the helper that drains a progress generator.

Long work (segmentation, Grad-CAM, training) is a generator that yields :class:`Progress` (or a richer
event) and *returns* its result; the napari widgets run it in a ``thread_worker``, scripts and the CLI
drain it with :func:`run_generator`.

Cancelling follows one protocol everywhere: long work takes ``cancel=`` (a :data:`CancelCheck`, a callable
returning ``True`` once the user asked to stop), polls it between units of work with :func:`check_cancel`
and raises :class:`~napari_octseg.core.errors.Cancelled`, so that nothing half-done is returned. The docks
pass their Cancel button's state, a thread passes ``event.is_set``; the CLI stops on Ctrl-C
(``KeyboardInterrupt``) instead.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from .errors import Cancelled

R = TypeVar("R")
Y = TypeVar("Y")

#: ``cancel=`` of every long-running function: returns ``True`` once the work should stop.
CancelCheck = Callable[[], bool]


def check_cancel(cancel: CancelCheck | None, message: str) -> None:
    """Raise :class:`Cancelled` with ``message`` when ``cancel`` is given and returns ``True``."""
    if cancel is not None and cancel():
        raise Cancelled(message)


@dataclass
class Progress:
    """``done`` out of ``total`` units (B-scans, steps...) of the work named ``stage``."""

    done: int
    total: int
    stage: str = ""
    info: dict[str, Any] | None = None


def cancellable(gen: Generator[Y, Any, R], cancel: CancelCheck | None, message: str) -> Generator[Y, None, R]:
    """``gen``'s events and result, stopped with :class:`Cancelled` before its next step once ``cancel()`` is True.

    For work whose own steps do not poll ``cancel`` (or poll it rarely): the check runs before the first step and
    after every event, and ``gen`` is closed (its ``finally`` blocks run) when it is stopped.
    """
    result: list[R] = []

    def relay() -> Generator[Y, Any, None]:
        result.append((yield from gen))

    steps = relay()
    try:
        check_cancel(cancel, message)
        for event in steps:
            yield event
            check_cancel(cancel, message)
    finally:
        steps.close()
    return result[0]


def run_generator(
    gen: Generator[Any, Any, R],
    on_event: Callable[[Any], None] | None = None,
) -> R:
    """Drain a progress generator and return its ``return`` value.

    Parameters
    ----------
    gen
        A generator yielding progress events and returning a result.
    on_event
        Called with every yielded event (e.g. to advance a tqdm bar).
    """
    result: list[R] = []

    def relay() -> Generator[Any, Any, None]:
        result.append((yield from gen))

    for event in relay():
        if on_event is not None:
            on_event(event)
    return result[0]


def tqdm_drain(gen: Generator[Any, Any, R], desc: str, unit: str = "B-scan", disable: bool = False) -> R:
    """Drain ``gen`` showing a terminal progress bar driven by its :class:`Progress` events."""
    from tqdm import tqdm

    bar = tqdm(desc=desc, unit=unit, disable=disable, leave=False)

    def update(event: Any) -> None:
        if isinstance(event, Progress):
            bar.total = event.total
            bar.n = event.done
            bar.set_postfix_str(event.stage, refresh=False)
            bar.refresh()

    try:
        return run_generator(gen, update)
    finally:
        bar.close()

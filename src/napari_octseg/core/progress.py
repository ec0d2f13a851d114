"""Progress events for long work, and the helper that drains a progress generator.

Long work (segmentation, Grad-CAM, training) is a generator that yields :class:`Progress` (or a richer
event) and *returns* its result; the napari widgets run it in a ``thread_worker``, scripts and the CLI
drain it with :func:`run_generator`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

R = TypeVar("R")


@dataclass
class Progress:
    """``done`` out of ``total`` units (B-scans, steps...) of the work named ``stage``."""

    done: int
    total: int
    stage: str = ""
    info: dict[str, Any] | None = None


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

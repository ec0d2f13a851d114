"""core.progress: draining a progress generator and the one cancel protocol (``cancel=`` -> ``Cancelled``)."""

from __future__ import annotations

import threading
from collections.abc import Generator

import numpy as np
import pytest

from napari_octseg.core.errors import Cancelled
from napari_octseg.core.progress import Progress, cancellable, check_cancel, run_generator
from napari_octseg.core.thickness import analyse


def counting(n: int, log: list[str]) -> Generator[Progress, None, str]:
    try:
        for i in range(n):
            log.append(f"step {i}")
            yield Progress(i + 1, n)
        return "result"
    finally:
        log.append("closed")


def test_run_generator_returns_the_result_and_passes_every_event():
    log: list[str] = []
    seen: list[int] = []
    assert run_generator(counting(3, log), lambda e: seen.append(e.done)) == "result"
    assert seen == [1, 2, 3] and log == ["step 0", "step 1", "step 2", "closed"]


def test_check_cancel():
    check_cancel(None, "never")
    check_cancel(lambda: False, "not yet")
    with pytest.raises(Cancelled, match="stop now"):
        check_cancel(lambda: True, "stop now")


def test_cancellable_passes_events_and_result_when_not_cancelled():
    log: list[str] = []
    assert run_generator(cancellable(counting(3, log), lambda: False, "x")) == "result"
    assert run_generator(cancellable(counting(2, []), None, "x")) == "result"
    assert log[-1] == "closed"


def test_cancellable_stops_before_the_next_step_and_closes_the_work():
    log: list[str] = []
    stop = threading.Event()
    gen = cancellable(counting(5, log), stop.is_set, "counting cancelled")
    assert next(gen).done == 1
    stop.set()
    with pytest.raises(Cancelled, match="counting cancelled"):
        next(gen)
    assert log == ["step 0", "closed"]  # step 1 never ran; the work's finally did
    untouched: list[str] = []
    with pytest.raises(Cancelled):  # cancelled before the first step: nothing runs
        run_generator(cancellable(counting(5, untouched), lambda: True, "x"))
    assert "step 0" not in untouched


def test_thickness_analysis_follows_the_protocol():
    labels = np.zeros((4, 20, 8), np.uint8)
    labels[:, 5:15] = 3
    calls: list[int] = []

    def cancel() -> bool:
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Cancelled, match="thickness cancelled"):
        run_generator(analyse(labels, (100.0, 4.0, 10.0), "OD", "volume", cancel=cancel))
    report = run_generator(analyse(labels, (100.0, 4.0, 10.0), "OD", "volume", cancel=lambda: False))
    assert report.thickness.shape == (4, 8)

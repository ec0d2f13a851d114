"""What the four docks share: the job runner, scrolling on small screens, tooltips, legend, axis names, defaults."""

from __future__ import annotations

import itertools
import shutil
import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from magicgui.widgets import Container, Label, ProgressBar  # noqa: E402
from magicgui.widgets.bases import ButtonWidget, ValueWidget  # noqa: E402
from qtpy.QtWidgets import QScrollArea  # noqa: E402

from napari_octseg._napari import segment_widget as sw  # noqa: E402
from napari_octseg._napari._common import AXIS_LABELS, image_layer_kwargs, labels_layer_kwargs  # noqa: E402
from napari_octseg._napari._legend import legend_entries  # noqa: E402
from napari_octseg._napari._runner import CANCELLED_TEXT, JobRunner  # noqa: E402
from napari_octseg._napari.explain_widget import ExplainWidget  # noqa: E402
from napari_octseg._napari.finetune_widget import FinetuneWidget  # noqa: E402
from napari_octseg._napari.thickness_widget import ThicknessWidget  # noqa: E402
from napari_octseg.core.classes import CLASS_COLORS, CLASS_NAMES, FLUID_CLASS, LAYER_CLASSES  # noqa: E402
from napari_octseg.core.errors import InputError  # noqa: E402
from napari_octseg.core.progress import Progress  # noqa: E402
from napari_octseg.core.volume import OctVolume  # noqa: E402
from napari_octseg.inference import SegmentationResult  # noqa: E402

DOCKS = (sw.SegmentWidget, ExplainWidget, FinetuneWidget, ThicknessWidget)


@pytest.fixture
def library(tmp_path, monkeypatch):
    folder = tmp_path / "library"
    monkeypatch.setenv("OCTSEG_MODEL_DIR", str(folder))
    return folder


# -- the job runner ------------------------------------------------------------------------------


def _steps(n: int, fail: Exception | None = None, delay: float = 0.0):
    for k in range(n):
        time.sleep(delay)
        yield Progress(k + 1, n, "step")
    if fail is not None:
        raise fail
    return "result"


def _wait(qtbot, runner: JobRunner) -> None:
    qtbot.waitUntil(lambda: not runner.running, timeout=20_000)


def test_runner_success_error_and_cancel_leave_a_true_status(qtbot, errors):
    from magicgui.widgets import PushButton

    run = PushButton(text="run")
    runner = JobRunner(run_buttons=[run])
    got: list = []
    assert runner.start(_steps(3), busy="working...", on_return=lambda r: got.append(r) or "all done")
    assert runner.running and not run.enabled and runner.cancel_button.enabled
    assert not runner.start(_steps(1), busy="again", on_return=got.append)  # one job at a time
    _wait(qtbot, runner)
    assert got == ["result"] and runner.status.value == "all done" and errors == []
    assert runner.progress.value == runner.progress.max == 1 and run.enabled and not runner.cancel_button.enabled

    runner.start(_steps(3, fail=InputError("bad input")), busy="working...", on_return=got.append)
    _wait(qtbot, runner)
    assert [str(e) for e in errors] == ["bad input"]  # one notification
    assert runner.status.value == "failed: bad input" and runner.progress.value == 0 and run.enabled

    errors.clear()
    runner.start(lambda: _steps(1000, delay=0.01), busy="long...", on_return=got.append)
    qtbot.waitUntil(lambda: runner.progress.value >= 2, timeout=10_000)
    runner.cancel()
    _wait(qtbot, runner)
    assert [type(e).__name__ for e in errors] == ["Cancelled"] and got == ["result"]
    assert runner.status.value == CANCELLED_TEXT and runner.progress.value == 0 and run.enabled


def test_runner_reports_a_failure_to_show_the_result(qtbot, errors):
    runner = JobRunner()

    def broken(_result):
        raise ValueError("cannot add layer")

    runner.start(_steps(2), busy="working...", on_return=broken)
    _wait(qtbot, runner)
    assert len(errors) == 1 and runner.status.value == "failed: cannot add layer"


# -- small screens -------------------------------------------------------------------------------


def test_every_dock_scrolls_and_asks_for_little_height(make_napari_viewer, library):
    viewer = make_napari_viewer()
    for cls in DOCKS:
        widget = cls(viewer)
        assert isinstance(widget.native, QScrollArea)
        content = widget.content().sizeHint().height()
        dock = viewer.window.add_dock_widget(widget, name=cls.__name__)
        assert dock.widget() is widget.native  # napari docks the scroll area, not its content
        assert widget.native.minimumSizeHint().height() <= 400
        assert dock.minimumSizeHint().height() <= 400, (cls.__name__, content)
    # the Fine-tune dock holds far more than 400 px of controls: they scroll instead of pushing napari
    assert FinetuneWidget(viewer).content().sizeHint().height() > 400


@pytest.mark.parametrize("size", [(1366, 768), (1920, 1080)])
def test_every_dock_fits_its_column_without_sideways_scrolling(make_napari_viewer, library, qtbot, size):
    """A long status line wraps within the dock: no horizontal scroll bar, Cancel and Run stay in view."""
    viewer = make_napari_viewer(show=True)
    widgets = [cls(viewer) for cls in DOCKS]
    for widget in widgets:
        viewer.window.add_dock_widget(widget, name=type(widget).__name__)
    viewer.window.resize(*size)
    long_path = "/data/" + "very_long_folder_name/" * 6 + "Subject_07.npz"
    for widget in widgets:
        widget.runner.status.value = f"failed: segmenting Subject_07.npz, B-scan 12/49 on cpu: cannot read {long_path}"
    qtbot.wait(300)
    for widget in widgets:
        name = type(widget).__name__
        scroll = widget.native
        if not scroll.isVisible():  # a tab behind another: bring it to the front
            scroll.parentWidget().raise_()
            qtbot.waitUntil(scroll.isVisible, timeout=5_000)
        qtbot.wait(100)
        width = scroll.viewport().width()
        assert width < 600, (name, width)  # a dock column, not half the screen
        assert widget.content().minimumSizeHint().width() <= width, name
        assert scroll.horizontalScrollBar().maximum() == 0, name
        status = widget.runner.status
        assert status.native.toolTip() == status.value  # the full text (the path) is one hover away
        # the wrapped status gets the height its lines need at the width it has
        assert status.native.height() >= status.native.heightForWidth(status.native.width()) > 0, name
        for button in [widget.runner.cancel_button.native, *(b.native for b in widget.runner.run_buttons)]:
            right = button.mapTo(widget.content(), button.rect().topRight()).x()
            assert right <= width, (name, button.text(), right, width)


def _controls(container: Container):
    for child in container:
        if isinstance(child, Container):
            yield from _controls(child)
        elif isinstance(child, (ValueWidget, ButtonWidget)) and not isinstance(child, (Label, ProgressBar)):
            yield child


def test_every_control_has_a_tooltip(make_napari_viewer, library):
    viewer = make_napari_viewer()
    for cls in DOCKS:
        widget = cls(viewer)
        missing = [c.label or getattr(c, "text", "") or type(c).__name__ for c in _controls(widget) if not c.tooltip]
        assert missing == [], cls.__name__


# -- Segment dock: legend, colours, units, axis names ----------------------------------------------


def test_legend_names_and_colours_match_the_labels_colormap(make_napari_viewer, library):
    widget = sw.SegmentWidget(make_napari_viewer())
    assert [name for _, name, _ in widget.legend.entries] == [CLASS_NAMES[c] for c in (*LAYER_CLASSES, FLUID_CLASS)]
    assert all(colour in widget.legend.native.text() for _, _, colour in legend_entries())
    rgb = {c: np.array(CLASS_COLORS[c][:3]) for c in (*LAYER_CLASSES, FLUID_CLASS)}
    assert np.linalg.norm(rgb[6] - rgb[FLUID_CLASS]) >= 0.7  # EZ+OS never reads as fluid (it was 0.42 apart)
    assert min(np.linalg.norm(rgb[a] - rgb[b]) for a, b in itertools.combinations(rgb, 2)) >= 0.35


def _result(shape) -> SegmentationResult:
    labels = np.zeros(shape, np.uint8)
    return SegmentationResult(labels, None, "cpu", 0.1, 1, CLASS_NAMES)


class _Loaded:
    source = "<test>"


def test_labels_of_a_unitless_image_carry_no_um(make_napari_viewer, library):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((2, 8, 9), np.float32), name="plain")
    widget = sw.SegmentWidget(viewer)
    layer = widget.add_labels_layer(image, _Loaded(), _result((2, 8, 9)))
    assert tuple(str(u) for u in layer.units) == tuple(str(u) for u in image.units)
    assert "µm" not in str(layer.units[0])


def test_oct_layers_name_their_axes(make_napari_viewer):
    viewer = make_napari_viewer()
    vol = OctVolume(np.zeros((3, 8, 9), np.float32), scale_um=(100.0, 3.9, 10.0))
    viewer.add_image(vol.data, **image_layer_kwargs(vol, "scan"))
    viewer.add_labels(np.zeros((3, 8, 9), np.uint8), **labels_layer_kwargs("labels", scale=vol.scale_um))
    assert tuple(viewer.dims.axis_labels) == AXIS_LABELS


# -- Fine-tune dock: default labels, model library --------------------------------------------------


def test_finetune_defaults_to_the_segmented_layer(make_napari_viewer, library):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 8, 9), np.float32), name="Subject_07.npz")
    other = viewer.add_image(np.zeros((2, 8, 9), np.float32), name="other")
    truth = viewer.add_labels(np.zeros((2, 8, 9), np.uint8), name="ground truth")
    widget = FinetuneWidget(viewer)
    assert widget.labels_combo.value is truth  # nothing segmented yet
    widget.image_combo.value = other
    made = sw.SegmentWidget(viewer).add_labels_layer(viewer.layers["Subject_07.npz"], _Loaded(), _result((2, 8, 9)))
    assert widget.labels_combo.value is made and widget.image_combo.value.name == "Subject_07.npz"
    viewer.add_labels(np.zeros((2, 8, 9), np.uint8), name="another ground truth")
    assert widget.labels_combo.value is made  # a later user layer does not take its place
    assert widget.name_edit.value.startswith("Subject_07-")  # default model name: image + date
    assert widget.library_label.value == str(library)


def test_library_models_are_offered_and_found_by_name(make_napari_viewer, library, tiny_checkpoint):
    from napari_octseg._napari._model_panel import LIBRARY_PREFIX, checked_model_spec, library_changed
    from napari_octseg.models.registry import load_model, resolve_model_path

    widget = sw.SegmentWidget(make_napari_viewer())
    assert widget.model_choice.choices == (sw.DEFAULT_CHOICE, sw.FILE_CHOICE)
    library.mkdir()
    shutil.copy(tiny_checkpoint, library / "my-model.pt")
    library_changed.emit()  # what Fine-tune does after saving
    assert LIBRARY_PREFIX + "my-model" in widget.model_choice.choices
    widget.model_choice.value = LIBRARY_PREFIX + "my-model"
    assert checked_model_spec(widget.model_choice.value, None) == str(library / "my-model.pt")
    assert resolve_model_path("my-model") == library / "my-model.pt"
    assert load_model("my-model").source == str(library / "my-model.pt")

"""Small, self-contained quality widgets the docks embed.

* :class:`QualityPanel` (Segment dock): a bar plot of the quality of every B-scan (flagged ones in red,
  the flag threshold dashed; click a bar to go there), a list of the flagged / worst B-scans with their
  reasons and a "Go to" button, and a warning notification when the whole volume looks out of distribution.
* :class:`CorrectionSuggestions` (Fine-tune dock): proposes the B-scans to correct first
  (:func:`napari_octseg.quality.correction_candidates`) from the quality a Labels layer records, and
  steps the viewer through them.

Both read the per-B-scan quality from ``layer.metadata[QUALITY_KEY]`` (the sidecar's ``quality`` record)
and move the viewer with :func:`go_to_bscan`; neither computes anything itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton, SpinBox, Widget
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from napari.utils.notifications import show_warning
from qtpy.QtWidgets import QComboBox, QSizePolicy

from ..quality.score import correction_candidates, flag_wording

#: Metadata key of a Labels layer under which its segmentation's quality record is kept.
QUALITY_KEY = "octseg_quality"
#: How many B-scans the quality list shows at most (flagged first, then the lowest).
LIST_LENGTH = 12


def go_to_bscan(viewer: Any, layer: Any, index: int) -> None:
    """Show B-scan ``index`` of ``layer`` (a 3-D layer; axis 0 is the B-scan) in ``viewer``."""
    if layer is None or layer.ndim < 3:
        return
    world = float(layer.translate[0]) + float(layer.scale[0]) * int(index)
    point = list(viewer.dims.point)
    axis = len(point) - layer.ndim
    point[axis] = world
    viewer.dims.point = tuple(point)


def quality_record(layer: Any) -> dict | None:
    """The quality record kept in a layer's metadata (``score``, ``reasons``, ``flag_below``...), or ``None``."""
    record = getattr(layer, "metadata", {}).get(QUALITY_KEY) if layer is not None else None
    return record if isinstance(record, dict) and isinstance(record.get("score"), list) else None


class _QualityPlot(FigureCanvasQTAgg):
    """Quality per B-scan as bars; clicking a bar calls ``on_pick(index)``."""

    def __init__(self, on_pick: Callable[[int], None], height_px: int = 110) -> None:
        self.figure = Figure(figsize=(3.2, 1.2), dpi=90, layout="constrained")
        super().__init__(self.figure)
        # a fixed height and a width that follows the dock: the layout always reserves exactly the plot's
        # height, so the rows below it never slide under it, and the plot never widens the dock
        self.setFixedHeight(height_px)
        self.setMinimumWidth(160)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.ax = self.figure.add_subplot(111)
        self._on_pick = on_pick
        self._n = 0
        self.mpl_connect("button_press_event", self._clicked)
        self.show_scores([], 0.5)

    def show_scores(self, scores: list[float], flag_below: float) -> None:
        self.ax.clear()
        self._n = len(scores)
        if scores:
            colors = ["#d62728" if s < flag_below else "#7f9fbf" for s in scores]
            # a sliver for quality 0, so a flagged B-scan never disappears from the plot
            heights = [max(score, 0.03) for score in scores]
            self.ax.bar(np.arange(len(scores)), heights, width=0.9, color=colors)
            self.ax.axhline(flag_below, color="#444444", lw=0.8, ls="--")
            self.ax.set_xlim(-0.6, len(scores) - 0.4)
            # B-scan numbers are whole: no fractional ticks (one B-scan showed -0.6 ... 0.6)
            self.ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        self.ax.set_ylim(0, 1)
        self.ax.set_xlabel("B-scan", fontsize=7)
        self.ax.set_ylabel("quality", fontsize=7)
        self.ax.tick_params(labelsize=6)
        self.draw_idle()

    def _clicked(self, event: Any) -> None:
        if event.inaxes is self.ax and event.xdata is not None and self._n:
            self._on_pick(int(np.clip(round(event.xdata), 0, self._n - 1)))


class QualityPanel(Container):
    """Per-B-scan quality of the last segmentation: plot, list with reasons, "Go to"."""

    def __init__(self, viewer: Any) -> None:
        self._viewer = viewer
        self._layer: Any = None
        self.summary = Label(value="quality: segment a volume to see it")
        # One line that never wraps: a wrapped label's height depends on its width, which the dock's scroll
        # area does not account for (the panel got less height than it needs and the plot slid over the
        # "Go to" row). It takes the width it is given (never widening the dock); the tooltip has it all.
        self.summary.native.setWordWrap(False)
        self.summary.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.choice = ComboBox(label="B-scan", choices=[], tooltip="the lowest-quality B-scans, worst first")
        # long reasons must not widen the dock: the box keeps a modest width and elides, the full text is
        # in its drop-down list and tooltip
        combo = self.choice.native
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(14)
        combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.go_button = PushButton(text="Go to", tooltip="show the chosen B-scan in the viewer")
        row = Container(widgets=[self.choice, self.go_button], layout="horizontal", labels=False)
        row.native.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Fixed)
        super().__init__(widgets=[self.summary, row], labels=False)
        self.plot = _QualityPlot(self.go_to)
        self.native.layout().insertWidget(1, self.plot)
        self.go_button.changed.connect(self._go_to_choice)
        self.choice.changed.connect(self._show_choice_tooltip)

    def show_quality(self, record: dict, layer: Any, *, notify: bool = True) -> None:
        """Show ``record`` (a QualityReport summary) of the segmentation shown by ``layer``."""
        self._layer = layer
        scores = [float(s) for s in record.get("score", [])]
        reasons = record.get("reasons") or [[] for _ in scores]
        flag_below = float(record.get("flag_below", 0.5))
        flagged = [i for i, s in enumerate(scores) if s < flag_below]
        self.plot.show_scores(scores, flag_below)
        order = flagged + [i for i in np.argsort(scores, kind="stable").tolist() if i not in flagged]
        choices = []
        for i in order[:LIST_LENGTH]:
            why = ", ".join(reasons[i]) if i < len(reasons) and reasons[i] else "nothing unusual"
            choices.append((f"{i}: {scores[i]:.2f} {why}", i))
        self.choice.choices = choices
        n = len(scores)
        ok = f"all {n} B-scan(s) ok"
        self.summary.value = f"flagged: {len(flagged)} of {n} (quality < {flag_below:g})" if flagged else ok
        self.summary.tooltip = f"{len(flagged)} of {n} B-scan(s) have a quality below {flag_below:g}"
        self.summary.native.setWordWrap(False)  # the dock's compact() wraps every label; this one stays one line
        self._show_choice_tooltip()
        if notify and record.get("volume_out_of_distribution"):
            # worded as the CLI's warning line: "unlike the training data" only when the reasons are the input's
            kind, common = flag_wording([reasons[i] for i in flagged if i < len(reasons)])
            why = f": {', '.join(common)}" if common else ""
            show_warning(
                f"{layer.name if layer is not None else 'this volume'}: {len(flagged)} of {n} B-scans {kind}{why}; "
                "check the segmentation before using its thickness"
            )

    def go_to(self, index: int) -> None:
        """Show B-scan ``index`` in the viewer."""
        go_to_bscan(self._viewer, self._layer, index)

    def _show_choice_tooltip(self, _value: Any = None) -> None:
        text = self.choice.native.currentText()
        self.choice.tooltip = text or "the lowest-quality B-scans, worst first"

    def _go_to_choice(self, _value: Any = None) -> None:
        if self.choice.value is not None:
            self.go_to(int(self.choice.value))


class CorrectionSuggestions(Container):
    """Propose the B-scans to correct first and step through them.

    ``labels_getter`` returns the Labels layer whose quality record is used; ``apply`` receives the proposed
    indices (e.g. to fill the fine-tune dock's B-scan list).
    """

    def __init__(self, viewer: Any, labels_getter: Callable[[], Any], apply: Callable[[list[int]], None]) -> None:
        self._viewer = viewer
        self._labels_getter = labels_getter
        self._apply = apply
        self.proposed: list[int] = []
        self._next = 0
        self.how_many = SpinBox(label="how many", value=2, min=1, max=50, tooltip="how many B-scans to propose")
        self.suggest_button = PushButton(
            text="Suggest B-scans to correct",
            tooltip="the lowest-quality B-scans of the labels, spread across the volume, into the B-scan list",
        )
        self.next_button = PushButton(text="Go to next", enabled=False, tooltip="show the next proposed B-scan")
        self.info = Label(value="")
        parts: list[Widget] = [self.how_many, self.suggest_button, self.next_button]
        row = Container(widgets=parts, layout="horizontal", labels=False)
        super().__init__(widgets=[row, self.info], labels=False)
        self.suggest_button.changed.connect(self.suggest)
        self.next_button.changed.connect(self.go_to_next)

    def suggest(self, _value: Any = None) -> list[int]:
        """Rank the B-scans of the chosen Labels layer, fill the list, show the first; return the picks."""
        layer = self._labels_getter()
        record = quality_record(layer)
        if record is None:
            self.info.value = "no quality recorded: segment with the Segment dock first"
            self.proposed = []
            self.next_button.enabled = False
            return []
        self.proposed = correction_candidates(np.asarray(record["score"], dtype=float), int(self.how_many.value))
        self._next = 0
        self.info.value = "correct first (lowest quality, spread out): " + ", ".join(map(str, self.proposed))
        self.next_button.enabled = bool(self.proposed)
        self._apply(list(self.proposed))
        self.go_to_next()
        return list(self.proposed)

    def go_to_next(self, _value: Any = None) -> None:
        """Show the next proposed B-scan (cycling)."""
        if not self.proposed:
            return
        index = self.proposed[self._next % len(self.proposed)]
        self._next += 1
        go_to_bscan(self._viewer, self._labels_getter(), index)


__all__ = ["QUALITY_KEY", "CorrectionSuggestions", "QualityPanel", "go_to_bscan", "quality_record"]

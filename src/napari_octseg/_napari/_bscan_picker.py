"""The Fine-tune dock's "which B-scans" rows: the list to learn from, what was corrected, and suggestions.

:class:`BscanPicker` owns the B-scan list (``"0, 5, 9"`` or ``"3-6"``), a line saying which B-scans differ
from the automatic result (:func:`corrected_bscans`, from the edit record of :mod:`napari_octseg.io.provenance`),
the Detect / Add shown buttons and the correction suggestions of the quality panel. The dock adds
:attr:`BscanPicker.list_row` among its labelled rows and :attr:`BscanPicker.block` across its full width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import napari
import numpy as np
from magicgui.widgets import Container, Label, LineEdit, PushButton, Widget
from qtpy.QtWidgets import QBoxLayout

from ..core.errors import OctsegError
from ..io.provenance import edited_or_none
from ..learning.finetune_data import format_bscans, parse_bscans
from . import _common
from ._common import Image, Labels
from .quality_panel import CorrectionSuggestions
from .segment_widget import AUTO_LABELS_KEY


def corrected_bscans(layer: Labels) -> list[int] | None:
    """B-scans of ``layer`` edited since the automatic segmentation, or ``None`` if it kept no record.

    The record (:mod:`napari_octseg.io.provenance`) is the segment widget's per-B-scan digests, kept
    through the plugin's writer and reader, or, from other tools, a full copy of the automatic labels.
    """
    return edited_or_none(np.asarray(layer.data), layer.metadata.get(AUTO_LABELS_KEY))


def full_width(*widgets: Widget) -> Container:
    """``widgets`` stacked without a label column or margins (to span a dock's width)."""
    rows = Container(widgets=list(widgets), labels=False)
    rows.margins = (0, 0, 0, 0)
    return rows


def _stack_rows(container: Container) -> None:
    """Lay out the horizontal button rows inside ``container`` top to bottom (they fit a narrow dock)."""
    for child in container:
        if isinstance(child, Container) and child.layout == "horizontal":
            child.native.layout().setDirection(QBoxLayout.Direction.TopToBottom)


class BscanPicker:
    """Which B-scans fine-tuning learns from (see the module notes).

    Parameters
    ----------
    viewer
        The viewer (its current B-scan is what "Add shown" adds).
    image, labels
        Return the dock's chosen image and corrected Labels layer (or ``None``).
    """

    def __init__(
        self, viewer: napari.viewer.Viewer, image: Callable[[], Image | None], labels: Callable[[], Labels | None]
    ) -> None:
        self._viewer, self._image, self._labels = viewer, image, labels
        self.edit = LineEdit(label="B-scans", tooltip="0-based B-scan indices to learn from, e.g. 0, 5, 9 or 3-6")
        self.detected = Label(label="", value="")
        self.detect_btn = PushButton(
            text="Detect", tooltip="list the B-scans that differ from the automatic segmentation (corrected ones)"
        )
        self.current_btn = PushButton(text="Add shown", tooltip="add the B-scan shown in the viewer to the list")
        self.suggestions = CorrectionSuggestions(viewer, labels, self.use_suggestions)
        _stack_rows(self.suggestions)  # "how many", "Suggest B-scans to correct", "Go to next": a narrow dock
        self.suggestions.margins = (0, 0, 0, 0)
        self.block = full_width(
            self.detected,
            Container(widgets=[self.detect_btn, self.current_btn], layout="horizontal", labels=False),
            self.suggestions,
        )
        self.detect_btn.changed.connect(self.detect)
        self.current_btn.changed.connect(self.add_current)

    @property
    def list_row(self) -> LineEdit:
        """The B-scan list (a labelled row of the dock)."""
        return self.edit

    def detect(self, _value: Any = None) -> list[int]:
        """Fill the list with the B-scans that differ from the Labels layer's automatic result."""
        layer = self._labels()
        if layer is None:
            self.detected.value = "no Labels layer"
            return []
        found = corrected_bscans(layer)
        if found is None:
            self.detected.value = "no automatic result stored: type the B-scans"
            return []
        self.detected.value = f"corrected: {format_bscans(found) or 'none yet'}"
        if found:
            self.edit.value = format_bscans(found)
        return found

    def use_suggestions(self, indices: list[int]) -> None:
        """Put the B-scans proposed for correction in the list (the user corrects them, then fine-tunes)."""
        self.edit.value = format_bscans(sorted(indices))

    def add_current(self, _value: Any = None) -> None:
        """Add the B-scan shown in the viewer to the list."""
        layer = self._image()
        if layer is None or layer.ndim < 3:
            self.edit.value = self.edit.value or "0"
            return
        n = layer.data.shape[-3]
        index = min(n - 1, max(0, int(round(layer.world_to_data(self._viewer.dims.point)[-3]))))
        try:
            current = parse_bscans(self.edit.value, n)
        except OctsegError as exc:
            _common.report_error(exc)
            return
        self.edit.value = format_bscans([*current, index])

    def picked(self, n_bscans: int) -> list[int]:
        """The listed B-scans (the detected ones when the list is empty); InputError for a bad list."""
        if not self.edit.value.strip():
            self.detect()
        return parse_bscans(self.edit.value, n_bscans)

"""A small live loss curve for a napari dock (matplotlib on the Qt canvas, in napari's theme colours)."""

from __future__ import annotations

from ._plot import ThemedCanvas, style_axes, style_legend


class LossPlot(ThemedCanvas):
    """Training loss per step and validation loss per epoch, against (fractional) epoch."""

    def __init__(self, height_px: int = 170) -> None:
        super().__init__(height_px)
        self.setToolTip("loss per training step (blue) and on the corrected B-scans after each epoch (orange)")
        self.ax = self.figure.add_subplot(111)
        self.steps_x: list[float] = []
        self.steps_y: list[float] = []
        self.epochs_x: list[float] = []
        self.epochs_y: list[float] = []
        (self._train,) = self.ax.plot([], [], lw=1.0, color="#4c9be8", label="train (augmented crops)")
        (self._val,) = self.ax.plot([], [], "o-", ms=3, lw=1.2, color="#f28e2b", label="corrected B-scans")
        self._style()

    def _style(self) -> None:
        self.ax.set_xlabel("epoch")
        self.ax.set_ylabel("loss")
        style_axes(self.figure, self.ax, self.colors)
        self.ax.grid(alpha=0.25, color=self.colors["text"])
        style_legend(self.ax.legend(fontsize=7, loc="upper right"), self.colors)

    def clear(self) -> None:
        """Forget all points (a new run starts)."""
        for values in (self.steps_x, self.steps_y, self.epochs_x, self.epochs_y):
            values.clear()
        self._refresh()

    def add_step(self, epoch: float, loss: float) -> None:
        self.steps_x.append(epoch)
        self.steps_y.append(loss)
        self._refresh()

    def add_epoch(self, epoch: float, loss: float | None) -> None:
        if loss is None:
            return
        self.epochs_x.append(epoch)
        self.epochs_y.append(loss)
        self._refresh()

    def _refresh(self) -> None:
        self._train.set_data(self.steps_x, self.steps_y)
        self._val.set_data(self.epochs_x, self.epochs_y)
        self.ax.relim()
        self.ax.autoscale_view()
        self.draw_idle()

"""A small live loss curve for a napari dock (matplotlib on the Qt canvas)."""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure


class LossPlot(FigureCanvasQTAgg):
    """Training loss per step and validation loss per epoch, against (fractional) epoch."""

    def __init__(self, height_px: int = 170) -> None:
        self.figure = Figure(figsize=(3.2, 1.8), dpi=90, layout="constrained")
        super().__init__(self.figure)
        self.setMinimumHeight(height_px)
        self.ax = self.figure.add_subplot(111)
        self.steps_x: list[float] = []
        self.steps_y: list[float] = []
        self.epochs_x: list[float] = []
        self.epochs_y: list[float] = []
        (self._train,) = self.ax.plot([], [], lw=1.0, color="#4c9be8", label="train (augmented crops)")
        (self._val,) = self.ax.plot([], [], "o-", ms=3, lw=1.2, color="#f28e2b", label="corrected B-scans")
        self._style()

    def _style(self) -> None:
        self.ax.set_xlabel("epoch", fontsize=8)
        self.ax.set_ylabel("loss", fontsize=8)
        self.ax.tick_params(labelsize=7)
        self.ax.grid(alpha=0.3)
        self.ax.legend(fontsize=7, loc="upper right")

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

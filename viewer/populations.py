"""The "Populations" dock widget: live tumour cells, T cells by state, kills and mean LFA-1 over time
(the store's per-step timeseries), linked to napari's time slider: a vertical line follows the slider,
and a click on the plot moves the slider to that time. It also holds the Refresh button (re-read the
open run stores) and the T-cell colouring (state or LFA-1).
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

#: (timeseries column, label) per panel; a run without T cells shows the columns it has
PANELS = (
    ("tumour cells", (("tumor_live", "LIVE"), ("tumor_dead", "DEAD"), ("tumor_necrotic", "NECROTIC"))),
    ("T cells", (("tcells_free", "free"), ("tcells_engaged", "engaged"), ("tcells_exhausted", "exhausted"))),
    ("kills (cumulative)", (("kills", "kills"),)),
    ("mean LFA-1 A", (("lfa1_mean", "A"),)),
)


def time_axis(viewer) -> int:
    """The index of the viewer's time axis (labelled ``t`` by the gpusim layers; else the first)."""
    labels = tuple(viewer.dims.axis_labels)
    return labels.index("t") if "t" in labels else 0


def series(ts) -> dict:
    """Columns to plot from a timeseries DataFrame (``tcells_free`` derived: alive minus engaged)."""
    out = {c: ts[c].to_numpy(np.float64) for c in ts.columns}
    if "tcells" in out and "tcells_engaged" in out:
        out["tcells_free"] = out["tcells"] - out["tcells_engaged"]
    return out


class PopulationsWidget(QWidget):
    """See the module docstring. ``reload()`` re-reads the timeseries of the chosen store."""

    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.figure = Figure(figsize=(4.0, 6.0), constrained_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(360)
        self.axes = self.figure.subplots(len(PANELS), 1, sharex=True)
        self.lines = []  # one vertical line per panel, at the slider's time
        self.store = QComboBox()
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("re-read the open run stores (a run still being written grows)")
        self.color_by = QComboBox()
        self.color_by.addItems(["state", "lfa1"])
        self.note = QLabel("")
        row = QHBoxLayout()
        row.addWidget(self.store, 1)
        row.addWidget(self.refresh_button)
        row2 = QHBoxLayout()
        row2.addWidget(QLabel("T cells coloured by"))
        row2.addWidget(self.color_by)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addLayout(row2)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.note)

        self._pending = QTimer(self)  # coalesce bursts of layer events into one reload
        self._pending.setSingleShot(True)
        self._pending.setInterval(0)
        self._pending.timeout.connect(self.reload)
        self.canvas.mpl_connect("button_press_event", self._on_click)
        self.refresh_button.clicked.connect(self.refresh)
        self.color_by.currentTextChanged.connect(self.recolor)
        self.store.currentTextChanged.connect(lambda _t: self.reload())
        napari_viewer.dims.events.current_step.connect(self._move_lines)
        napari_viewer.layers.events.inserted.connect(self._on_layers_changed)
        napari_viewer.layers.events.removed.connect(self._on_layers_changed)
        for layer in napari_viewer.layers:
            layer.events.data.connect(self._schedule)
        self._on_layers_changed()

    # -- stores --------------------------------------------------------------------------------
    def _on_layers_changed(self, event=None) -> None:
        from .reader import open_stores

        if event is not None and event.type == "inserted":
            event.value.events.data.connect(self._schedule)
        stores = open_stores(self.viewer)
        current = self.store.currentText()
        self.store.blockSignals(True)
        self.store.clear()
        self.store.addItems(stores)
        if current in stores:
            self.store.setCurrentText(current)
        elif stores:
            self.store.setCurrentIndex(len(stores) - 1)  # the newest
        self.store.blockSignals(False)
        self._pending.start()

    def _schedule(self, event=None) -> None:
        self._pending.start()

    def refresh(self) -> None:
        from .reader import refresh_viewer

        refresh_viewer(self.viewer)
        self.reload()

    def recolor(self, by: str) -> None:
        """Colour the T-cell points of every open store by ``by`` ("state" or "lfa1")."""
        from .layers import tcell_colors

        for layer in self.viewer.layers:
            g = layer.metadata.get("gpusim", {}) if hasattr(layer, "metadata") else {}
            if g.get("key") == "tcells" and len(layer.data):
                layer.face_color = tcell_colors(layer.features, by)
                layer.metadata["color_by"] = by

    # -- the plot ------------------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read the chosen store's timeseries and redraw the panels."""
        from gpusim.io.reader import open_run

        path = self.store.currentText()
        for ax in self.axes:
            ax.clear()
        self.lines = []
        if not path:
            self.note.setText("open a gpusim run store")
            self.canvas.draw_idle()
            return
        try:
            cols = series(open_run(path).timeseries)
        except Exception as exc:  # a damaged or vanished store: say so in the widget
            self.note.setText(f"cannot read the timeseries of {path}: {exc}")
            self.canvas.draw_idle()
            return
        t_h = cols.get("time_min", np.zeros(0)) / 60.0
        for ax, (title, curves) in zip(self.axes, PANELS):
            for col, label in curves:
                if col in cols:
                    ax.plot(t_h, cols[col], label=label, lw=1.2)
            ax.set_ylabel(title, fontsize=8)
            ax.tick_params(labelsize=7)
            if len(curves) > 1 and ax.lines:
                ax.legend(fontsize=7, loc="best")
        self.axes[-1].set_xlabel("time (h)")
        t = self.slider_minutes() / 60.0
        self.lines = [ax.axvline(t, color="k", lw=0.8, ls="--") for ax in self.axes]
        self.note.setText(f"{len(t_h)} steps recorded" if len(t_h) else
                          "no timeseries rows yet (written in batches and at each checkpoint)")
        self.canvas.draw_idle()

    def slider_minutes(self) -> float:
        """The time (min) the slider shows."""
        return float(self.viewer.dims.point[time_axis(self.viewer)])

    def _move_lines(self, event=None) -> None:
        t = self.slider_minutes() / 60.0
        for line in self.lines:
            line.set_xdata([t, t])
        self.canvas.draw_idle()

    def _on_click(self, event) -> None:
        if event.inaxes is None or event.xdata is None:
            return
        self.go_to(float(event.xdata) * 60.0)

    def go_to(self, minutes: float) -> None:
        """Move the time slider to the step nearest ``minutes``."""
        axis = time_axis(self.viewer)
        rng = self.viewer.dims.range[axis]
        n = int(self.viewer.dims.nsteps[axis])
        step = int(round((minutes - rng.start) / rng.step)) if rng.step else 0
        self.viewer.dims.set_current_step(axis, int(np.clip(step, 0, max(n - 1, 0))))

"""The "Run a scenario" dock widget: choose a built-in scenario or a config file, edit serum Mg, the
T-cell count, days, backend and output store, and run it in a background thread with a progress bar;
the layers are re-read from the store every N steps, and Stop checkpoints (the store becomes
``interrupted``; ``gpusim resume STORE`` continues it).

How the run is driven: ``Simulation.run(minutes=N steps, out=STORE)`` once per update. Each call ends
on a whole step with a flush and a checkpoint, so the frames on disk are committed when the layers are
re-read, and a stop between two calls leaves a resumable store. (``Simulation.run`` stops early only on
SIGINT/SIGTERM in the main thread; a worker thread has no such signal, so the stop is taken between
calls.) While the viewer re-reads the store the worker waits, so reads never race the writer.
"""

from __future__ import annotations

import threading
from pathlib import Path

from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout, QHBoxLayout,
                            QLabel, QLineEdit, QProgressBar, QPushButton, QSpinBox, QVBoxLayout, QWidget)

SAMPLE = "tiny (sample, 30 min)"
CONFIG_FILE = "config file…"
#: seconds the worker waits for the viewer to re-read the store before it steps on regardless
REFRESH_WAIT_S = 60.0


class _StepCounter:
    """Operation counting finished steps for the progress bar (reads nothing, changes nothing)."""

    name = "viewer_progress"

    def __init__(self):
        self.steps = 0

    def apply(self, sim) -> None:
        self.steps += 1


def simulate(cfg, out, overwrite: bool, minutes: float, every_steps: int, stop: threading.Event,
             resume: threading.Event, counter: _StepCounter):
    """Generator run by the worker thread: yields ``(steps done, steps planned)`` after every chunk of
    ``every_steps`` steps (the store committed up to there), then waits for ``resume``; returns
    ``(steps done, steps planned, interrupted)``."""
    from gpusim import Simulation

    sim = Simulation(cfg)
    sim.operations.append(counter)
    n_steps = int(round(minutes / sim.dt_min))
    planned_end = sim.time_min + n_steps * sim.dt_min
    done = 0
    first = True
    while first or (done < n_steps and not stop.is_set()):
        k = min(every_steps, n_steps - done)
        summary = sim.run(minutes=k * sim.dt_min, out=out, overwrite=overwrite and first, progress=False)
        first = False
        done += summary.steps
        resume.clear()
        yield done, n_steps
        resume.wait(REFRESH_WAIT_S)
    interrupted = done < n_steps
    if interrupted:
        mark_interrupted(out, planned_end)
    return done, n_steps, interrupted


def mark_interrupted(out, planned_end_min: float) -> None:
    """Record a stopped run as ``interrupted`` with its planned end (what ``gpusim resume`` runs up to).
    The last ``Simulation.run`` call closed it as complete at the chunk's end, checkpoint written."""
    from gpusim.io.store import open_store, set_status

    g = open_store(out, mode="r+")
    set_status(g, "interrupted")
    g.attrs["run"] = {"planned_end_min": float(planned_end_min)}


class RunWidget(QWidget):
    """Dock widget starting a run and showing it live (see the module docstring). ``updated`` is
    emitted with the steps done each time the layers have been re-read from the store."""

    updated = Signal(int)

    def __init__(self, napari_viewer):
        super().__init__()
        from gpusim import scenarios

        self.viewer = napari_viewer
        self.worker = None
        self.counter = None
        self.result = None  # (steps done, planned, interrupted) of the last run
        self._stop = threading.Event()
        self._resume = threading.Event()

        self.scenario = QComboBox()
        self.scenario.addItems([SAMPLE, *scenarios.names(), CONFIG_FILE])
        self.config_path = QLineEdit()
        self.config_path.setPlaceholderText("a TOML config")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse)
        path_row = QHBoxLayout()
        path_row.addWidget(self.config_path)
        path_row.addWidget(browse)
        self.serum_mg = QDoubleSpinBox(decimals=3, minimum=0.0, maximum=10.0, singleStep=0.05, suffix=" mM")
        self.tcells = QSpinBox(minimum=0, maximum=100_000_000, singleStep=100)
        self.days = QDoubleSpinBox(decimals=4, minimum=0.0, maximum=3650.0, singleStep=0.25, suffix=" d")
        self.backend = QComboBox()
        self.backend.addItems(["auto", "cpu", "cuda"])
        self.out = QLineEdit(str(Path.cwd() / "run.zarr"))
        self.overwrite = QCheckBox("replace an existing store")
        self.overwrite.setChecked(True)
        self.every = QSpinBox(minimum=1, maximum=1_000_000, value=60, suffix=" steps")
        self.run_button = QPushButton("Run")
        self.stop_button = QPushButton("Stop (checkpoint)")
        self.stop_button.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("scenario", self.scenario)
        form.addRow("config file", path_row)
        form.addRow("serum Mg", self.serum_mg)
        form.addRow("T cells", self.tcells)
        form.addRow("days", self.days)
        form.addRow("backend", self.backend)
        form.addRow("output store", self.out)
        form.addRow("", self.overwrite)
        form.addRow("update layers every", self.every)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.stop_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.scenario.currentTextChanged.connect(self._load_defaults)
        self.config_path.editingFinished.connect(lambda: self._load_defaults(self.scenario.currentText()))
        self.run_button.clicked.connect(self.start)
        self.stop_button.clicked.connect(self.stop)
        self._timer = QTimer(self)
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._show_progress)
        self._load_defaults(self.scenario.currentText())

    # -- the config ----------------------------------------------------------------------------
    def base_config(self):
        """The chosen scenario's or file's Config (before the widget's edits)."""
        from gpusim import Config, scenario_config

        from .sample import tiny_config

        name = self.scenario.currentText()
        if name == SAMPLE:
            return Config.model_validate(tiny_config())
        if name == CONFIG_FILE:
            return Config.from_toml(self.config_path.text())
        return scenario_config(name)

    def _load_defaults(self, _name=None) -> None:
        self.config_path.setEnabled(self.scenario.currentText() == CONFIG_FILE)
        try:
            cfg = self.base_config()
        except Exception as exc:  # a file not chosen yet, or a config error: say so, keep the fields
            self.status.setText(str(exc) if self.config_path.text() else "choose a config file")
            return
        mg = next((s for s in cfg.substrates if s.name == "mg"), None)
        self.serum_mg.setEnabled(mg is not None)
        if mg is not None:
            self.serum_mg.setValue(float(mg.serum))
        self.tcells.setEnabled(cfg.tcells is not None)
        self.tcells.setValue(int(cfg.tcells.initial_count) if cfg.tcells is not None else 0)
        self.days.setValue(float(cfg.time.duration_min) / 1440.0)
        self.backend.setCurrentText(str(cfg.backend))
        self.status.setText("")

    def config(self):
        """The Config to run: the base one with the widget's serum Mg, T-cell count, days and backend."""
        cfg = self.base_config()
        overrides = {"backend": self.backend.currentText(), "time.duration_min": self.minutes()}
        if self.serum_mg.isEnabled():
            overrides["substrates.mg.serum"] = float(self.serum_mg.value())
        if self.tcells.isEnabled():
            overrides["tcells.initial_count"] = int(self.tcells.value())
        return cfg.with_overrides(overrides, source="the run widget")

    def minutes(self) -> float:
        return float(self.days.value()) * 1440.0

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "gpusim config", "", "TOML (*.toml)")
        if path:
            self.config_path.setText(path)
            self.scenario.setCurrentText(CONFIG_FILE)
            self._load_defaults()

    # -- running -------------------------------------------------------------------------------
    def start(self):
        """Start the run in a napari thread worker; returns the worker (None if the config is bad)."""
        from napari.qt.threading import create_worker
        from napari.utils.notifications import show_error

        if self.worker is not None:
            return self.worker
        try:
            cfg = self.config()
        except Exception as exc:
            show_error(f"gpusim run widget: {exc}")
            return None
        out = self.out.text().strip()
        self._stop.clear()
        self.counter = _StepCounter()
        self.result = None
        self.progress.setRange(0, max(1, int(round(self.minutes() / float(cfg.time.dt_min)))))
        self.progress.setValue(0)
        self.worker = create_worker(simulate, cfg, out, self.overwrite.isChecked(), self.minutes(),
                                    int(self.every.value()), self._stop, self._resume, self.counter,
                                    _start_thread=False)
        self.worker.yielded.connect(self._on_chunk)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(self._on_finished)
        self.run_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.status.setText(f"running into {out}")
        self._timer.start()
        self.worker.start()
        return self.worker

    def stop(self) -> None:
        """Stop after the current chunk of steps: checkpointed, the store marked interrupted."""
        self._stop.set()
        self._resume.set()
        self.status.setText("stopping after the current steps (checkpoint)…")

    def _show_progress(self) -> None:
        if self.counter is not None:
            self.progress.setValue(min(self.counter.steps, self.progress.maximum()))

    def _on_chunk(self, value) -> None:
        from .reader import open_stores, refresh_viewer

        done, n_steps = value
        out = self.out.text().strip()
        try:
            if str(out) in open_stores(self.viewer):
                refresh_viewer(self.viewer, [out])
            else:
                self.viewer.open(out, plugin="gpusim")
            self.progress.setValue(done)
            self.status.setText(f"{done} / {n_steps} steps written to {out}")
            self.updated.emit(done)
        finally:
            self._resume.set()  # only now may the worker step on (or see a stop asked for meanwhile)

    def _on_done(self, result) -> None:
        done, n_steps, interrupted = result
        self.result = result
        self.progress.setValue(done)
        self.status.setText(f"stopped at step {done} of {n_steps}: checkpointed; continue with "
                            f"`gpusim resume {self.out.text().strip()}`" if interrupted else
                            f"complete: {done} steps in {self.out.text().strip()}")

    def _on_error(self, exc) -> None:
        from napari.utils.notifications import show_error

        self.status.setText(f"failed: {exc}")
        show_error(f"gpusim run failed: {exc}")

    def _on_finished(self) -> None:
        self._timer.stop()
        self._show_progress()
        self.worker = None
        self.run_button.setEnabled(True)
        self.stop_button.setEnabled(False)

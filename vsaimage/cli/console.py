"""The live console on stderr while a command runs: phases as progress lines
(rich on a terminal, plain timestamped start and end lines otherwise), log
lines, warnings and errors. It implements the progress protocol the core
reports through; the result on stdout is render.py's."""

from __future__ import annotations

import contextlib
import copy
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text


class _BytesColumn(DownloadColumn):
    """Sizes only for phases that count bytes; nothing for the others."""

    def render(self, task: Task) -> Text:
        return super().render(task) if task.fields.get("nbytes") else Text("")


class Phase:
    """A step that takes seconds: shown as a progress line on a terminal, as a
    start and an end line otherwise. Its duration goes into the report."""

    def __init__(self, reporter: Reporter, name: str, task: TaskID | None) -> None:
        self._reporter = reporter
        self.name = name
        self._task = task
        self.started = time.monotonic()
        self.detail = ""

    def advance(self, amount: float) -> None:
        if self._task is not None and self._reporter.progress is not None:
            self._reporter.progress.advance(self._task, amount)

    def update(self, completed: float, total: float) -> None:
        if self._task is not None and self._reporter.progress is not None:
            self._reporter.progress.update(self._task, completed=completed, total=total)


class _Display:
    """What a reporter and the reporters of its images share: one progress
    display on stderr, and the lock that keeps lines from interleaving."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.lock = threading.Lock()


class Reporter:
    def __init__(self, *, verbosity: int = 0, stderr: IO[str] | None = None) -> None:
        self.verbosity = verbosity
        self.err = Console(file=stderr or sys.stderr, stderr=stderr is None)
        self.interactive = self.err.is_terminal and not self.err.is_dumb_terminal
        self._display = _Display()
        self._lock = self._display.lock
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []
        self.label = ""

    @property
    def progress(self) -> Progress | None:
        return self._display.progress

    @progress.setter
    def progress(self, value: Progress | None) -> None:
        self._display.progress = value

    def for_image(self, name: str) -> Reporter:
        """A reporter for one image of several converted in one launch: its
        phases and warnings are shown after the image's name, so the progress
        says which image is being worked on, and are kept apart (its own
        timings and warnings) for that image's part of the result."""
        child = copy.copy(self)
        child.timings, child.warnings, child.label = {}, [], f"{name}: "
        return child

    # --- log lines (stderr) -------------------------------------------------

    def _line(self, text: str, style: str = "") -> None:
        with self._lock:
            if self.interactive:
                target = self.progress.console if self.progress else self.err
                target.print(text, style=style, highlight=False, markup=False)
            else:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
                print(f"{stamp} {text}", file=self.err.file, flush=True)

    def info(self, text: str) -> None:
        if self.verbosity >= 0:
            self._line(text)

    def debug(self, text: str) -> None:
        if self.verbosity >= 1:
            self._line(text, "dim")

    def warn(self, text: str) -> None:
        self.warnings.append(text)
        self._line(f"warning: {self.label}{text}", "yellow")

    def error(self, text: str, hint: str | None = None) -> None:
        """One line on stderr, never timestamped, so scripts can show it as is."""
        line = f"vsaimage: error: {text}" + (f" ({hint})" if hint else "")
        with self._lock:
            if self.interactive:
                self.err.print(line, style="bold red", highlight=False, markup=False)
            else:
                print(line, file=self.err.file, flush=True)

    # --- phases -------------------------------------------------------------

    @contextlib.contextmanager
    def phase(self, name: str, *, total: float | None = None, nbytes: bool = False) -> Iterator[Phase]:
        """Time a phase; `total` gives a bar (in bytes when `nbytes`)."""
        timed, name = name, self.label + name
        task = None
        with self._lock:
            if self.interactive and self.verbosity >= 0:
                if self.progress is None:
                    self.progress = self._new_progress()
                    self.progress.start()
                task = self.progress.add_task(name, total=total, nbytes=nbytes)
        if not self.interactive:
            self.info(f"{name}: started")
        ph = Phase(self, name, task)
        ok = False
        try:
            yield ph
            ok = True
        finally:
            elapsed = time.monotonic() - ph.started
            self.timings[timed] = round(elapsed, 2)
            with self._lock:
                if task is not None and self.progress is not None:
                    t = self.progress.tasks[task]
                    self.progress.update(task, completed=t.total or 1, total=t.total or 1,
                                         description=f"{name} {'✓' if ok else '✗'}")
            if not self.interactive:
                status = "done" if ok else "failed"
                self.info(f"{name}: {status} in {elapsed:.1f} s{' ' + ph.detail if ph.detail else ''}")

    def _new_progress(self) -> Progress:
        return Progress(
            SpinnerColumn(finished_text="•"),
            TextColumn("{task.description}"),
            BarColumn(),
            _BytesColumn(binary_units=True),
            TimeElapsedColumn(),
            console=self.err,
            transient=False,
        )

    def close(self) -> None:
        with self._lock:
            if self.progress is not None:
                self.progress.stop()
                self.progress = None

"""How the core reports while it works: phases that take seconds (timed, with
a bar when they know their size), warnings, errors of one image of several,
and detail lines for -v. The commands and adapters call this protocol; the
CLI chooses what implements it (cli/console.py: rich on a terminal, plain
timestamped lines otherwise), as osbuild's stages report to a monitor.

A leaf: it imports nothing of vsaimage, and nothing here draws anything.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol


class Phase(Protocol):
    """A phase in progress: what it has done so far, and a few words said
    when it ends."""

    detail: str

    def advance(self, amount: float) -> None: ...

    def update(self, completed: float, total: float) -> None: ...


class Progress(Protocol):
    """What a command reports to. `timings` and `warnings` are what it
    recorded, for the result document."""

    timings: dict[str, float]
    warnings: list[str]

    def phase(self, name: str, *, total: float | None = None,
              nbytes: bool = False) -> AbstractContextManager[Phase]:
        """Time a phase; `total` gives a bar (in bytes when `nbytes`)."""
        ...

    def debug(self, text: str) -> None:
        """A detail line, shown with -v."""
        ...

    def warn(self, text: str) -> None: ...

    def error(self, text: str, hint: str | None = None) -> None:
        """One line for an error that does not end the run (one image of
        several failing)."""
        ...

    def for_image(self, name: str) -> Progress:
        """What one image of several reports to: its lines name it, and its
        timings and warnings are its own."""
        ...

"""Cancelling a running command from the main thread (Ctrl-C, SIGTERM).

A command runs in a worker thread, because a blocking libguestfs call (a
launch, a 400 MB tar_in) holds its thread in C code for minutes, where no
signal handler can run. The main thread sets `requested` (long host-side loops
check it) and kills the qemu processes this process started (the appliance,
qemu-img): the blocked calls then fail at once and the worker unwinds through
the usual clean-up."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

requested = threading.Event()


def check() -> None:
    """Raise KeyboardInterrupt in a worker when cancellation was requested."""
    if requested.is_set():
        raise KeyboardInterrupt


def qemu_children() -> list[int]:
    """The qemu processes (qemu-system-*, qemu-img) whose parent is this
    process."""
    me = str(os.getpid())
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            text = stat.read_text()
            comm = text[text.index("(") + 1 : text.rindex(")")]
            ppid = text[text.rindex(")") + 2 :].split()[1]
            if ppid == me and comm.startswith("qemu"):
                found.append(int(stat.parent.name))
    return found


def kill_qemu_children() -> None:
    """SIGKILL every qemu process this process started."""
    for pid in qemu_children():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def cancel() -> None:
    requested.set()
    kill_qemu_children()

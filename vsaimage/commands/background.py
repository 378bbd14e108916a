"""Host-side work that runs beside the appliance (the initrd read and
repack, the modules payload), in daemon threads at a lower priority.

Under TCG the appliance is a CPU-bound qemu, and on 2 CPUs a repack with two
zstd workers at full speed beside a launch made it 1.6-2.9 times as long as
alone, one with one worker at nice 10 0.6-1.15 times, in two runs of
bench/bench_background.py (results/background.md: launches of 12-44 s
alone, load 3-9 from other work). zstd now compresses in the repack's own
thread (see initrd/archive.LEVELS), so the repack takes at most one CPU.
The cost: on a machine busy with other work the repack (~3 s of one CPU)
can end well after the edits (once 145 s, at load 9).
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from vsaimage.progress import Progress

T = TypeVar("T")

BACKGROUND_NICE = 10


def in_background(fn: Callable[[], T]) -> concurrent.futures.Future[T]:
    """Run `fn` in a daemon thread: an interrupted convert must not wait for a
    compression to finish before it can clean up and exit."""
    fut: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        try:
            # Linux's nice is per thread.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
            fut.set_result(fn())
        except BaseException as e:
            fut.set_exception(e)

    threading.Thread(target=run, daemon=True).start()
    return fut


def timed(rep: Progress, name: str, fn: Callable[[], T]) -> Callable[[], T]:
    """`fn` as a phase of its own."""
    def run() -> T:
        with rep.phase(name):
            return fn()

    return run

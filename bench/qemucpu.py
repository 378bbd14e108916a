"""What the emulated machines of a command cost: the CPU seconds of every
QEMU process it started (a descendant of this process), by kind (a
libguestfs appliance, or the Xen harness's machine) and by the test that
started it.

Sampled from /proc a few times a second, without a wrapper around QEMU:
each QEMU's environment names the test that started it
(PYTEST_CURRENT_TEST, which pytest sets and the tool's processes inherit).
A process's CPU after its last sample is not counted (at most one interval
of one CPU each): the figures err low.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

_COMM = "qemu-system-x86"  # /proc/PID/comm keeps 15 characters of qemu-system-x86_64
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Machine:
    kind: str  # "appliance" or "xen"
    test: str  # the pytest node id and phase, or "-" outside a test
    cpu_seconds: float = 0.0


@dataclass
class Sampled:
    machines: dict[tuple[int, int], Machine] = field(default_factory=dict)  # (pid, start tick) -> ...
    others: set[tuple[int, int]] = field(default_factory=set)  # QEMUs of other processes

    def totals(self) -> dict[str, dict[str, float]]:
        """Per kind: how many machines ran, and their CPU seconds."""
        return self._grouped(lambda m: m.kind)

    def by_module(self) -> dict[str, dict[str, float]]:
        """Per test module: the same, the costliest first."""
        out = self._grouped(lambda m: m.test.split("::", 1)[0])
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["cpu_seconds"]))

    def _grouped(self, key: Callable[[Machine], str]) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for m in self.machines.values():
            t = out.setdefault(key(m), {"machines": 0, "cpu_seconds": 0.0})
            t["machines"] += 1
            t["cpu_seconds"] = round(t["cpu_seconds"] + m.cpu_seconds, 1)
        return out


def _fields(stat: str) -> list[str]:
    """The fields of /proc/PID/stat after the command (field 2, which may
    hold spaces and parentheses): the state, field 3, first."""
    return stat.rsplit(")", 1)[1].split()


def stat_times(stat: str) -> tuple[int, float]:
    """(start time in clock ticks since boot, user + system CPU seconds)
    from the text of /proc/PID/stat: fields 22, 14 and 15."""
    fields = _fields(stat)
    return int(fields[19]), (int(fields[11]) + int(fields[12])) / _TICK


def _descends(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        pid = int(_fields(Path(f"/proc/{pid}/stat").read_text())[1])  # the parent, field 4
    return False


def kind(cmdline: list[str]) -> str:
    """A QEMU's kind by its command line: the Xen harness boots Xen as the
    machine's kernel; libguestfs boots its appliance's."""
    kernel = cmdline[cmdline.index("-kernel") + 1] if "-kernel" in cmdline else ""
    return "xen" if Path(kernel).name.startswith("xen") else "appliance"


def _test_of(pid: str) -> str:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return "-"
    found = next((e for e in env if e.startswith(b"PYTEST_CURRENT_TEST=")), b"=-")
    return found.split(b"=", 1)[1].decode(errors="replace")


def sample(seen: Sampled) -> None:
    """One look at every QEMU process this process started: its CPU so
    far, and on first sight its kind and test."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != _COMM:
                continue
            start, cpu = stat_times(Path(f"/proc/{pid}/stat").read_text())
            key = (int(pid), start)
            if key in seen.others:
                continue
            if key not in seen.machines:
                if not _descends(int(pid), os.getpid()):
                    seen.others.add(key)
                    continue
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
                seen.machines[key] = Machine(kind(cmdline), _test_of(pid))
        except (OSError, IndexError, ValueError):  # gone in between
            continue
        seen.machines[key].cpu_seconds = cpu


@contextmanager
def sampled(interval: float = 0.25) -> Iterator[Sampled]:
    """Samples every `interval` seconds while the block runs."""
    seen = Sampled()
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            sample(seen)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield seen
    finally:
        stop.set()
        thread.join()

"""The console edit under systemd. No VSA generation is known to boot with
it; the step is here so that one that does is converted honestly rather
than given an inittab line nothing reads.

tty1's getty is getty@tty1.service: the ExecStart of getty@.service (or of
a tty1 unit of its own), as its drop-ins leave it. On hvc0 systemd runs
serial-getty@hvc0.service; a drop-in of vsaimage's gives it tty1's
ExecStart with the device changed (or the login prompt), and a link in
getty.target.wants enables it, as `systemctl enable` would. Pure: works on
a Snapshot.
"""

from __future__ import annotations

import posixpath
import re

from vsaimage.edits import Change, MakeLink, Snapshot, text_write
from vsaimage.errors import EditError

UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
# In the order systemd prefers them: a tty1 unit of its own, then the template.
GETTY_UNITS = ("/etc/systemd/system/getty@tty1.service", *(f"{d}/getty@.service" for d in UNIT_DIRS))
GETTY_DROPINS = tuple(f"/etc/systemd/system/getty@{i}.service.d/*.conf" for i in ("", "tty1"))
SERIAL_UNITS = tuple(f"{d}/serial-getty@.service" for d in UNIT_DIRS)
DROPIN = "/etc/systemd/system/serial-getty@hvc0.service.d/vsaimage.conf"
WANTS = "/etc/systemd/system/getty.target.wants/serial-getty@hvc0.service"
READS = (*GETTY_UNITS, *GETTY_DROPINS, *SERIAL_UNITS, DROPIN, WANTS)

_EXEC_START = re.compile(r"^\s*ExecStart\s*=\s*(.*?)\s*$", re.M)
# systemd's prefixes of an ExecStart command (ignore failure, full privileges, ...)
_PREFIXES = "-@+!:"
_INSTANCE = re.compile(r"%[Ii]")


def tty1_exec_start(snap: Snapshot) -> tuple[str, list[str]]:
    """(the ExecStart getty@tty1 runs, the files that say so): the unit's,
    then each drop-in's in name order, an empty assignment resetting the
    list. EditError naming the files read when there is none."""
    unit = next((p for p in GETTY_UNITS if snap.text(p) is not None), None)
    dropins = sorted((p for pattern in GETTY_DROPINS for p in snap.glob(pattern)), key=posixpath.basename)
    sources = [p for p in (unit, *dropins) if p is not None]
    commands: list[str] = []
    for path in sources:
        for value in _EXEC_START.findall(snap.text(path) or ""):
            commands = [*commands, value] if value else []
    if not commands:
        read = ", ".join(sources) or " or ".join(GETTY_UNITS)
        raise EditError(f"systemd: no ExecStart for getty@tty1 in {read}",
                        hint="--skip console converts without this edit")
    return commands[-1], sources


def command_of(exec_start: str) -> str:
    """An ExecStart as a command line: its prefixes off, the instance (%I)
    named tty1, as it runs there."""
    return _INSTANCE.sub("tty1", exec_start.lstrip(_PREFIXES))


def dropin(exec_start: str, why: str) -> str:
    return (f"# vsaimage: the VSA's console on the Xen console hvc0: {why}.\n"
            "[Service]\n"
            "ExecStart=\n"
            f"ExecStart={exec_start}\n")


def enable(snap: Snapshot) -> list[Change]:
    """The link that makes getty.target want serial-getty@hvc0: none when it
    is there. EditError when the system has no serial-getty@.service."""
    unit = next((p for p in SERIAL_UNITS if snap.text(p) is not None), None)
    if unit is None:
        raise EditError(f"systemd: no serial-getty@.service in {', '.join(UNIT_DIRS)} to run on hvc0",
                        hint="--skip console converts without this edit")
    link = snap.get(WANTS)
    if link.data is not None and (link.real or WANTS) == (snap.get(unit).real or unit):
        return []
    return [MakeLink(WANTS, unit)]


def changes(snap: Snapshot, prefix: str, command: str, why: str) -> list[Change]:
    """The drop-in running `command` on hvc0 (with tty1's ExecStart
    `prefix`), and the link enabling it."""
    return [*text_write(snap, DROPIN, dropin(prefix + command, why)), *enable(snap)]


def prefix_of(exec_start: str) -> str:
    return exec_start[: len(exec_start) - len(exec_start.lstrip(_PREFIXES))]

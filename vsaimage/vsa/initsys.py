"""Which init system the VSA boots with, told from its content: sysvinit
(SAN/iQ 8 and 9, CentOS 5), upstart (LeftHand OS 11 and 12, RHEL 6) or
systemd. The console edit depends on it: an inittab line is ignored by
upstart (RHEL 6 reads only its `initdefault`), a job under /etc/init by
sysvinit.

What /sbin/init is decides: a symlink to systemd, or a program naming
itself (sysvinit's `INIT_VERSION=sysvinit-X`, upstart's `upstart X.Y`,
systemd's `systemd NNN`). When it says nothing, the configuration does, if
it points at one system only: job files under /etc/init, an inittab with
active lines besides `initdefault`, systemd units. Pure: works on a
Snapshot.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Literal

from vsaimage.model import Snapshot

SBIN_INIT = "/sbin/init"
INITTAB = "/etc/inittab"
UPSTART_JOBS = "/etc/init/*.conf"
SYSTEMD_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
READS = (SBIN_INIT, INITTAB)
LISTS = ("/etc/init", *SYSTEMD_DIRS)

_UNITS = (".service", ".target")

Name = Literal["sysvinit", "upstart", "systemd", "unknown"]

# What each program says of itself in its bytes: `init --version` prints
# "init (upstart 0.6.5)", sysvinit puts INIT_VERSION=sysvinit-2.86 into
# the environment of what it runs, systemd's banner is "systemd 219".
_SELF = (
    ("upstart", re.compile(rb"upstart \d+\.\d+(?:\.\d+)?")),
    ("sysvinit", re.compile(rb"INIT_VERSION=sysvinit-[\w.]+")),
    ("systemd", re.compile(rb"systemd \d{2,3}\b")),
)


@dataclass(frozen=True)
class InitSystem:
    name: Name
    evidence: tuple[str, ...]  # what was found, each naming its file

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "evidence": list(self.evidence)}


def active_inittab_lines(text: str) -> list[str]:
    """The inittab entries sysvinit acts on: every active line but the
    `initdefault` one (all that upstart reads of it)."""
    found = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if line.strip() and not line.lstrip().startswith("#") and len(fields) >= 4 \
                and fields[2] != "initdefault":
            found.append(line.strip())
    return found


def _program(snap: Snapshot) -> tuple[Name | None, str | None]:
    """What /sbin/init says it is, and how it says it."""
    f = snap.get(SBIN_INIT)
    if f.real is not None and posixpath.basename(f.real) == "systemd":
        return "systemd", f"{SBIN_INIT} -> {f.real}"
    if f.data is None:
        return None, None
    kind = "ELF program" if f.data.startswith(b"\x7fELF") else "file"
    for name, mark in _SELF:
        m = mark.search(f.data)
        if m:
            where = f"{SBIN_INIT}" + (f" -> {f.real}" if f.real else "")
            return name, f"{where}: {kind} naming '{m.group(0).decode('latin-1')}'"  # type: ignore[return-value]
    return None, f"{SBIN_INIT}: {kind} naming no init system"


def _configuration(snap: Snapshot) -> dict[Name, str]:
    """The init systems the configuration files point at, each with why."""
    found: dict[Name, str] = {}
    jobs = [posixpath.basename(j) for j in snap.glob(UPSTART_JOBS)]
    if jobs:
        shown = ", ".join(jobs[:4]) + (", ..." if len(jobs) > 4 else "")
        found["upstart"] = f"{len(jobs)} upstart job files in /etc/init ({shown})"
    inittab = snap.text(INITTAB)
    if inittab is not None:
        lines = active_inittab_lines(inittab)
        if lines:
            found["sysvinit"] = f"{INITTAB}: {len(lines)} active lines besides initdefault"
        elif jobs and re.search(r"^[^#:]*:\w*:initdefault:", inittab, re.MULTILINE):
            found["upstart"] += f"; {INITTAB} holds only the default runlevel"
    units = {d: n for d in SYSTEMD_DIRS
             if (n := sum(1 for p in snap.paths if p.startswith(d + "/") and p.endswith(_UNITS)))}
    if units:
        found["systemd"] = "systemd units: " + ", ".join(f"{n} in {d}" for d, n in units.items())
    return found


def detect(snap: Snapshot) -> InitSystem:
    """The init system of the guest whose /sbin/init, /etc/inittab and the
    listings of /etc/init and the systemd unit directories `snap` holds."""
    name, said = _program(snap)
    config = _configuration(snap)
    evidence = ([said] if said else []) + list(config.values())
    if name is not None:
        return InitSystem(name, tuple(evidence))
    if len(config) == 1:
        return InitSystem(next(iter(config)), tuple(evidence))
    nothing = f"no {SBIN_INIT}, {INITTAB}, upstart job or systemd unit"
    return InitSystem("unknown", tuple(evidence) or (nothing,))

"""The initrd assembles the root's md array (SAN/iQ 8: /dev/md200).

Debian's kernel has md as a module and autodetects no array, so the
initrd's mdadm does it: its local-block script (`mdadm --assemble --scan`)
and udev's incremental assembly (64-md-raid-assembly.rules), before the
root is mounted. Both name an array as mdadm.conf's ARRAY line for its UUID
says; an array that no line names is foreign to the dom0's HOMEHOST and
comes up as /dev/md127, so `root=/dev/md200` would never appear. The repack
puts that line into the initrd's etc/mdadm/mdadm.conf (every other line
kept byte for byte), and the drivers check asks for the array's RAID
personality and md_mod (added from the kernel's tree when missing, as
xen-blkfront is). An initrd without mdadm at all (a dom0 without mdadm
installed) is refused: its init could not assemble the array.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

CONF = "etc/mdadm/mdadm.conf"
# mdadm itself, and the script that runs it before the root is mounted
# (local-block since initramfs-tools 0.130, local-top before).
PROGRAMS = ("sbin/mdadm", "usr/sbin/mdadm")
SCRIPTS = ("scripts/local-block/mdadm", "scripts/local-top/mdadm")
# The module of each md level (raid4, raid5 and raid6 share raid456).
PERSONALITIES = {"raid0": "raid0", "raid1": "raid1", "raid10": "raid10", "raid4": "raid456",
                 "raid5": "raid456", "raid6": "raid456", "linear": "linear"}
_UUID_RE = re.compile(r"\buuid=([0-9a-f:]+)", re.I)


def array_line(name: str, metadata: str, uuid: str) -> str:
    return f"ARRAY {name} metadata={metadata} UUID={uuid}\n"


def needs(level: str) -> tuple[tuple[str, ...], ...]:
    """The drivers an array of `level` needs (each a tuple of alternatives)."""
    personality = PERSONALITIES.get(level)
    return ((personality,), ("md_mod",)) if personality else (("md_mod",),)


def with_array(text: str, line: str) -> str:
    """mdadm.conf with `line` (an ARRAY line) in place of any line naming
    the same UUID, at the end; every other line as it was."""
    uuid = _UUID_RE.search(line)
    assert uuid is not None, "an ARRAY line names the array's UUID"

    def same(existing: str) -> bool:
        found = _UUID_RE.search(existing)
        return existing.lstrip().startswith("ARRAY") and found is not None and \
            found.group(1).lower() == uuid.group(1).lower()

    kept = [x for x in text.splitlines(keepends=True) if not same(x)]
    if kept and not kept[-1].endswith("\n"):
        kept[-1] += "\n"
    return "".join(kept) + line


def missing(members: Iterable[bytes]) -> list[str]:
    """What the initrd lacks to assemble an array: mdadm, its script."""
    keys = {k.decode("utf-8", "replace") for k in members}
    return [what for what, paths in (("mdadm", PROGRAMS), ("its local-block script", SCRIPTS))
            if not keys.intersection(paths)]

"""Edit `udev`: /dev/scsi names for the Xen disks.

The VSA finds its system disk under /dev/scsi/host0/... and its data disks
under /dev/scsi/host1/..., names udev derives from SCSI addresses that xvd
disks do not have. A rule asks a small script for the name instead: xvda and
xvdb stand for host0, xvdc..xvdg for host1 (the table of the original hack).
The seed's script printed `disc` for partitions too; this one prints partN.
"""

from __future__ import annotations

from vsaimage.edits import Change, EditContext, Snapshot, StepPlan, decide
from vsaimage.edits.textfile import exact_write

RULES_PATH = "/etc/udev/rules.d/53-devfs-hack.rules"
SCRIPT_PATH = "/etc/udev/scripts/xvd-hack.sh"

# disk -> (SCSI host, target)
TABLE: dict[str, tuple[int, int]] = {
    "xvda": (0, 0),
    "xvdb": (0, 2),
    "xvdc": (1, 0),
    "xvdd": (1, 1),
    "xvde": (1, 2),
    "xvdf": (1, 3),
    "xvdg": (1, 4),
}

RULES = (
    "# vsaimage: /dev/scsi names for Xen disks (see xvd-hack.sh)\n"
    f'KERNEL=="xvd*", PROGRAM="{SCRIPT_PATH} %k", SYMLINK+="scsi/%c", MODE="0600"\n'
)

_CASES = "".join(f"{disk}*) host={h} target={t} ;;\n" for disk, (h, t) in TABLE.items())

# POSIX sh; exit 1 (udev then adds no link) for anything outside the table,
# for partition 0 and for numbers with a leading zero, which no kernel names.
SCRIPT = f"""#!/bin/sh
# vsaimage: print the /dev/scsi name of Xen disk $1 (udev PROGRAM= key):
# xvda/xvdb are SCSI host0 (system disk), xvdc..xvdg host1 (data disks).
case "$1" in
{_CASES}*) exit 1 ;;
esac
part=${{1#xvd?}}
case "$part" in
"") echo "host$host/bus0/target$target/lun0/disc" ;;
0*|*[!0-9]*) exit 1 ;;
*) echo "host$host/bus0/target$target/lun0/part$part" ;;
esac
"""


class Udev:
    name = "udev"
    title = "/dev/scsi names for xvd disks (udev rule and script)"

    def reads(self, ctx: EditContext) -> tuple[str, ...]:
        return (RULES_PATH, SCRIPT_PATH)

    def lists(self, ctx: EditContext) -> tuple[str, ...]:
        return ()

    def plan(self, snap: Snapshot, ctx: EditContext) -> StepPlan:
        changes: list[Change] = [
            *exact_write(snap, RULES_PATH, RULES.encode(), 0o644),
            *exact_write(snap, SCRIPT_PATH, SCRIPT.encode(), 0o755),
        ]
        return decide(self.name, changes, {"rules": RULES_PATH, "script": SCRIPT_PATH})

    def check(self, snap: Snapshot, ctx: EditContext) -> bool:
        return not self.plan(snap, ctx).changes

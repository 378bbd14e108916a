"""Edit `udev`: /dev/scsi names for the Xen disks.

The VSA finds its system disk under /dev/scsi/host0/... and its data disks
under /dev/scsi/host1/..., names udev derives from SCSI addresses that xvd
disks do not have. A rule asks a small script for the name instead: xvda
and xvdb stand for the system disk (the table of the original hack), xvdc,
xvdd, ... for the data-disk slots the VSA's platform file lists, in slot
order (vsa/slots.py: 5 on SAN/iQ 9.5, 7 from LeftHand OS 11.5 on). The
seed's script printed `disc` for partitions too; this one prints partN.
"""

from __future__ import annotations

from vsaimage.edits import Change, EditContext, Snapshot, StepPlan, decide
from vsaimage.edits.textfile import exact_write
from vsaimage.vsa import slots

RULES_PATH = "/etc/udev/rules.d/53-devfs-hack.rules"
SCRIPT_PATH = "/etc/udev/scripts/xvd-hack.sh"

RULES = (
    "# vsaimage: /dev/scsi names for Xen disks (see xvd-hack.sh)\n"
    f'KERNEL=="xvd*", PROGRAM="{SCRIPT_PATH} %k", SYMLINK+="scsi/%c", MODE="0600"\n'
)


def script(table: dict[str, slots.Address]) -> str:
    """The POSIX sh script printing the /dev/scsi name of each disk of
    `table` (disk -> SCSI host, bus, target, lun) and its partitions; exit
    1 (udev then adds no link) for anything outside the table, for
    partition 0 and for numbers with a leading zero, which no kernel names."""
    cases = "".join(f"{disk}*) host={h} bus={b} target={t} lun={lun} ;;\n"
                    for disk, (h, b, t, lun) in table.items())
    data = [d for d in table if d not in ("xvda", "xvdb")]
    return f"""#!/bin/sh
# vsaimage: print the /dev/scsi name of Xen disk $1 (udev PROGRAM= key):
# xvda/xvdb are the system disk, {data[0]}..{data[-1]} the VSA's data-disk slots.
case "$1" in
{cases}*) exit 1 ;;
esac
part=${{1#xvd?}}
case "$part" in
"") echo "host$host/bus$bus/target$target/lun$lun/disc" ;;
0*|*[!0-9]*) exit 1 ;;
*) echo "host$host/bus$bus/target$target/lun$lun/part$part" ;;
esac
"""


class Udev:
    name = "udev"
    title = "/dev/scsi names for xvd disks (udev rule and script)"

    def reads(self, ctx: EditContext) -> tuple[str, ...]:
        return (RULES_PATH, SCRIPT_PATH, *slots.READS)

    def lists(self, ctx: EditContext) -> tuple[str, ...]:
        return (slots.ROOT,)

    def plan(self, snap: Snapshot, ctx: EditContext) -> StepPlan:
        found = slots.find(snap)
        changes: list[Change] = [
            *exact_write(snap, RULES_PATH, RULES.encode(), 0o644),
            *exact_write(snap, SCRIPT_PATH, script(found.table()).encode(), 0o755),
        ]
        return decide(self.name, changes, {"rules": RULES_PATH, "script": SCRIPT_PATH,
                                           "slots": found.as_dict()})

    def check(self, snap: Snapshot, ctx: EditContext) -> bool:
        return not self.plan(snap, ctx).changes

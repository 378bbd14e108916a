"""Whether an initrd can mount the root under Xen: it needs xen-blkfront (the
disk) and the root filesystem's driver, each either as a module in the
initrd or built into the kernel (modules.builtin). A dom0's initrd made with
MODULES=dep on a host without Xen disks lacks the first. Pure: works on the
names of the initrd's members and the text of modules.builtin.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vsaimage.kmod.selection import module_name

XEN_BLOCK: tuple[str, ...] = ("xen_blkfront",)
# Since Linux 4.3 the ext4 driver also mounts ext2 and ext3 (the VSA's root).
FS_DRIVERS: dict[str, tuple[str, ...]] = {
    "ext2": ("ext4", "ext2"),
    "ext3": ("ext4", "ext3"),
    "ext4": ("ext4",),
    "xfs": ("xfs",),
    "btrfs": ("btrfs",),
    "reiserfs": ("reiserfs",),
}
@dataclass(frozen=True)
class DriverCheck:
    needed: tuple[tuple[str, ...], ...]  # each: alternatives, one of which must be there
    found: frozenset[str]

    @property
    def missing_needs(self) -> list[tuple[str, ...]]:
        """The needs none of whose drivers is there."""
        return [alts for alts in self.needed if not self.found.intersection(alts)]

    @property
    def missing(self) -> list[str]:
        """The first alternative of each need none of whose drivers is there."""
        return [alts[0] for alts in self.missing_needs]

    def as_dict(self) -> dict[str, object]:
        return {"needed": ["|".join(a) for a in self.needed], "missing": self.missing}


def check(members: Iterable[str], builtin: str, root_fstype: str,
          more: tuple[tuple[str, ...], ...] = ()) -> DriverCheck:
    """What an initrd with `members` (paths inside it) and a kernel whose
    modules.builtin reads `builtin` lack to mount a root of `root_fstype`;
    `more`: what the root's device needs besides (an md array's personality
    and md_mod), each a tuple of alternatives."""
    found = {name for m in members if "/modules/" in f"/{m}" and (name := module_name(m))}
    found |= {name for line in builtin.splitlines() if (name := module_name(line.strip()))}
    needed: list[tuple[str, ...]] = [XEN_BLOCK]
    if root_fstype in FS_DRIVERS:
        needed.append(FS_DRIVERS[root_fstype])
    return DriverCheck((*needed, *more), frozenset(found))

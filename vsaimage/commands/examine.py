"""What inspect and verify share: one read-only appliance launch on an image
(unpacked under TMPDIR when qemu cannot read it as it is), its partition
roles, every file the edits (and the xl config's identity and glibc)
read, and the line that says when the VSA's own upgrade made it boot a
system slot that is not converted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vsaimage.commands.options import Roles
from vsaimage.commands.planning import GUEST_FACTS
from vsaimage.edits import EditContext, Snapshot, udev
from vsaimage.guest import appliance as guest
from vsaimage.guest.layout import Layout, layout_lines, mount_layout
from vsaimage.inputs import unpack
from vsaimage.inputs.source import ImageSource
from vsaimage.plan import read_snapshot
from vsaimage.progress import Progress
from vsaimage.vsa import upgrade
from vsaimage.vsa.release import VERSION_FILE, vsa_version


def examine(image: ImageSource, roles: Roles, ctx: EditContext, rep: Progress, *,
             skip: frozenset[str] = frozenset(),
             also: Callable[[guest.Guest, Snapshot], None] | None = None,
             ) -> tuple[Layout, Snapshot, dict[str, Any]]:
    """One read-only launch; `also` reads more while the appliance is up.
    Returns the input's facts (format, virtual size) too."""
    with unpack.readable_disks(roles.disks(image), rep) as (drives, facts):
        with rep.phase("appliance launch"):
            g = guest.launch(drives, rep)
        with g, rep.phase("read image"):
            layout, snap = read(g, image, roles, ctx, rep, skip=skip, also=also)
    return layout, snap, facts


def read(g: guest.Guest, image: ImageSource, roles: Roles, ctx: EditContext, rep: Progress, *,
          skip: frozenset[str] = frozenset(),
          also: Callable[[guest.Guest, Snapshot], None] | None = None, drive: int = 0,
          ) -> tuple[Layout, Snapshot]:
    """The layout and snapshot of the appliance's `drive`-th disk."""
    layout = mount_layout(g, str(image), root_part=roles.root_part, boot_part=roles.boot_part, drive=drive,
                          disks=tuple(map(str, roles.disks(image))), degraded=roles.degraded,
                          mark=udev.RULES_PATH.lstrip("/"))
    for line in layout_lines(layout):
        rep.debug(line)
    snap = read_snapshot(g, ctx, skip=skip, extra=(VERSION_FILE, *GUEST_FACTS))
    notice = slot_notice(image, roles, layout, snap)
    if notice is not None:
        rep.warn(notice)
    if also is not None:
        also(g, snap)
    return layout, snap


def slot_notice(image: ImageSource, roles: Roles, layout: Layout, snap: Snapshot) -> str | None:
    """The line for a disk whose VSA upgraded itself into a slot that is
    not converted (the root its grub default entry chose, not --root-part);
    a converted root holds the udev edit's rules."""
    if roles.root_part is not None:
        return None
    return upgrade.unconverted_default(str(image), layout.root.partition.number, layout.slots,
                                       layout.marked, vsa_version(snap))

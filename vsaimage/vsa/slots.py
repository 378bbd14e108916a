"""The VSA's disk slots, from its platform description (platform.xml.vmw,
the one the platform edit links): where SAN/iQ looks for its system disk
and each data disk, as devfs-style /dev/scsi names. SAN/iQ 9.5 lists 5
data-disk slots; LeftHand OS 11.5 and later, 7.

Under Xen the system disk is xvda and the data disks xvdc, xvdd, ... in
slot order; the udev edit gives each the /dev/scsi name of its slot, and
the xl config attaches at most as many data disks as there are slots.
Pure: works on a Snapshot.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from vsaimage.model import Snapshot

ROOT = "/etc/lefthand"
VMW = "platform.xml.vmw"
READS = (f"{ROOT}/**/{VMW}",)
# The system disk's second name in the seed's table (SCSI host0 target2).
SECOND_SYSTEM = (0, 0, 2, 0)
# Without a platform file: the slots of LeftHand OS 11.5 and later (host1,
# targets 0..6), which cover SAN/iQ 9.5's five.
DEFAULT_SLOTS = tuple((1, 0, t, 0) for t in range(7))

_SCSI = re.compile(r"/dev/scsi/host(\d+)/bus(\d+)/target(\d+)/lun(\d+)/disc")

Address = tuple[int, int, int, int]  # host, bus, target, lun


@dataclass(frozen=True)
class Slots:
    source: str  # the platform file, or why the default slots are used
    system: Address
    data: tuple[Address, ...]  # in slot order

    def table(self) -> dict[str, Address]:
        """Xen disk -> SCSI address: xvda the system disk, xvdb its second
        name, xvdc.. the data disks."""
        names = [f"xvd{chr(ord('c') + n)}" for n in range(len(self.data))]
        return {"xvda": self.system, "xvdb": SECOND_SYSTEM, **dict(zip(names, self.data, strict=True))}

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "count": len(self.data),
                "slots": [{"xen": x, "scsi": scsi_name(a)} for x, a in self.table().items()
                          if x not in ("xvda", "xvdb")]}


def scsi_name(address: Address) -> str:
    host, bus, target, lun = address
    return f"/dev/scsi/host{host}/bus{bus}/target{target}/lun{lun}/disc"


def _address(path: str | None) -> Address | None:
    m = _SCSI.fullmatch(path or "")
    return (int(m[1]), int(m[2]), int(m[3]), int(m[4])) if m else None


def parse(text: str, where: str) -> Slots | None:
    """The slots a platform description lists; None when it names no
    /dev/scsi disk it could be given."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    system = next((a for d in root.iter("disk") if d.get("role") == "system"
                   if (a := _address(d.get("path"))) is not None), None)
    storage = [d for s in root.iter("storage") for d in s.iter("disk") if d.get("slot", "").isdigit()]
    data = [a for d in sorted(storage, key=lambda d: int(d.get("slot", "0")))
            if (a := _address(d.get("path"))) is not None]
    if system is None or not data:
        return None
    return Slots(where, system, tuple(data))


def find(snap: Snapshot) -> Slots:
    """The slots of the guest's platform.xml.vmw; the default ones (7) when
    there is not exactly one, or it lists none, saying why."""
    found = snap.glob(READS[0])
    if len(found) == 1:
        text = snap.text(found[0])
        slots = parse(text, found[0]) if text is not None else None
        if slots is not None:
            return slots
        why = f"{found[0]} lists no /dev/scsi disk"
    else:
        why = f"{len(found)} {VMW} under {ROOT}" + (f" ({', '.join(found)})" if found else "")
    return Slots(f"{why}: the default {len(DEFAULT_SLOTS)} slots", (0, 0, 0, 0), DEFAULT_SLOTS)


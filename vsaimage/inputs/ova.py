"""An OVA, the vendor's download: a tar holding an OVF descriptor and the
VM's disks (streamOptimized VMDKs, compressed, so small). The archive is read
with libarchive, never unpacked: the OVF says which disks the VM has, in the
order of its virtual hardware; the first is the system disk unless `--disk N`
chooses another, and only that member is written out, for qemu to read."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import libarchive
from libarchive.exception import ArchiveError

from vsaimage import cancel
from vsaimage.errors import ImageError, write_error

_OVF = "http://schemas.dmtf.org/ovf/envelope/1"
_RASD = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
_DISK_DRIVE = "17"  # CIM ResourceType of a disk drive


@dataclass(frozen=True)
class OvaDisk:
    disk_id: str
    file: str  # the member's name in the archive
    capacity: int | None  # bytes, as the OVF declares it
    controller: str | None = None  # the InstanceID of the controller its Item names as rasd:Parent

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.disk_id, "file": self.file, "capacity": self.capacity,
                "controller": self.controller}


@dataclass(frozen=True)
class Ova:
    path: Path
    descriptor: str  # the .ovf member's name
    vm_name: str | None
    disks: tuple[OvaDisk, ...]  # in the VM's hardware order
    chosen: int  # 1-based index into disks

    @property
    def system_disk(self) -> OvaDisk:
        return self.disks[self.chosen - 1]

    @property
    def fellows(self) -> tuple[int, ...]:
        """The other system disks (1-based, in the VM's order): those on the
        chosen disk's controller (SAN/iQ 8: SCSI 0:0 and 0:1; its data disks
        are on SCSI 1). None when the OVF does not say the controller."""
        controller = self.system_disk.controller
        if controller is None:
            return ()
        return tuple(n for n, d in enumerate(self.disks, start=1)
                     if n != self.chosen and d.controller == controller)

    def as_dict(self) -> dict[str, Any]:
        return {"descriptor": self.descriptor, "vm_name": self.vm_name,
                "disks": [d.as_dict() for d in self.disks], "system_disk": self.chosen,
                "system_disks": [self.chosen, *self.fellows]}


def read_ova(path: Path, disk: int | None = None) -> Ova:
    """The OVF of the OVA at `path`, checked against the archive's members."""
    members: set[str] = set()
    descriptor: tuple[str, bytes] | None = None
    try:
        with libarchive.file_reader(str(path)) as archive:
            for entry in archive:
                name = _norm(entry.pathname)
                members.add(name)
                if descriptor is None and name.lower().endswith(".ovf"):
                    descriptor = (name, b"".join(entry.get_blocks()))
    except ArchiveError as e:
        raise ImageError(f"{path}: cannot read the OVA's tar: {_first_line(e)}") from None
    if descriptor is None:
        raise ImageError(f"{path}: no OVF descriptor (*.ovf) in the OVA",
                         hint="an OVA is a tar holding NAME.ovf and the disks it names")
    name, text = descriptor
    vm_name, disks = _parse(path, name, text)
    if not disks:
        raise ImageError(f"{path}: the OVF {name} declares no disk")
    for d in disks:
        if d.file not in members:
            raise ImageError(f"{path}: the OVF {name} names disk file {d.file!r}, "
                             "which is not in the archive",
                             hint="the OVA is incomplete; download it again")
    chosen = disk or 1
    if not 1 <= chosen <= len(disks):
        raise ImageError(f"{path}: --disk {chosen}: the VM has {len(disks)} disk(s)")
    return Ova(path, name, vm_name, tuple(disks), chosen)


def extract(ova: Ova, dst: Path, *, label: Path) -> None:
    """Write the chosen disk's member to `dst` (the only bytes unpacked)."""
    want = ova.system_disk.file
    try:
        with libarchive.file_reader(str(ova.path)) as archive, open(dst, "wb") as out:
            for entry in archive:
                if _norm(entry.pathname) == want:
                    for block in entry.get_blocks():
                        cancel.check()
                        out.write(block)
                    return
    except ArchiveError as e:
        raise ImageError(f"{ova.path}: cannot read {want} from the OVA: {_first_line(e)}") from None
    except OSError as e:
        raise write_error(label, e) from e
    raise ImageError(f"{ova.path}: {want} vanished from the OVA while reading it")


def _parse(path: Path, name: str, text: bytes) -> tuple[str | None, list[OvaDisk]]:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise ImageError(f"{path}: the OVF {name} is not XML: {e}") from None
    ns = {"ovf": _OVF, "rasd": _RASD}
    files = {f.get(f"{{{_OVF}}}id"): f.get(f"{{{_OVF}}}href")
             for f in root.iterfind("ovf:References/ovf:File", ns)}
    declared: dict[str, OvaDisk] = {}
    for d in root.iterfind("ovf:DiskSection/ovf:Disk", ns):
        disk_id, ref = d.get(f"{{{_OVF}}}diskId") or "", d.get(f"{{{_OVF}}}fileRef")
        href = files.get(ref)
        if href is None:
            raise ImageError(f"{path}: the OVF {name}: disk {disk_id!r} refers to no file in its References")
        declared[disk_id] = OvaDisk(disk_id, _norm(href), _capacity(d))
    system = root.find("ovf:VirtualSystem", ns)
    vm_name = None
    ordered: list[OvaDisk] = []
    if system is not None:
        vm_name = system.findtext("ovf:Name", namespaces=ns) or system.get(f"{{{_OVF}}}id")
        for item in system.iterfind(".//ovf:VirtualHardwareSection/ovf:Item", ns):
            if item.findtext("rasd:ResourceType", namespaces=ns) != _DISK_DRIVE:
                continue
            ref = (item.findtext("rasd:HostResource", namespaces=ns) or "").rsplit("/", 1)[-1]
            if ref in declared and declared[ref] not in ordered:
                parent = item.findtext("rasd:Parent", namespaces=ns)
                declared[ref] = replace(declared[ref], controller=parent.strip() if parent else None)
                ordered.append(declared[ref])
    # disks the hardware section does not attach come after, as declared
    return vm_name, ordered + [d for d in declared.values() if d not in ordered]


def _capacity(disk: ET.Element) -> int | None:
    """ovf:capacity in ovf:capacityAllocationUnits (default bytes), e.g.
    "byte * 2^30"."""
    value = disk.get(f"{{{_OVF}}}capacity")
    if value is None or not value.isdigit():
        return None
    unit = (disk.get(f"{{{_OVF}}}capacityAllocationUnits") or "byte").replace(" ", "")
    factor = 1
    if unit.startswith("byte*"):
        base, _, exp = unit.removeprefix("byte*").partition("^")
        factor = int(base) ** int(exp or 1) if base.isdigit() and (exp or "1").isdigit() else 1
    return int(value) * factor


def _norm(name: str) -> str:
    return name.removeprefix("./")


def _first_line(e: ArchiveError) -> str:
    return (str(getattr(e, "msg", "") or e).splitlines() or ["unknown libarchive error"])[0]

"""Finding partition roles by content, and reading the facts the plan needs.

Runs inside an already launched appliance (guest.py); never writes. The root
is the partition whose filesystem holds /etc/lefthand/ and /etc/inittab; the
boot partition is what the root's fstab mounts on /boot, else the first
partition with a kernel at its top.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vsaimage.edits import EditContext, Snapshot
from vsaimage.edits.catalog import ALL as ALL_EDITS
from vsaimage.errors import ImageError
from vsaimage.guest import Guest, Partition

# Filesystems a VSA root or boot partition can be; others are never mounted.
_MOUNTABLE = ("ext2", "ext3", "ext4", "xfs", "btrfs", "reiserfs", "vfat")
_KERNEL_RE = re.compile(r"^(vmlinuz|bzImage)")


@dataclass(frozen=True)
class Role:
    partition: Partition
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"partition": self.partition.number, "device": self.partition.device,
                "reason": self.reason}


@dataclass(frozen=True)
class Layout:
    device: str
    partitions: tuple[Partition, ...]
    root: Role
    boot: Role | None


def find_layout(guest: Guest, image: str, *, root_part: int | None = None,
                boot_part: int | None = None) -> Layout:
    devices = guest.devices()
    device = devices[0]
    parts = guest.partitions(device)
    if not parts:
        raise ImageError(f"{image}: no partitions found",
                         hint="give the whole disk (dd of /dev/sdX), not one partition")
    by_num = {p.number: p for p in parts}

    if root_part is not None:
        if root_part not in by_num:
            raise ImageError(f"{image}: --root-part {root_part}: no such partition "
                             f"(have {', '.join(str(n) for n in by_num)})")
        root = Role(by_num[root_part], "given with --root-part")
    else:
        root = _find_root(guest, image, parts)

    guest.mount(root.partition.device, "/", readonly=True)
    try:
        fstab = guest.read("/etc/fstab").data
    finally:
        guest.umount_all()

    if boot_part is not None:
        if boot_part not in by_num:
            raise ImageError(f"{image}: --boot-part {boot_part}: no such partition")
        boot: Role | None = Role(by_num[boot_part], "given with --boot-part")
    else:
        boot = _find_boot(guest, parts, root.partition, fstab)
    return Layout(device, tuple(parts), root, boot)


def _candidates(parts: Iterable[Partition]) -> list[Partition]:
    return [p for p in parts if p.fstype in _MOUNTABLE]


def _find_root(guest: Guest, image: str, parts: Sequence[Partition]) -> Role:
    found = []
    for p in _candidates(parts):
        try:
            guest.mount(p.device, "/", readonly=True)
        except Exception:
            continue
        try:
            if guest.is_dir("/etc/lefthand") and guest.exists("/etc/inittab"):
                found.append(p)
        finally:
            guest.umount_all()
    if not found:
        fs = ", ".join(f"{p.number}:{p.fstype or '?'}" for p in parts)
        raise ImageError(f"{image}: no partition holds a VSA root (/etc/lefthand and /etc/inittab); "
                         f"partitions: {fs}", hint="use --root-part N if the root is there but unusual")
    if len(found) > 1:
        nums = ", ".join(str(p.number) for p in found)
        raise ImageError(f"{image}: several partitions look like a VSA root: {nums}",
                         hint="choose one with --root-part N")
    return Role(found[0], "holds /etc/lefthand and /etc/inittab")


def fstab_boot_source(fstab: bytes | None) -> str | None:
    """The device field of the /boot line of an fstab, if any."""
    if not fstab:
        return None
    for line in fstab.decode("latin-1").splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#") and fields[1] == "/boot":
            return fields[0]
    return None


def _resolve(source: str, parts: Sequence[Partition]) -> Partition | None:
    key, _, value = source.partition("=")
    if key == "LABEL" and value:
        return next((p for p in parts if p.label == value), None)
    if key == "UUID" and value:
        return next((p for p in parts if p.uuid.lower() == value.lower()), None)
    m = re.fullmatch(r"/dev/(?:[sh]d[a-z]|xvd[a-z]|vd[a-z])(\d+)", source)
    if m:
        return next((p for p in parts if p.number == int(m.group(1))), None)
    return None


def _find_boot(guest: Guest, parts: Sequence[Partition], root: Partition,
               fstab: bytes | None) -> Role | None:
    source = fstab_boot_source(fstab)
    if source:
        p = _resolve(source, parts)
        if p is not None:
            return Role(p, f"/boot in the root's fstab is {source}")
    for p in _candidates(parts):
        if p.number == root.number:
            continue
        try:
            guest.mount(p.device, "/", readonly=True)
        except Exception:
            continue
        try:
            if any(_KERNEL_RE.match(name) for name in guest.ls("/")):
                return Role(p, "first partition with a kernel at its top")
        finally:
            guest.umount_all()
    return None


def boot_kernels(guest: Guest, boot: Role | None) -> list[str]:
    if boot is None:
        return []
    guest.mount(boot.partition.device, "/", readonly=True)
    try:
        return sorted(n for n in guest.ls("/") if _KERNEL_RE.match(n))
    finally:
        guest.umount_all()


def read_snapshot(guest: Guest, ctx: EditContext, *, extra: Sequence[str] = ()) -> Snapshot:
    """Read, with the root mounted at /, every file and listing the edits need."""
    reads: list[str] = list(extra)
    lists: list[str] = []
    for edit in ALL_EDITS:
        reads.extend(edit.reads(ctx))
        lists.extend(edit.lists(ctx))
    paths: set[str] = set()
    for d in dict.fromkeys(lists):
        paths.update(guest.find(d))
    return Snapshot(guest.read_many(list(dict.fromkeys(reads))), frozenset(paths))


def vsa_version(snap: Snapshot) -> str | None:
    text = snap.text(VERSION_FILE)
    return text.strip() or None if text is not None else None


def module_versions(snap: Snapshot) -> list[str]:
    return sorted({p.split("/")[3] for p in snap.paths
                   if p.startswith("/lib/modules/") and p.count("/") >= 3})


VERSION_FILE = "/etc/lefthand/.version"

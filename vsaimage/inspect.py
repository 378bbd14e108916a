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

from vsaimage import grubconf
from vsaimage.edits import EditContext, PartitionFacts, Snapshot
from vsaimage.edits.catalog import ALL as ALL_EDITS
from vsaimage.errors import ApplianceError, ImageError
from vsaimage.guest import Guest, Partition

# The VSA's grub config on a mounted boot partition, or in a root without one.
_GRUB_CONFIGS = ("/vsaimage-p*/grub/grub.conf", "/vsaimage-p*/boot/grub/grub.conf")
# Filesystems a VSA root or boot partition can be; others are never mounted.
_MOUNTABLE = ("ext2", "ext3", "ext4", "xfs", "btrfs", "reiserfs", "vfat")


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
    """Find the root and boot partitions. Every candidate filesystem is mounted
    read-only at once, so one glob looks into all of them; the root stays
    mounted (read-only) and becomes the guest's path prefix."""
    device = guest.devices()[0]
    parts = guest.partitions(device)
    if not parts:
        raise ImageError(f"{image}: no partitions found",
                         hint="give the whole disk (dd of /dev/sdX), not one partition")
    by_num = {p.number: p for p in parts}
    for flag, n in (("--root-part", root_part), ("--boot-part", boot_part)):
        if n is not None and n not in by_num:
            raise ImageError(f"{image}: {flag} {n}: no such partition "
                             f"(have {', '.join(str(k) for k in by_num)})")

    mounted = []
    for p in _candidates(parts):
        try:
            guest.mount(p, readonly=True)
            mounted.append(p)
        except ApplianceError:
            continue  # a damaged or foreign filesystem is simply not a candidate

    if root_part is not None:
        root = Role(by_num[root_part], "given with --root-part")
        if root.partition not in mounted:
            guest.mount(root.partition, readonly=True)
    else:
        root = _find_root(guest, image, parts, mounted)
    guest.use_root(root.partition)

    if boot_part is not None:
        boot: Role | None = Role(by_num[boot_part], "given with --boot-part")
    else:
        boot = _find_boot(guest, parts, mounted, root.partition, guest.read("/etc/fstab").data)
    return Layout(device, tuple(parts), root, boot)


def facts(p: Partition) -> PartitionFacts:
    return PartitionFacts(p.number, p.fstype, p.label, p.uuid)


def partition_facts(layout: Layout) -> tuple[PartitionFacts, ...]:
    """What the edits may know of the system disk's partitions."""
    return tuple(facts(p) for p in layout.partitions)


def _candidates(parts: Iterable[Partition]) -> list[Partition]:
    return [p for p in parts if p.fstype in _MOUNTABLE]


def _holding(guest: Guest, mounted: Sequence[Partition], pattern: str) -> list[Partition]:
    """The mounted partitions in which `pattern` (a glob) matches something."""
    hits = guest.glob(f"/vsaimage-p*/{pattern}")
    nums = {int(h.split("/")[1].removeprefix("vsaimage-p")) for h in hits}
    return [p for p in mounted if p.number in nums]


def _find_root(guest: Guest, image: str, parts: Sequence[Partition],
               mounted: Sequence[Partition]) -> Role:
    with_lefthand = _holding(guest, mounted, "etc/lefthand/")
    with_inittab = set(_holding(guest, mounted, "etc/inittab"))
    found = [p for p in with_lefthand if p in with_inittab]
    if not found:
        fs = ", ".join(f"{p.number}:{p.fstype or '?'}" for p in parts)
        raise ImageError(f"{image}: no partition holds a VSA root (/etc/lefthand and /etc/inittab); "
                         f"partitions: {fs}", hint="use --root-part N if the root is there but unusual")
    if len(found) > 1:
        # an upgrade fills the other system slot: the VSA's grub default entry says which is live
        configs = {c: data.decode("latin-1") for pattern in _GRUB_CONFIGS for c in guest.glob(pattern)
                   if (data := guest.read(c).data) is not None}
        number, why = grubconf.choose_slot([facts(p) for p in found], configs)
        if number is None:
            raise ImageError(f"{image}: several partitions look like a VSA root ({why})",
                             hint="choose one with --root-part N")
        return Role(next(p for p in found if p.number == number), why)
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


def _find_boot(guest: Guest, parts: Sequence[Partition], mounted: Sequence[Partition],
               root: Partition, fstab: bytes | None) -> Role | None:
    source = fstab_boot_source(fstab)
    if source:
        p = _resolve(source, parts)
        if p is not None:
            return Role(p, f"/boot in the root's fstab is {source}")
    others = [p for p in mounted if p != root]
    with_kernel = set(_holding(guest, others, "vmlinuz*")) | set(_holding(guest, others, "bzImage*"))
    first = next((p for p in others if p in with_kernel), None)
    return Role(first, "first partition with a kernel at its top") if first else None


def boot_kernels(guest: Guest, boot: Role | None) -> list[str]:
    if boot is None:
        return []
    top = guest.mountpoint(boot.partition)
    return sorted(h.rsplit("/", 1)[1] for pattern in ("vmlinuz*", "bzImage*")
                  for h in guest.glob(f"{top}/{pattern}"))


def listing_roots(paths: Iterable[str], lists: Iterable[str]) -> list[str]:
    """The directories to list so that every path in `paths` is either found
    or known to be absent: the requested listings, plus each path's top-level
    directory (two levels under /lib, /usr and /var, which are large)."""
    roots = set(lists)
    for p in paths:
        parts = p.strip("/").split("/")
        depth = 2 if parts[0] in ("lib", "usr", "var") and len(parts) > 2 else 1
        roots.add("/" + "/".join(parts[:depth]))
    ordered = sorted(roots)
    return [r for r in ordered if not any(r.startswith(o + "/") for o in ordered if o != r)]


def read_snapshot(guest: Guest, ctx: EditContext, *, extra: Sequence[str] = ()) -> Snapshot:
    """Read, under the guest's root, every file and listing the edits need."""
    reads: list[str] = list(extra)
    lists: list[str] = []
    for edit in ALL_EDITS:
        reads.extend(edit.reads(ctx))
        lists.extend(edit.lists(ctx))
    reads = list(dict.fromkeys(reads))
    paths: set[str] = set()
    for d in listing_roots(reads, lists):
        paths.update(guest.find(d))
    return Snapshot(guest.read_many(reads, paths), frozenset(paths))


def vsa_version(snap: Snapshot) -> str | None:
    text = snap.text(VERSION_FILE)
    return text.strip() or None if text is not None else None


def module_versions(snap: Snapshot) -> list[str]:
    """The directories under /lib/modules (one per kernel version)."""
    return sorted({p.split("/")[3] for p in snap.paths if p.startswith("/lib/modules/")})


VERSION_FILE = "/etc/lefthand/.version"

"""Finding partition roles by content, and reading the facts the plan needs.

Runs inside an already launched appliance (appliance.py), through its
public methods, and leaves the roles mounted (mount_layout): never writes,
but the root is mounted read-write for a convert. The root is the partition whose filesystem holds
/etc/lefthand/ and /etc/inittab as the VSA sees them; the boot partition is
what the root's fstab mounts on /boot, else the first partition with a
kernel at its top.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vsaimage.errors import GuestPathError, ImageError
from vsaimage.model import PartitionFacts
from vsaimage.vsa import grubconf

if TYPE_CHECKING:  # appliance.py imports guestfs; only the commands that launch it load it
    from vsaimage.guest.appliance import Guest, Partition, Probe

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
    kernels: tuple[str, ...] = ()  # vmlinuz*/bzImage* at the top of the boot partition
    # partitions that look like a VSA root: two system slots once the VSA
    # upgraded itself (its grub default entry then chose the root)
    slots: tuple[int, ...] = ()
    marked: tuple[int, ...] = ()  # partitions holding mount_layout's `mark`


# What marks a VSA root, and a kernel at the top of a boot partition (globs).
_ROOT_MARKS = ("etc/lefthand", "etc/inittab")
_KERNELS = ("vmlinuz*", "bzImage*")
# The VSA's grub config on a boot partition, or in a root without one.
_GRUB_CONFIGS = ("grub/grub.conf", "boot/grub/grub.conf")


def mount_layout(guest: Guest, image: str, *, root_part: int | None = None,
                boot_part: int | None = None, writable: bool = False, drive: int = 0,
                mark: str | None = None) -> Layout:
    """Find the root and boot partitions of the appliance's `drive`-th disk
    (several are attached when several images share a launch), and mount
    them as the running VSA does: the root at / (writable when asked), the
    boot partition where the root's fstab puts it. Every guest path then
    resolves as inside the VSA, until Guest.unmount_all. `mark`: a path
    (from a filesystem's top) whose partitions the layout lists, found in
    the same probe."""
    device = guest.devices()[drive]
    parts = guest.partitions(device)
    if not parts:
        raise ImageError(f"{image}: no partitions found",
                         hint="give the whole disk (dd of /dev/sdX), not one partition")
    by_num = {p.number: p for p in parts}
    for flag, n in (("--root-part", root_part), ("--boot-part", boot_part)):
        if n is not None and n not in by_num:
            raise ImageError(f"{image}: {flag} {n}: no such partition "
                             f"(have {', '.join(str(k) for k in by_num)})")

    marks = (mark,) if mark is not None else ()
    probe = guest.probe(_candidates(parts), (*_ROOT_MARKS, *_KERNELS, *_GRUB_CONFIGS, *marks))
    if root_part is not None:
        root = Role(by_num[root_part], "given with --root-part")
    else:
        root = _find_root(guest, image, parts, probe)
    guest.mount(root.partition, writable=writable)

    mounts = fstab_mounts(guest.read("/etc/fstab").data)
    if boot_part is not None:
        boot: Role | None = Role(by_num[boot_part], "given with --boot-part")
    else:
        boot = _find_boot(parts, probe, root.partition, mounts)
    kernels: tuple[str, ...] = ()
    mounted = {"/"}
    if boot is not None:
        where = next((mp for mp, src in mounts.items() if _named(src, parts) == boot.partition), "/boot")
        if guest.resolve(where).kind == "dir":
            # read-only until an edit writes there (Guest.make_writable)
            guest.mount(boot.partition, where)
            mounted.add(where)
        kernels = tuple(sorted(name for pattern in _KERNELS
                               for name in probe.hits[pattern].get(boot.partition.number, [])))
    # the VSA's other filesystems (/var/log, ...) are not mounted: a path
    # into one would land in the root's directory that it hides
    guest.fence([mp for mp in mounts if mp not in mounted])
    slots = tuple(p.number for p in parts if all(p.number in probe.hits[m] for m in _ROOT_MARKS))
    return Layout(device, tuple(parts), root, boot, kernels, slots,
                  tuple(sorted(probe.hits[mark])) if mark is not None else ())


def layout_lines(layout: Layout) -> list[str]:
    """The roles found and why, as -v shows them."""
    boot = layout.boot
    return [f"root: partition {layout.root.partition.number} ({layout.root.reason})",
            f"boot: partition {boot.partition.number} ({boot.reason})" if boot else "boot: none found"]


def facts(p: Partition) -> PartitionFacts:
    return PartitionFacts(p.number, p.fstype, p.label, p.uuid)


def partition_facts(layout: Layout) -> tuple[PartitionFacts, ...]:
    """What the edits may know of the system disk's partitions."""
    return tuple(facts(p) for p in layout.partitions)


def _candidates(parts: Iterable[Partition]) -> list[Partition]:
    return [p for p in parts if p.fstype in _MOUNTABLE]


def _is_root(guest: Guest, part: Partition) -> bool:
    """Whether `part`, mounted at /, holds /etc/lefthand and /etc/inittab as
    the VSA sees them (through symlinks, which the probe does not follow)."""
    guest.mount(part)
    try:
        return guest.resolve("/etc/lefthand").kind == "dir" and guest.resolve("/etc/inittab").kind == "file"
    except GuestPathError:
        return False
    finally:
        guest.unmount_all()


def _find_root(guest: Guest, image: str, parts: Sequence[Partition], probe: Probe) -> Role:
    marked = [p for p in parts if all(p.number in probe.hits[m] for m in _ROOT_MARKS)]
    found = [p for p in marked if _is_root(guest, p)]
    if not found:
        fs = ", ".join(f"{p.number}:{p.fstype or '?'}" for p in parts)
        raise ImageError(f"{image}: no partition holds a VSA root (/etc/lefthand and /etc/inittab); "
                         f"partitions: {fs}", hint="use --root-part N if the root is there but unusual")
    if len(found) > 1:
        # an upgrade fills the other system slot: the VSA's grub default entry says which is live
        number, why = grubconf.choose_slot([facts(p) for p in found], _grub_configs(guest, parts, probe))
        if number is None:
            raise ImageError(f"{image}: several partitions look like a VSA root ({why})",
                             hint="choose one with --root-part N")
        return Role(next(p for p in found if p.number == number), why)
    return Role(found[0], "holds /etc/lefthand and /etc/inittab")


def _grub_configs(guest: Guest, parts: Sequence[Partition], probe: Probe) -> dict[str, str]:
    """The grub configs the probe saw, each read with its partition mounted
    at /, by where they were found."""
    configs: dict[str, str] = {}
    for pattern in _GRUB_CONFIGS:
        for p in parts:
            if p.number not in probe.hits[pattern]:
                continue
            guest.mount(p)
            try:
                data = guest.read(f"/{pattern}").data
            finally:
                guest.unmount_all()
            if data is not None:
                configs[f"/{pattern} on partition {p.number}"] = data.decode("latin-1")
    return configs


def fstab_mounts(fstab: bytes | None) -> dict[str, str]:
    """Mount point -> device field of the active lines of an fstab."""
    mounts: dict[str, str] = {}
    for line in (fstab or b"").decode("latin-1").splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#") and fields[1].startswith("/"):
            mounts.setdefault(fields[1], fields[0])
    return mounts


def _named(source: str, parts: Sequence[Partition]) -> Partition | None:
    """The partition a device spec of the fstab names (the first, for a
    label two filesystems share)."""
    return next((p for p in parts if grubconf.matches(source, facts(p))), None)


def _find_boot(parts: Sequence[Partition], probe: Probe, root: Partition,
               mounts: dict[str, str]) -> Role | None:
    source = mounts.get("/boot")
    if source:
        p = _named(source, parts)
        if p is not None:
            return Role(p, f"/boot in the root's fstab is {source}")
    with_kernel = {n for pattern in _KERNELS for n in probe.hits[pattern]}
    first = next((p for p in parts if p != root and p.number in with_kernel), None)
    return Role(first, "first partition with a kernel at its top") if first else None

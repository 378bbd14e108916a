"""Finding partition roles by content, and reading the facts the plan needs.

Runs inside an already launched appliance (appliance.py), through its
public methods, and leaves the roles mounted (mount_layout): never writes,
but the root is mounted read-write for a convert. The root is the partition whose filesystem holds
/etc/lefthand/ and /etc/inittab as the VSA sees them; the boot partition is
what the root's fstab mounts on /boot, else the first partition with a
kernel at its top; when there is none and the root's /boot holds a kernel
(LeftHand OS 12), /boot is a directory of the root.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vsaimage.errors import GuestPathError, ImageError
from vsaimage.guest import md
from vsaimage.model import PartitionFacts
from vsaimage.vsa import grubconf, syslinux

if TYPE_CHECKING:  # appliance.py imports guestfs; only the commands that launch it load it
    from vsaimage.guest.appliance import Guest, Partition, Probe

# Filesystems a VSA root or boot partition can be; others are never mounted.
_MOUNTABLE = ("ext2", "ext3", "ext4", "xfs", "btrfs", "reiserfs", "vfat")


@dataclass(frozen=True)
class Role:
    partition: Partition
    reason: str

    def as_dict(self) -> dict[str, object]:
        p = self.partition
        return {"partition": None if p.array else p.number, "device": p.device, "reason": self.reason,
                **({"array": p.array} if p.array else {})}


@dataclass(frozen=True)
class Layout:
    device: str
    partitions: tuple[Partition, ...]
    root: Role
    boot: Role | None  # None: /boot is the root's own directory (see kernels)
    kernels: tuple[str, ...] = ()  # vmlinuz*/bzImage* in /boot (the boot partition's top, or the root's)
    array: md.Array | None = None  # the md array the root is on
    disks: tuple[str, ...] = ()  # the image's system disks as the user named them, xvda's first
    # partitions that look like a VSA root: two system slots once the VSA
    # upgraded itself (its grub default entry then chose the root)
    slots: tuple[int, ...] = ()
    marked: tuple[int, ...] = ()  # partitions holding mount_layout's `mark`

    @property
    def boot_in_root(self) -> bool:
        """/boot is a directory of the root holding the kernels, not a partition."""
        return self.boot is None and bool(self.kernels)


# md arrays are keyed among the partitions by numbers from here on (no MBR
# or GPT partition has one): the probe and the roles treat them alike.
ARRAY_BASE = 1000


# What marks a VSA root, and a kernel at the top of a boot partition (globs).
_ROOT_MARKS = ("etc/lefthand", "etc/inittab")
_KERNELS = ("vmlinuz*", "bzImage*")
_ROOT_KERNELS = tuple(f"boot/{k}" for k in _KERNELS)
# The VSA's grub config on a boot partition, or in a root without one; its
# SYSLINUX-family config (SAN/iQ 8) wherever those loaders look, in one glob.
_GRUB_CONFIGS = ("grub/grub.conf", "boot/grub/grub.conf")
_SYSLINUX_CONFIGS = ("{" + ",".join(d + "/" if d else "" for d in syslinux.DIRECTORIES) + "}"
                     "{" + ",".join(syslinux.NAMES) + "}")
_BOOT_CONFIGS = (*_GRUB_CONFIGS, _SYSLINUX_CONFIGS)


def mount_layout(guest: Guest, image: str, *, root_part: int | None = None,
                 boot_part: int | None = None, writable: bool = False, drive: int = 0,
                 disks: tuple[str, ...] = (), degraded: bool = False, mark: str | None = None) -> Layout:
    """Find the root and boot partitions of the appliance's `drive`-th disk
    (several are attached when several images share a launch), and mount
    them as the running VSA does: the root at / (writable when asked), the
    boot partition where the root's fstab puts it. Every guest path then
    resolves as inside the VSA, until Guest.unmount_all. `disks`: the
    image's system disks as the user named them, attached from `drive` on
    in that order; the root may be an md array over them, refused when it
    misses a member unless `degraded`. `mark`: a path (from a filesystem's
    top) whose partitions the layout lists, found in the same probe."""
    names = disks or (image,)
    devices = guest.devices()[drive:drive + len(names)]
    device = devices[0]
    parts = guest.partitions(device)
    others = [(p.device, p.fstype) for d in devices[1:] for p in guest.partitions(d)]
    arrays, lone = md.settled(guest, devices, [*((p.device, p.fstype) for p in parts), *others], names)
    volumes = [guest.volume(a.device, ARRAY_BASE + n, a.name) for n, a in enumerate(arrays)]
    if degraded and lone:
        guest.release([x.member.device for x in lone])
        volumes += [guest.volume(x.member.device, ARRAY_BASE + len(volumes) + n, x.name, member_fs=x.fstype)
                    for n, x in enumerate(lone) if x.fstype is not None]
    if not parts:
        raise ImageError(f"{image}: no partitions found",
                         hint="give the whole disk (dd of /dev/sdX), not one partition")
    by_num = {p.number: p for p in parts}
    for flag, n in (("--root-part", root_part), ("--boot-part", boot_part)):
        if n is not None and n not in by_num:
            raise ImageError(f"{image}: {flag} {n}: no such partition "
                             f"(have {', '.join(str(k) for k in by_num)})")

    marks = (mark,) if mark is not None else ()
    probe = guest.probe(_candidates([*parts, *volumes]),
                        (*_ROOT_MARKS, *_KERNELS, *_ROOT_KERNELS, *_BOOT_CONFIGS, *marks))
    if root_part is not None:
        root = Role(by_num[root_part], "given with --root-part")
    else:
        try:
            root = _find_root(guest, image, [*parts, *volumes], probe)
        except ImageError:
            if lone and not degraded:
                raise _lone_error(lone, names) from None
            raise
    if root.partition.member:
        root = Role(root.partition, f"{root.reason}; a lone member of its md array (--degraded)")
    array = next((a for a, v in zip(arrays, volumes[:len(arrays)], strict=True) if v == root.partition), None)
    if array is not None:
        _check_members(array, names, degraded)
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
    else:
        kernels = tuple(sorted(name.removeprefix("boot/") for pattern in _ROOT_KERNELS
                               for name in probe.hits[pattern].get(root.partition.number, [])))
    # the VSA's other filesystems (/var/log, ...) are not mounted: a path
    # into one would land in the root's directory that it hides
    guest.fence([mp for mp in mounts if mp not in mounted])
    slots = tuple(p.number for p in parts if all(p.number in probe.hits[m] for m in _ROOT_MARKS))
    return Layout(device, tuple(parts), root, boot, kernels, array, names, slots,
                  tuple(sorted(probe.hits[mark])) if mark is not None else ())


def _lone_error(lone: Sequence[md.Lone], disks: tuple[str, ...]) -> ImageError:
    """No root on the partitions, and md members whose arrays were not
    assembled: their other members are missing."""
    return ImageError(
        f"{disks[0]}: no VSA root on its partitions, and {'; '.join(x.describe(disks) for x in lone)}, "
        "whose other members are not attached",
        hint="give the VM's other system disks with --system-disk IMG, in the VM's order "
             "(or --degraded to convert one member alone, where its data starts at offset 0: "
             "metadata 0.90 or 1.0)")


def _check_members(array: md.Array, disks: tuple[str, ...], degraded: bool) -> None:
    """A root array missing a member is refused unless --degraded: the
    converted half would differ from the other at its next assembly."""
    if not array.degraded or degraded:
        return
    found = ", ".join(f"{disks[m.disk]} partition {m.partition}" for m in array.members)
    raise ImageError(
        f"{disks[0]}: the root is on md array {array.name} ({array.level}, uuid {array.uuid}) of "
        f"{array.raid_disks} members, and only {len(array.members)} is attached: {found}",
        hint="give the VM's other system disks with --system-disk IMG, in the VM's order "
             "(or --degraded to convert this member alone)")


def layout_lines(layout: Layout) -> list[str]:
    """The roles found and why, as -v shows them."""
    boot = layout.boot
    return [f"root: {where(layout.root.partition)} ({layout.root.reason})",
            f"boot: partition {boot.partition.number} ({boot.reason})" if boot
            else f"boot: {boot_words(layout)}"]


def boot_words(layout: Layout) -> str:
    """Where /boot is when no partition is mounted there."""
    if layout.boot_in_root:
        return (f"/boot is a directory of the root, {where(layout.root.partition)} "
                f"(no boot partition; it holds {', '.join(layout.kernels)})")
    return "none found"


def where(p: Partition) -> str:
    """A partition or md array, as a user reads it."""
    return f"md array {p.array}" if p.array else f"partition {p.number}"


def facts(p: Partition) -> PartitionFacts:
    return PartitionFacts(p.number, p.fstype, p.label, p.uuid, p.array)


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
        fs = ", ".join(f"{p.array or p.number}:{p.fstype or '?'}" for p in parts)
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


def _grub_configs(guest: Guest, parts: Sequence[Partition], probe: Probe) -> dict[str, grubconf.GrubConfig]:
    """The boot configs the probe saw (grub's, SYSLINUX's), each read with
    its partition mounted at / and parsed, by where they were found."""
    configs: dict[str, grubconf.GrubConfig] = {}
    for pattern in _BOOT_CONFIGS:
        for p in parts:
            for name in probe.hits[pattern].get(p.number, []):
                guest.mount(p)
                try:
                    data = guest.read(f"/{name}").data
                finally:
                    guest.unmount_all()
                if data is not None:
                    configs[f"/{name} on partition {p.number}"] = syslinux.read_config(
                        name, data.decode("latin-1"))
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

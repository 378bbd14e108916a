"""md RAID arrays as the VSA's root (SAN/iQ 8: /dev/md200, a RAID1 mirror
over its two system disks): what the appliance assembled, the members of
each array and on which attached disk they are, and the members' own md
superblocks, read from the members themselves and parsed here.

The appliance assembles at launch every array whose members it sees
(`mdadm -As --no-degraded`, then `mdadm -As --run`: an array missing a
member is assembled degraded), whatever the metadata (0.90, 1.0, 1.2).
Mounting the array and writing through it is how every edit reaches every
member: md writes each block to all of them.

The superblock parser is pure (bytes in, facts out): the metadata 0.90
superblock sits in the last 64 KiB-aligned 64 KiB of the member, the 1.x
one at its end (1.0), start (1.1) or 4 KiB in (1.2).
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from vsaimage.errors import ApplianceError

if TYPE_CHECKING:  # appliance.py imports guestfs; only the commands that launch it load it
    from vsaimage.guest.appliance import Guest

MAGIC = 0xA92B4EFC
SUPERBLOCK_SIZE = 4096
_RESERVED_090 = 64 * 1024  # 0.90: MD_RESERVED_BYTES
_CLEAN_090 = 1  # 0.90: MD_SB_CLEAN, bit 0 of the state word
_MAX_SECTOR = 2**64 - 1  # 1.x: resync_offset of an array in sync
_MINOR_090, _CSUM_090 = 11, 38  # 0.90: the words of md_minor and sb_csum


@dataclass(frozen=True)
class Superblock:
    """What a member's md superblock says of the array and of itself."""

    metadata: str  # "0.90", "1.0", "1.1", "1.2"
    uuid: str  # the array's, as mdadm prints it: 4 groups of 8 hex digits
    events: int  # how many times the superblocks were updated
    clean: bool  # no write in flight when it was last written
    level: int
    raid_disks: int
    data_offset: int  # bytes: where the array's data starts on the member
    data_size: int  # bytes of array data on the member
    preferred_minor: int | None  # 0.90: md_minor, the array's /dev/mdN
    name: str  # 1.x: the set name ("host:name" or "name"); "" for 0.90


def offsets(size: int) -> list[tuple[str, int]]:
    """Where each metadata version keeps its superblock on a member of
    `size` bytes."""
    found = [("0.90", (size & ~(_RESERVED_090 - 1)) - _RESERVED_090)] if size >= 2 * _RESERVED_090 else []
    return [*found, ("1.0", ((size - 8192) & ~4095)), ("1.1", 0), ("1.2", 4096)]


def _uuid_text(raw: bytes) -> str:
    h = raw.hex()
    return ":".join(h[i:i + 8] for i in range(0, 32, 8))


def parse(data: bytes, metadata: str) -> Superblock | None:
    """The superblock in `data` (read at the offset of `metadata`); None when
    there is none."""
    if len(data) < 512 or struct.unpack_from("<I", data, 0)[0] != MAGIC:
        return None
    if metadata == "0.90":
        w = struct.unpack_from("<1024I", data.ljust(SUPERBLOCK_SIZE, b"\0"))
        if (w[1], w[2]) != (0, 90):
            return None
        # mdadm prints a 0.90 UUID as its four words, not its bytes
        uuid_words = ":".join(f"{x:08x}" for x in (w[5], w[13], w[14], w[15]))
        return Superblock("0.90", uuid_words, w[40] << 32 | w[39], bool(w[33] & _CLEAN_090), w[7], w[10], 0,
                          w[8] * 1024, w[11], "")
    if struct.unpack_from("<I", data, 4)[0] != 1:
        return None
    level, = struct.unpack_from("<i", data, 72)
    raid_disks, = struct.unpack_from("<I", data, 92)
    data_offset, data_size = struct.unpack_from("<QQ", data, 128)
    events, resync = struct.unpack_from("<QQ", data, 200)
    name = data[32:64].split(b"\0", 1)[0].decode("utf-8", "replace")
    return Superblock(metadata, _uuid_text(data[16:32]), events, resync == _MAX_SECTOR, level, raid_disks,
                      data_offset * 512, data_size * 512, None, name)


def _csum_090(words: Sequence[int]) -> int:
    """md's calc_sb_csum: the 32-bit words of the superblock (its checksum
    word as 0) summed in 64 bits, folded once."""
    total = sum(words) - words[_CSUM_090]
    return ((total & 0xFFFFFFFF) + (total >> 32)) & 0xFFFFFFFF


def with_minor(data: bytes, minor: int) -> bytes:
    """A metadata 0.90 superblock (4 KiB) naming `minor` as the array's
    preferred minor, its checksum made again; every other byte kept."""
    w = list(struct.unpack_from("<1024I", data))
    w[_MINOR_090] = minor
    w[_CSUM_090] = _csum_090(w)
    return struct.pack("<1024I", *w)


def checksum_ok(data: bytes) -> bool:
    """Whether a metadata 0.90 superblock's checksum is right."""
    w = struct.unpack_from("<1024I", data)
    return bool(w[_CSUM_090] == _csum_090(w))


def same_uuid(a: str, b: str) -> bool:
    """Whether two array UUIDs, as mdadm (colons) or blkid (dashes) write
    them, are the same."""
    def norm(s: str) -> str:
        return s.replace(":", "").replace("-", "").lower()

    return norm(a) == norm(b)


def blkid_uuid(text: str) -> str:
    """An array UUID as mdadm writes it, from blkid's form."""
    return _uuid_text(uuid.UUID(text.replace(":", "")).bytes)


@dataclass(frozen=True)
class Member:
    device: str  # in the appliance, e.g. /dev/sdb2
    disk: int  # index of the attached disk it is on, among the image's disks
    partition: int  # its partition number on that disk
    superblock: Superblock | None = None


@dataclass(frozen=True)
class Array:
    """An assembled md array of the image's disks."""

    device: str  # in the appliance, e.g. /dev/md127
    uuid: str  # mdadm's form
    metadata: str
    level: str  # "raid1", ...
    raid_disks: int  # members it should have
    members: tuple[Member, ...]  # the active ones the appliance assembled it from
    name: str  # the guest's name for it: /dev/md200

    @property
    def degraded(self) -> bool:
        return len(self.members) < self.raid_disks

    def member_names(self, disks: Sequence[str]) -> str:
        """Its members as the xl config's disks name them (xvda2, xvdb2)."""
        return ", ".join(f"{disks[m.disk]}{m.partition}" for m in self.members)

    def agreement(self, *, clean: bool = True) -> tuple[bool, str]:
        """Whether the members' own superblocks show them in sync: the same
        array, the same event count, every one clean, none missing (`clean`
        False: while the array is in use, when md may not have marked it
        clean yet, the rest). md
        updates every member's superblock on each change of the array's
        state and marks it clean only when no write is in flight, so equal
        event counts on clean superblocks mean every write reached every
        member (the evidence md itself takes to skip a resync at the next
        assembly)."""
        blocks = [m.superblock for m in self.members]
        if any(b is None for b in blocks):
            return False, "a member has no superblock to read"
        sbs = [b for b in blocks if b is not None]
        if self.degraded:
            return False, f"{len(self.members)} of {self.raid_disks} members"
        if len({b.uuid for b in sbs}) > 1:
            return False, "the members name different arrays"
        events = sorted({b.events for b in sbs})
        if len(events) > 1:
            return False, f"event counts differ ({', '.join(map(str, events))})"
        if clean and not all(b.clean for b in sbs):
            return False, "a member's superblock says a write was in flight"
        return True, f"{len(sbs)} members, {'clean, ' if clean else ''}{events[0]} events each"

    def reread(self, guest: Guest) -> Array:
        """The same array with its members' superblocks read again."""
        return replace(self, members=tuple(
            replace(m, superblock=read_superblock(guest, m.device, self.metadata)) for m in self.members))


def close(guest: Guest, array: Array) -> Array:
    """Stop `array` once written (md marks its members' superblocks clean
    with the same event count), and give metadata 0.90 members back the
    preferred minor the guest names the array by: the appliance assembled
    it under a minor of its own, which md writes into 0.90 superblocks,
    and the VSA's kernel assembles a 0.90 array under the minor its
    superblocks name. Returns the array with its superblocks read again."""
    guest.md_stop(array.device)
    minor = array.name.removeprefix("/dev/md")
    if array.metadata == "0.90" and minor.isdigit():
        for m in array.members:
            at = dict(offsets(guest.device_size(m.device)))["0.90"]
            block = guest.read_device(m.device, at, SUPERBLOCK_SIZE)
            sb = parse(block, "0.90")
            if sb is not None and sb.preferred_minor != int(minor):
                guest.write_device(m.device, at, with_minor(block, int(minor)))
    return array.reread(guest)


def guest_name(superblocks: Sequence[Superblock | None], device: str) -> str:
    """The name the VSA gives the array: /dev/md<preferred minor> (0.90),
    /dev/md<N> for a 1.x set name N or HOST:N, /dev/md/<name> for another
    name; else the appliance's own name for it."""
    sb = next((b for b in superblocks if b is not None), None)
    if sb is not None and sb.preferred_minor is not None:
        return f"/dev/md{sb.preferred_minor}"
    if sb is not None and sb.name:
        short = sb.name.rsplit(":", 1)[-1]
        return f"/dev/md{short}" if short.isdigit() else f"/dev/md/{short}"
    return device


def _split_device(device: str, disks: Sequence[str]) -> tuple[int, int] | None:
    """(disk index, partition number) of a partition device among `disks`."""
    for n, disk in enumerate(disks):
        rest = device[len(disk):]
        if device.startswith(disk) and rest.isdigit():
            return n, int(rest)
    return None


def read_superblock(guest: Guest, device: str, metadata: str | None = None) -> Superblock | None:
    """The md superblock of a member, of the given metadata or of any."""
    size = guest.device_size(device)
    for meta, at in offsets(size):
        if metadata in (None, meta):
            found = parse(guest.read_device(device, at, SUPERBLOCK_SIZE), meta)
            if found is not None:
                return found
    return None


def find_arrays(guest: Guest, disks: Sequence[str]) -> list[Array]:
    """The arrays the appliance assembled from partitions of `disks` (the
    image's system disks, in the VM's order), each member's superblock read
    from the member. Arrays with a member elsewhere (another image of a
    batch) are not the image's."""
    found = []
    for device in guest.md_devices():
        detail = guest.md_detail(device)
        members = []
        for member, flags in guest.md_members(device):
            where = _split_device(member, disks)
            if where is None:
                break
            if "F" in flags or "S" in flags:  # faulty or spare: holds no current copy
                continue
            members.append(Member(member, *where, read_superblock(guest, member, detail.get("metadata"))))
        else:
            if not members:
                continue
            members.sort(key=lambda m: (m.disk, m.partition))
            found.append(Array(device, detail.get("uuid", ""), detail.get("metadata", ""),
                               detail.get("level", ""), int(detail.get("devices", "0") or 0), tuple(members),
                               guest_name([m.superblock for m in members], device)))
    return found


# --- a member whose array the appliance could not assemble -----------------

RAID_MEMBER = "linux_raid_member"  # blkid's TYPE of an md member
_EXT_MAGIC_AT, _EXT_MAGIC = 1024 + 56, b"\x53\xef"


def ext_type(head: bytes) -> str | None:
    """ext2, ext3 or ext4 from the superblock at 1024 bytes into `head`
    (2 KiB of a device); None when there is none."""
    if head[_EXT_MAGIC_AT:_EXT_MAGIC_AT + 2] != _EXT_MAGIC:
        return None
    compat, incompat = struct.unpack_from("<II", head, 1024 + 92)
    if incompat & (0x40 | 0x80 | 0x200):  # extents, 64bit, flex_bg
        return "ext4"
    return "ext3" if compat & 0x4 else "ext2"  # has_journal


@dataclass(frozen=True)
class Lone:
    """A member of an array the appliance left unassembled (its other
    members are not attached: it runs no array missing one)."""

    member: Member
    name: str  # the array's, as the guest names it
    fstype: str | None  # the filesystem at the member's start (0.90, 1.0), mountable alone

    @property
    def superblock(self) -> Superblock | None:
        return self.member.superblock

    def describe(self, disks: Sequence[str]) -> str:
        sb = self.superblock
        whose = f"{sb.raid_disks} members, uuid {sb.uuid}" if sb else "its superblock unreadable"
        return (f"{disks[self.member.disk]} partition {self.member.partition} is a member of md array "
                f"{self.name} ({whose})")


def complete_sets(lone: Sequence[Lone]) -> dict[str, list[Lone]]:
    """The lone members by array UUID, for each array whose members are all
    here: nothing is missing, the appliance only did not assemble it."""
    sets: dict[str, list[Lone]] = {}
    wanted: dict[str, int] = {}
    for x in lone:
        if x.superblock is not None:
            sets.setdefault(x.superblock.uuid, []).append(x)
            wanted[x.superblock.uuid] = x.superblock.raid_disks
    return {u: members for u, members in sets.items() if len(members) >= wanted[u]}


def settled(guest: Guest, devices: Sequence[str], partitions: Sequence[tuple[str, str]],
            disks: Sequence[str]) -> tuple[list[Array], list[Lone]]:
    """The arrays of `devices` (find_arrays) and the members in none of
    them (lone_members), once every array whose members are all attached
    is assembled: the appliance's udev may leave a member claimed by an
    inactive array, and a listing of members under names other than the
    API's left a mirror's two members apart (Guest.kernel_names).
    ApplianceError, naming the members by `disks` (the devices' images),
    when mdadm could not assemble one: with the last line it said."""
    arrays = find_arrays(guest, devices)
    lone = lone_members(guest, devices, partitions, arrays)
    complete = complete_sets(lone)
    if not complete:
        return arrays, lone
    said = {u: guest.assemble([x.member.device for x in members]) for u, members in complete.items()}
    arrays = find_arrays(guest, devices)
    lone = lone_members(guest, devices, partitions, arrays)
    for u, members in complete_sets(lone).items():
        where = ", ".join(f"{disks[x.member.disk]} partition {x.member.partition}" for x in members)
        last = [line for line in said.get(u, "").splitlines() if line.strip()][-1:] or ["it said nothing"]
        raise ApplianceError(f"md array {members[0].name}: every member is attached ({where}), and mdadm "
                             f"did not assemble it: {last[0]}")
    return arrays, lone


def lone_members(guest: Guest, devices: Sequence[str], partitions: Sequence[tuple[str, str]],
                 arrays: Sequence[Array]) -> list[Lone]:
    """The md members among `partitions` ((device, blkid type) of the
    image's `devices`) that are in none of `arrays`."""
    assembled = {m.device for a in arrays for m in a.members}
    found = []
    for device, fstype in partitions:
        where = _split_device(device, devices)
        if fstype != RAID_MEMBER or device in assembled or where is None:
            continue
        sb = read_superblock(guest, device)
        at_start = sb is not None and sb.data_offset == 0
        start = ext_type(guest.read_device(device, 0, 2048)) if at_start else None
        found.append(Lone(Member(device, *where, sb), guest_name([sb], device), start))
    return found

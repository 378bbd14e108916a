"""Room in the guest: what a convert writes into each guest filesystem (the
modules payload, the boot files, the edited files) against what that
filesystem has free (statvfs in the appliance), checked before anything is
written; and which modules payload `--modules auto` sends.

A SAN/iQ 8 root is 233 MiB with about 50 MiB free: the full modules tree of
a Debian kernel (about 400 MB) would fail with ENOSPC late in the transfer,
the minimal one (a few MiB) fits. `auto` takes the full tree when it leaves
AUTO_MARGIN free, else the minimal one, and says why; `full` or `minimal`
that do not fit are refused with both sizes and the way out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from vsaimage.errors import ImageError
from vsaimage.guest.appliance import Guest, Room
from vsaimage.guest.layout import where
from vsaimage.kmod.payload import PayloadSize

# What --modules auto leaves free in the root after the full tree, at least:
# the VSA writes its configuration and logs there.
AUTO_MARGIN = 64 * 2**20
MODULES = ("auto", "full", "minimal")


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def named(room: Room) -> str:
    """A guest filesystem as the user reads it: partition 5 (/), md array
    /dev/md200 (/)."""
    return f"{where(room.partition)} ({room.mountpoint})" if room.partition else room.mountpoint


@dataclass(frozen=True)
class Choice:
    minimal: bool
    size: PayloadSize
    why: str


def choose_modules(g: Guest, directory: str, asked: str,
                   measure: Callable[[bool], PayloadSize]) -> Choice:
    """The modules payload to send into `directory` of the guest: `asked`
    (full or minimal) when it fits, refused otherwise; for auto, the full
    tree when it leaves AUTO_MARGIN free, else the minimal one. `measure`
    gives a payload's size (minimal or not), asked for only when needed."""
    room = g.room(directory)
    sizes: dict[bool, PayloadSize] = {}

    def size(minimal: bool) -> PayloadSize:
        if minimal not in sizes:
            sizes[minimal] = measure(minimal)
        return sizes[minimal]

    def need(minimal: bool) -> int:
        return size(minimal).need(room.block)

    def fits(minimal: bool, margin: int = 0) -> bool:
        return need(minimal) + margin <= room.free and size(minimal).inodes <= room.inodes

    def said(minimal: bool) -> str:
        return f"the {('full tree', 'minimal set')[minimal]} ({size(minimal)}) needs {_mib(need(minimal))}"

    free = f"{named(room)} has {_mib(room.free)} free"
    if asked == "auto":
        if fits(False, AUTO_MARGIN):
            return Choice(False, size(False), f"auto: full: {free}, {said(False)}, leaving more than "
                                              f"{_mib(AUTO_MARGIN)}")
        if fits(True):
            return Choice(True, size(True), f"auto: minimal: {free}; {said(False)} (and "
                                            f"{_mib(AUTO_MARGIN)} to spare); {said(True)}")
        asked = "minimal"
    take = asked == "minimal"
    if not fits(take):
        raise ImageError(f"{named(room)}: {_mib(room.free)} free ({room.inodes} inodes), and "
                         f"{said(take)}",
                         hint="free room in the VSA's root, or --skip modules" if take else
                         f"--modules minimal ({said(True)})")
    return Choice(take, size(take), f"{asked}, as asked: {free}, {said(take)}")


def check(g: Guest, writes: Iterable[tuple[str, int]]) -> None:
    """Each guest filesystem has room for the files written there (guest
    path, bytes; the file each replaces counted as free), refused before
    anything is written."""
    by_fs: dict[str, tuple[Room, int, int]] = {}
    for path, size in writes:
        room = g.room(path)
        _, need, freed = by_fs.get(room.mountpoint, (room, 0, 0))
        rounded = -(-size // room.block) * room.block
        by_fs[room.mountpoint] = (room, need + rounded, freed + g.file_size(path))
    for room, need, freed in by_fs.values():
        # a little room for the directories and the filesystem's blocks
        if need + 2**20 > room.free + freed:
            raise ImageError(
                f"{named(room)} has {_mib(room.free + freed)} free for the files the convert writes there, "
                f"which need {_mib(need)}",
                hint="free room there; for /boot: recompress the initrd (--initrd-compression xz), "
                     "or use --boot direct; for the root: --modules minimal")


def sizes(paths: Iterable[tuple[str, Path]]) -> list[tuple[str, int]]:
    """(guest path, bytes) of host files to upload."""
    return [(guest, source.stat().st_size) for guest, source in paths]

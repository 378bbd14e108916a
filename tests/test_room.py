"""room.py: the modules payload --modules takes (auto: full when the root
has room with a margin, else minimal), and the room check of every guest
filesystem before anything is written."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from vsaimage.commands import room
from vsaimage.errors import ImageError
from vsaimage.guest.appliance import Partition, Room
from vsaimage.kmod.payload import PayloadSize

MiB = 2**20
FULL = PayloadSize(4023, 388 * MiB, 300)
MINIMAL = PayloadSize(60, 3 * MiB, 20)
ROOT = Partition(1000, "/dev/md127", 0, 233 * MiB, None, "ext3", "", "u", array="/dev/md200")
BOOT = Partition(1, "/dev/sda1", MiB, 32 * MiB, 0x83, "ext3", "boot", "b")


@dataclass
class FakeGuest:
    rooms: dict[str, Room]
    sizes: dict[str, int]

    def room(self, path: str) -> Room:
        return self.rooms["/boot" if path.startswith("/boot") else "/"]

    def file_size(self, path: str) -> int:
        return self.sizes.get(path, 0)


def guest(root_free: int, boot_free: int = 20 * MiB, inodes: int = 50000) -> FakeGuest:
    return FakeGuest({"/": Room(root_free, 4096, inodes, 233 * MiB, "/", ROOT),
                      "/boot": Room(boot_free, 1024, 5000, 32 * MiB, "/boot", BOOT)}, {})


def choose(g: FakeGuest, asked: str) -> room.Choice:
    measured: list[bool] = []

    def measure(minimal: bool) -> PayloadSize:
        measured.append(minimal)
        return MINIMAL if minimal else FULL

    return room.choose_modules(g, "/lib/modules/6.1.0-9-amd64", asked, measure)  # type: ignore[arg-type]


def test_auto_takes_the_full_tree_where_it_fits_with_the_margin() -> None:
    c = choose(guest(2048 * MiB), "auto")
    assert not c.minimal and c.size == FULL
    assert c.why.startswith("auto: full: md array /dev/md200 (/) has 2048.0 MiB free")


def test_auto_takes_the_minimal_set_in_a_small_root() -> None:
    c = choose(guest(50 * MiB), "auto")
    assert c.minimal and c.size == MINIMAL
    assert c.why.startswith("auto: minimal: md array /dev/md200 (/) has 50.0 MiB free; the full tree "
                            "(4023 files, 388.0 MiB) needs")
    # fits, but without the margin: minimal too
    assert choose(guest(FULL.need(4096) + MiB), "auto").minimal


def test_full_that_does_not_fit_is_refused_with_the_way_out() -> None:
    with pytest.raises(ImageError) as e:
        choose(guest(50 * MiB), "full")
    assert e.value.message.startswith("md array /dev/md200 (/): 50.0 MiB free (50000 inodes), and the full "
                                      "tree (4023 files, 388.0 MiB) needs ")
    assert (e.value.hint or "").startswith("--modules minimal (the minimal set (60 files, 3.0 MiB) needs")
    assert choose(guest(FULL.need(4096)), "full").size == FULL  # no margin asked


def test_minimal_that_does_not_fit_either() -> None:
    for asked in ("minimal", "auto"):
        with pytest.raises(ImageError, match="the minimal set"):
            choose(guest(2 * MiB), asked)
    with pytest.raises(ImageError, match="inodes"):
        choose(guest(50 * MiB, inodes=10), "minimal")


def test_check_counts_each_filesystem_and_what_a_file_replaces() -> None:
    g = guest(10 * MiB, boot_free=5 * MiB)
    room.check(g, [("/etc/fstab", 300), ("/boot/vsaimage/initrd.img", 3 * MiB)])  # type: ignore[arg-type]
    with pytest.raises(ImageError, match=r"^partition 1 \(/boot\) has 5.0 MiB free for the files"):
        room.check(g, [("/boot/vsaimage/initrd.img", 8 * MiB)])  # type: ignore[arg-type]
    g.sizes["/boot/vsaimage/initrd.img"] = 7 * MiB  # replaced: its blocks count as free
    room.check(g, [("/boot/vsaimage/initrd.img", 8 * MiB)])  # type: ignore[arg-type]
    with pytest.raises(ImageError, match=r"^md array /dev/md200 \(/\) has 10.0 MiB"):
        room.check(g, [("/lib/modules/6.1.0-9-amd64", 9 * MiB), ("/etc/inittab", MiB)])  # type: ignore[arg-type]

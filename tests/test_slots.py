"""Root detection with two system slots: the VSA's grub default entry decides."""

from __future__ import annotations

import fnmatch

import pytest
from test_grubconf import TWO_SLOTS

from vsaimage.edits import GuestFile
from vsaimage.errors import ImageError
from vsaimage.guest import Partition
from vsaimage.inspect import Role, _find_root

BOOT = Partition(1, "/dev/sda1", 2**20, 2**26, 0x83, "ext3", "boot", "")
SLOT2 = Partition(2, "/dev/sda2", 2**26, 2**28, 0x83, "ext3", "slot2", "")
ROOT5 = Partition(5, "/dev/sda5", 2**29, 2**31, 0x83, "ext3", "/", "ab12cd34-0000-4000-8000-000000000005")


class FakeGuest:
    """The mounted candidates as guest.glob and guest.read see them."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    def glob(self, pattern: str) -> list[str]:
        pattern += "*" if pattern.endswith("/") else ""  # a directory: anything under it
        return sorted(p for p in self.files if fnmatch.fnmatch(p, pattern))

    def read(self, path: str) -> GuestFile:
        return GuestFile(path, self.files[path].encode() if path in self.files else None)


def two_roots(grub: str | None) -> FakeGuest:
    files = {f"/vsaimage-p{n}/etc/{f}": "" for n in (2, 5) for f in ("lefthand/.version", "inittab")}
    if grub is not None:
        files["/vsaimage-p1/grub/grub.conf"] = grub
    return FakeGuest(files)


def find(guest: FakeGuest) -> Role:
    parts = [BOOT, SLOT2, ROOT5]
    return _find_root(guest, "vsa.img", parts, parts)  # type: ignore[arg-type]


def test_the_default_entry_picks_the_upgraded_slot() -> None:
    role = find(two_roots(TWO_SLOTS))
    assert role.partition == SLOT2
    assert "default entry of /vsaimage-p1/grub/grub.conf" in role.reason
    assert role.reason.endswith("system slots: 2, 5")


def test_the_original_slot_when_grub_boots_it() -> None:
    grub = TWO_SLOTS.replace("default 1", "default 0")
    role = find(two_roots(grub))
    assert role.partition == ROOT5


def test_without_a_grub_config_it_asks_for_root_part() -> None:
    with pytest.raises(ImageError, match=r"look like a VSA root \(system slots: 2, 5; no grub config") as err:
        find(two_roots(None))
    assert "--root-part" in (err.value.hint or "")

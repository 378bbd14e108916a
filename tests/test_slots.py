"""Root detection with two system slots: the VSA's grub default entry decides."""

from __future__ import annotations

import pytest
from test_grubconf import TWO_SLOTS

from vsaimage.edits import GuestFile
from vsaimage.errors import ImageError
from vsaimage.guest.appliance import Partition, Probe
from vsaimage.guest.layout import _BOOT_CONFIGS, _ROOT_MARKS, _SYSLINUX_CONFIGS, Role, _find_root
from vsaimage.guest.paths import Entry, Kind, Resolved
from vsaimage.vsa import syslinux

BOOT = Partition(1, "/dev/sda1", 2**20, 2**26, 0x83, "ext3", "boot", "")
SLOT2 = Partition(2, "/dev/sda2", 2**26, 2**28, 0x83, "ext3", "slot2", "")
ROOT5 = Partition(5, "/dev/sda5", 2**29, 2**31, 0x83, "ext3", "/", "ab12cd34-0000-4000-8000-000000000005")


class FakeGuest:
    """The candidates as the probe saw them and as guest.read sees each one
    mounted at /: files by (partition number, path)."""

    def __init__(self, files: dict[tuple[int, str], str]) -> None:
        self.files = files
        self.mounted: int | None = None

    def mount(self, part: Partition) -> None:
        self.mounted = part.number

    def unmount_all(self) -> None:
        self.mounted = None

    def resolve(self, path: str) -> Resolved:
        here = {p for n, p in self.files if n == self.mounted}
        kind: Kind | None = ("file" if path in here
                             else "dir" if any(p.startswith(path + "/") for p in here) else None)
        return Resolved(path, path, Entry(kind, 0o755, 0) if kind else None)

    def read(self, path: str) -> GuestFile:
        assert self.mounted is not None, "read with nothing mounted"
        text = self.files.get((self.mounted, path))
        return GuestFile(path, None if text is None else text.encode())

    def probe(self) -> Probe:
        hits: dict[str, dict[int, list[str]]] = {}
        for pattern in (*_ROOT_MARKS, *_BOOT_CONFIGS):
            for n, path in self.files:
                name = path.lstrip("/")
                if pattern == _SYSLINUX_CONFIGS and name in syslinux.CONFIGS:
                    hits.setdefault(pattern, {}).setdefault(n, []).append(name)
                elif name == pattern or name.startswith(pattern + "/"):
                    hits.setdefault(pattern, {}).setdefault(n, []).append(pattern)
            hits.setdefault(pattern, {})
        return Probe((1, 2, 5), hits)


def two_roots(grub: str | None, where: str = "/grub/grub.conf") -> FakeGuest:
    files = {(n, f"/etc/{f}"): "" for n in (2, 5) for f in ("lefthand/.version", "inittab")}
    if grub is not None:
        files[(1, where)] = grub
    return FakeGuest(files)


def find(guest: FakeGuest) -> Role:
    return _find_root(guest, "vsa.img", [BOOT, SLOT2, ROOT5], guest.probe())  # type: ignore[arg-type]


def test_the_default_entry_picks_the_upgraded_slot() -> None:
    role = find(two_roots(TWO_SLOTS))
    assert role.partition == SLOT2
    assert "default entry of /grub/grub.conf on partition 1" in role.reason
    assert role.reason.endswith("system slots: 2, 5")


def test_the_original_slot_when_grub_boots_it() -> None:
    grub = TWO_SLOTS.replace("default 1", "default 0")
    role = find(two_roots(grub))
    assert role.partition == ROOT5


def test_without_a_grub_config_it_asks_for_root_part() -> None:
    with pytest.raises(ImageError, match=r"look like a VSA root \(system slots: 2, 5; no grub config") as err:
        find(two_roots(None))
    assert "--root-part" in (err.value.hint or "")


def test_a_syslinux_config_picks_the_slot_too() -> None:
    cfg = "DEFAULT vga\nLABEL linux\n KERNEL vmlinuz\n APPEND root=/dev/sda5\nLABEL vga\n KERNEL vmlinuz\n" \
          " APPEND initrd=initrd.gz root=/dev/sda2 vga=791\n"
    role = find(two_roots(cfg, "/syslinux/syslinux.cfg"))
    assert role.partition == SLOT2
    assert "default entry of /syslinux/syslinux.cfg on partition 1 boots it (DEFAULT vga" in role.reason

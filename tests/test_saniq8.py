"""The SAN/iQ 8 example (fixtures/saniq8.py): two system disks, the root on
an md RAID1 mirror (metadata 0.90, /dev/md200) with about 50 MiB free, a
SYSLINUX boot partition, an i386 userland whose rc.sysinit mounts /proc
again. Converted with --system-disk and --modules auto: minimal, since the
full tree does not fit; one output disk per system disk, the members
identical and clean, named md200; refused without the second disk (unless
--degraded) and with --modules full."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures import saniq8
from support import DebianKernel, Saniq8, fingerprint, run_cli
from vsaimage.errors import ApplianceError
from vsaimage.guest import appliance, md
from vsaimage.guest.appliance import Guest
from vsaimage.model import Drive

pytestmark = pytest.mark.integration


def step(doc: dict[str, object], name: str) -> dict[str, object]:
    steps = doc["steps"]
    assert isinstance(steps, list)
    return next(s for s in steps if s["step"] == name)


def test_converted_with_both_disks(saniq8_converted: Saniq8) -> None:
    c = saniq8_converted
    assert all(out.stat().st_size == saniq8.DISK for out in c.outs)
    assert (fingerprint(c.inputs[0]), fingerprint(c.inputs[1])) == c.inputs_sha_before
    doc = c.run.doc
    modules = step(doc, "modules")["details"]
    assert isinstance(modules, dict) and modules["minimal"] is True
    assert str(modules["why"]).startswith("auto: minimal: md array /dev/md200 (/) has ")
    cfg = c.cfg.read_text()
    assert 'root = "/dev/md200"' in cfg
    assert f"vdev=xvda, access=rw, target={c.outs[0]}'" in cfg
    assert f"vdev=xvdb, access=rw, target={c.outs[1]}'" in cfg
    assert "vsyscall" not in cfg  # an i386 userland never calls the 64-bit vsyscall page
    # the SYSLINUX default label's arguments, those naming gone hardware dropped
    assert 'extra = "ro vga=791 quiet console=hvc0 ' in cfg
    pci = step(doc, "pci")["details"]
    assert isinstance(pci, dict) and pci["rebind_after_proc_mount"] == ["/etc/rc.d/rc.sysinit:13"]


def member(path: Path) -> tuple[bytes, bytes]:
    """The md member on a disk: its data region's digest and its superblock."""
    at = saniq8.DATA_SIZE  # where 0.90 keeps the superblock: the data ends there
    with path.open("rb") as f:
        f.seek(saniq8.MEMBER.start)
        h = hashlib.sha256()
        left = at
        while left:
            chunk = f.read(min(left, 2**22))
            h.update(chunk)
            left -= len(chunk)
        f.seek(saniq8.MEMBER.start + at)
        return h.digest(), f.read(4096)


def test_members_hold_the_same_data_clean_and_named_md200(saniq8_converted: Saniq8) -> None:
    """Read on the host, not through md: each member's data region (the
    array's blocks; 0.90 keeps them from the member's start) is the same on
    both disks, and their superblocks are clean, with the same event count
    and the guest's minor."""
    (data1, sb1), (data2, sb2) = (member(out) for out in saniq8_converted.outs)
    assert data1 == data2
    assert data1 != member(saniq8_converted.inputs[0])[0]  # the edits reached both
    blocks = [md.parse(sb, "0.90") for sb in (sb1, sb2)]
    assert all(b is not None and b.clean and b.preferred_minor == 200 for b in blocks)
    assert len({b.events for b in blocks if b}) == 1
    assert md.checksum_ok(sb1) and md.checksum_ok(sb2)


def test_verify_sees_the_members_agree(saniq8_converted: Saniq8, debian_kernel: DebianKernel) -> None:
    c = saniq8_converted
    r = run_cli("verify", c.outs[0], "--system-disk", c.outs[1], "--initrd", c.initrd,
                "--kernel-version", debian_kernel.version, "--json")
    assert r.code == 0, r.stderr
    row = next(e for e in r.doc["edits"] if e["step"] == "md-members")
    assert row["status"] == "applied", row
    assert str(row["details"]["why"]).startswith("2 members, clean, ")


def test_one_member_alone_is_refused(saniq8_converted: Saniq8, debian_kernel: DebianKernel,
                                     tmp_path: Path) -> None:
    c = saniq8_converted
    r = run_cli("convert", c.inputs[0], "--kernel", debian_kernel.vmlinuz, "--initrd", debian_kernel.initrd,
                "-o", tmp_path / "out.img", "--modules", "minimal", timeout=600)
    assert r.code == 2
    [line] = [x for x in r.stderr.splitlines() if x.startswith("vsaimage: error:")]
    assert "md array /dev/md200 (2 members" in line and "--system-disk IMG" in line and "--degraded" in line
    assert not list(tmp_path.iterdir())


def test_full_modules_refused_for_lack_of_room(saniq8_converted: Saniq8, debian_kernel: DebianKernel,
                                               tmp_path: Path) -> None:
    c = saniq8_converted
    r = run_cli("convert", c.inputs[0], "--system-disk", c.inputs[1], "--kernel", debian_kernel.vmlinuz,
                "--initrd", debian_kernel.initrd, "-o", tmp_path / "out.img", "--modules", "full",
                timeout=600)
    assert r.code == 2
    [line] = [x for x in r.stderr.splitlines() if x.startswith("vsaimage: error:")]
    assert line.startswith("vsaimage: error: md array /dev/md200 (/): ") and "the full tree" in line
    assert "--modules minimal" in line
    assert not list(tmp_path.iterdir())


def test_one_member_alone_with_degraded(saniq8_converted: Saniq8) -> None:
    """--degraded: the member holds the array's data from its start (0.90),
    mounted alone once md lets go of it; inspect also says the userland is
    i386."""
    r = run_cli("inspect", saniq8_converted.inputs[0], "--degraded", "--json", timeout=600)
    assert r.code == 0, r.stderr
    root = r.doc["root"]
    assert root["array"] == "/dev/md200" and "(--degraded)" in root["reason"]
    assert r.doc["userland"]["bits"] == 32 and r.doc["userland"]["machine"] == "i386"


@dataclass
class Apart:
    """An appliance with the SAN/iQ 8 inputs attached, md200 stopped by
    each test and its members left in a state md settles from."""

    guest: Guest
    devices: list[str]
    parts: list[tuple[str, str]]

    def members(self) -> list[str]:
        return [f"{d}2" for d in self.devices]

    def stopped(self) -> None:
        for array in self.guest.md_devices():
            self.guest.md_stop(array)
        assert md.find_arrays(self.guest, self.devices) == []
        assert list(md.complete_sets(md.lone_members(self.guest, self.devices, self.parts, []))) != []

    def settled(self) -> tuple[list[md.Array], list[md.Lone]]:
        return md.settled(self.guest, self.devices, self.parts, ["vsa-1.img", "vsa-2.img"])


@pytest.fixture(scope="module")
def apart(saniq8_converted: Saniq8) -> Iterator[Apart]:
    class Quiet:
        def debug(self, _text: str) -> None: ...
        def warn(self, _text: str) -> None: ...

    g = appliance.launch([Drive(str(p), readonly=True) for p in saniq8_converted.inputs], Quiet())  # type: ignore[arg-type]
    with g:
        devices = g.devices()[:2]
        yield Apart(g, devices, [(p.device, p.fstype) for d in devices for p in g.partitions(d)])


def test_members_udev_left_apart_are_assembled(apart: Apart) -> None:
    """The state a busy appliance was seen in: one member claimed by an
    inactive array (udev's incremental assembly), the other free, md200
    never started. The roles' listing assembles it rather than calling
    both members lone."""
    apart.stopped()
    said = apart.guest._shell(f"mdadm --incremental {apart.guest.kernel_device(apart.members()[0])}")
    assert "not enough to start" in said
    arrays, lone = apart.settled()
    assert lone == []
    assert [(a.raid_disks, [m.device for m in a.members]) for a in arrays] == [(2, apart.members())]


def test_members_both_free_are_assembled(apart: Apart) -> None:
    """Both members free, in no array: assembled together."""
    apart.stopped()
    arrays, lone = apart.settled()
    assert lone == []
    assert [(a.raid_disks, [m.device for m in a.members]) for a in arrays] == [(2, apart.members())]


def test_members_mdadm_cannot_assemble_are_an_error_with_its_words(apart: Apart) -> None:
    """A member held by something else (a device-mapper target here): mdadm
    cannot assemble the array, and the error says so with mdadm's words,
    naming the members by their images, not "other members not attached"."""
    apart.stopped()
    second = apart.guest.kernel_device(apart.members()[1])
    apart.guest._shell(f'dmsetup create hold --table "0 $(blockdev --getsz {second}) linear {second} 0"')
    try:
        with pytest.raises(ApplianceError, match=r"^md array /dev/md200: every member is attached "
                           r"\(vsa-1\.img partition 2, vsa-2\.img partition 2\), and mdadm did not "
                           r"assemble it: mdadm: .*busy"):
            apart.settled()
    finally:
        apart.guest._shell("for md in /sys/block/md*; do mdadm --stop /dev/${md##*/}; done; "
                           "dmsetup remove hold")

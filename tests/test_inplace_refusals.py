"""convert --in-place refuses, in one line and exit 2 before any work, what
it cannot convert where it is: a VM whose root is an md mirror over two
system disks (SAN/iQ 8), given with --system-disk or --degraded, found on
the disk, or named by the config it would replace. Nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import run_cli
from vsaimage.commands import inplace
from vsaimage.commands.options import XlOptions
from vsaimage.errors import BadInput
from vsaimage.guest.appliance import Partition
from vsaimage.guest.layout import Layout, Role
from vsaimage.inputs.source import ImageSource
from vsaimage.xen import xlcfg

SAID = "--in-place converts a single system disk"


def _disk(path: Path) -> Path:
    path.write_bytes(bytes(510) + b"\x55\xaa" + bytes(2**20 - 512))
    return path


def _refused(tmp_path: Path, *args: object) -> str:
    before = sorted(tmp_path.iterdir())
    r = run_cli("convert", "--in-place", *args, "--kernel", tmp_path / "k", "--initrd", tmp_path / "i")
    assert r.code == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith("vsaimage: error: ") and SAID in lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(tmp_path.iterdir()) == before
    return lines[0]


def test_a_second_system_disk_is_refused(tmp_path: Path) -> None:
    disk, other = _disk(tmp_path / "vsa.img"), _disk(tmp_path / "vsa-2.img")
    line = _refused(tmp_path, disk, "--system-disk", other)
    assert str(disk) in line and "2 are given (with --system-disk)" in line


def test_degraded_is_refused(tmp_path: Path) -> None:
    line = _refused(tmp_path, _disk(tmp_path / "vsa.img"), "--degraded")
    assert "one half of the root's md mirror" in line


def test_a_config_of_two_system_disks_is_refused(tmp_path: Path) -> None:
    """The config beside the disk is a SAN/iQ 8 convert's: xvdb and
    root=/dev/md200."""
    disk = _disk(tmp_path / "vsa.img")
    cfg = xlcfg.XlConfig(name="vsa", kernel="/boot/vmlinuz", ramdisk=str(tmp_path / "vsa.initrd"),
                         root_part=2, uuid="4c484e21-0000-4000-8000-00000000be27", mac="00:16:3e:27:27:27",
                         disk=str(disk), memory=XlOptions.memory, vcpus=XlOptions.vcpus,
                         bridge=XlOptions.bridge, disk_format="raw",
                         system_disks=(str(tmp_path / "vsa-2.img"),), root_array="/dev/md200")
    (tmp_path / "vsa.cfg").write_text(xlcfg.render(cfg))
    line = _refused(tmp_path, disk)
    assert f"{tmp_path / 'vsa.cfg'} boots a VM with its root on md array /dev/md200" in line


def _layout(root: Partition) -> Layout:
    return Layout("/dev/sda", (root,), Role(root, "found"), None)


@pytest.mark.parametrize("root", [
    Partition(1000, "/dev/md127", 0, 2**28, None, "ext3", "", "", array="/dev/md200"),
    Partition(1000, "/dev/sda2", 0, 2**28, None, "ext3", "", "", array="/dev/md200", member=True),
], ids=["array", "lone-member"])
def test_a_root_found_on_an_md_array_is_refused(root: Partition) -> None:
    with pytest.raises(BadInput) as e:
        inplace.check_layout(ImageSource("vsa.img"), _layout(root))
    assert e.value.message == f"vsa.img: {SAID}, and its root is on md array /dev/md200, a mirror over " \
                              "several disks"


def test_a_plain_root_passes() -> None:
    root = Partition(5, "/dev/sda5", 0, 2**28, None, "ext3", "", "")
    inplace.check_layout(ImageSource("vsa.img"), _layout(root))

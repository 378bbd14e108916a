"""initrd_drivers.py: can the initrd mount the root under Xen?"""

from __future__ import annotations

from vsaimage.initrd.drivers import check
from vsaimage.kmod.selection import module_name

V = "usr/lib/modules/6.1.0-18-amd64"
FULL = [f"{V}/kernel/drivers/block/xen-blkfront.ko", f"{V}/kernel/fs/ext4/ext4.ko", f"{V}/modules.dep"]


def test_module_names() -> None:
    assert module_name(f"{V}/kernel/drivers/block/xen-blkfront.ko.zst") == "xen_blkfront"
    assert module_name("lib/modules/2.6.18/kernel/fs/ext3/ext3.ko") == "ext3"
    assert module_name(f"{V}/modules.dep") is None and module_name("scripts/init-bottom/ext4.ko.sh") is None


def test_complete_initrd() -> None:
    got = check(FULL, "", "ext3")
    assert got.missing == [] and got.as_dict() == {"needed": ["xen_blkfront", "ext4|ext3"], "missing": []}


def test_missing_blkfront_and_fs() -> None:
    assert check(FULL[1:], "", "ext3").missing == ["xen_blkfront"]
    assert check([], "", "ext3").missing_needs == [("xen_blkfront",), ("ext4", "ext3")]
    assert check(FULL[:1], "", "ext3").missing == ["ext4"]
    assert check([], "", "xfs").missing == ["xen_blkfront", "xfs"]


def test_built_in_counts_and_modules_outside_lib_modules_do_not() -> None:
    builtin = "kernel/drivers/block/xen-blkfront.ko\nkernel/fs/ext4/ext4.ko\n"
    assert check([], builtin, "ext3").missing == []
    assert check(["xen-blkfront.ko", "ext4.ko"], "", "ext3").missing == ["xen_blkfront", "ext4"]


def test_unknown_fstype_needs_only_the_disk() -> None:
    assert check(FULL[:1], "", "").missing == []

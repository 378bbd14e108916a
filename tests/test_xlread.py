"""xlread.py: what `convert --in-place` keeps from the config it replaces,
read from configs xlcfg.py rendered and from ones an admin edited; and the
line inspect and verify print after the VSA's own upgrade (vsa/upgrade.py)."""

from __future__ import annotations

import dataclasses

import pytest

from vsaimage.commands.options import XlOptions
from vsaimage.errors import BadInput
from vsaimage.vsa.upgrade import unconverted_default
from vsaimage.xen import xlcfg, xlread

UUID = "4c484e21-0000-4000-8000-00000000be27"
MAC = "00:16:3e:27:27:27"


def config(**changes: object) -> xlcfg.XlConfig:
    base = xlcfg.XlConfig(name="vsa1", kernel="/boot/vmlinuz-6.1.0-56-amd64", ramdisk="/srv/xen/vsa1.initrd",
                          root_part=5, uuid=UUID, mac=MAC, disk="/srv/xen/vsa1.img", memory=XlOptions.memory,
                          vcpus=XlOptions.vcpus, bridge=XlOptions.bridge, disk_format="raw")
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize("boot,guest_type", [("direct", "pv"), ("pygrub", "pv"), ("pvgrub", "pvh")])
def test_a_rendered_config_reads_back(boot: str, guest_type: str) -> None:
    cfg = config(data_disks=("/dev/sdb", "/srv/xen/data, 1.img"), bridge="br-san", memory=4096, vcpus=3,
                 boot=boot, guest_type=guest_type)
    assert xlread.kept(xlcfg.render(cfg), "vsa1.cfg") == xlread.Kept(
        name="vsa1", memory=4096, vcpus=3, uuid=UUID, mac=MAC, bridge="br-san",
        data_disks=("/dev/sdb", "/srv/xen/data, 1.img"), boot=boot, guest_type=guest_type,
        user_args=() if boot == "direct" else None)


@pytest.mark.parametrize("vsyscall", [True, False])
def test_the_extra_arguments_read_back_without_the_vsas_and_vsaimages(vsyscall: bool) -> None:
    """`extra` is the VSA's kept arguments, vsaimage's own, then --extra's:
    only the last are the admin's to keep (the VSA's are read again from
    the slot it boots)."""
    cfg = config(vendor_args=("ro", "ramdisk_size=32768", "elevator=deadline"),
                 user_args=("loglevel=7", "console=hvc0"), vsyscall_emulate=vsyscall)
    assert xlread.kept(xlcfg.render(cfg), "vsa1.cfg").user_args == ("loglevel=7", "console=hvc0")


def test_an_extra_without_vsaimages_own_arguments_keeps_none() -> None:
    text = 'kernel = "/boot/vmlinuz"\nroot = "/dev/xvda5"\nextra = "ro quiet"\n'
    assert xlread.kept(text, "vsa.cfg").user_args is None


def test_a_config_of_two_system_disks_reads_its_md_root() -> None:
    """What a SAN/iQ 8 convert writes: xvdb a system disk, not a data disk,
    and the root an md array (which --in-place refuses)."""
    cfg = config(system_disks=("/srv/xen/vsa1-2.img",), root_array="/dev/md200", data_disks=("/dev/sdb",))
    found = xlread.kept(xlcfg.render(cfg), "vsa1.cfg")
    assert found.system_disks == ("/srv/xen/vsa1-2.img",) and found.root_array == "/dev/md200"
    assert found.data_disks == ("/dev/sdb",)
    plain = xlread.kept(xlcfg.render(config()), "vsa1.cfg")
    assert plain.system_disks == () and plain.root_array is None


def test_an_edited_config_reads_as_xl_reads_it() -> None:
    text = """# edited by hand
name = "vsa-a"; memory = 2048   # MiB
name = 'vsa-b'
uuid = "4C484E21-0000-4000-8000-00000000BE27"
vif = [ 'bridge=xenbr1,mac=00:16:3E:27:27:27',
        "mac=00:16:3e:00:00:01" ]
disk = [ "format=raw, vdev=xvda, access=rw, target=/srv/vsa.img",
         "format=raw, vdev=xvdc, access=rw, target=/dev/disk/by-id/x,y", ]
"""
    found = xlread.kept(text, "vsa.cfg")
    assert found.name == "vsa-b" and found.memory == 2048 and found.vcpus is None
    assert found.uuid == UUID.lower() and found.mac == MAC and found.bridge == "xenbr1"
    assert found.data_disks == ("/dev/disk/by-id/x,y",)
    assert found.boot == "direct" and found.guest_type is None


@pytest.mark.parametrize("text,says", [
    ("name = vsa1\n", "vsa.cfg: not an xl config: name has no value"),
    ('name = "vsa1\n', "vsa.cfg:1: not an xl config"),
    ('disk = [ "a"\n', "vsa.cfg: not an xl config: the list of disk has no end"),
    ('memory = "lots"\n', "vsa.cfg: memory is not a number"),
    ('uuid = "not-a-uuid"\n', "vsa.cfg: "),
    ('vif = [ "mac=zz:16:3e:00:00:01" ]\n', "vsa.cfg: "),
    ('type = "hvm"\n', "vsa.cfg: type 'hvm' is not one vsaimage writes"),
])
def test_a_config_it_cannot_keep_is_one_line_naming_it(text: str, says: str) -> None:
    with pytest.raises(BadInput) as e:
        xlread.kept(text, "vsa.cfg")
    assert e.value.message.startswith(says) and "\n" not in e.value.message


def test_the_upgrade_line_names_the_slot_version_and_command() -> None:
    line = unconverted_default("/srv/my vsa.img", 2, (2, 5), (5,), "10.0.00.1896")
    assert line == ("the VSA now boots slot p2, version 10.0.00.1896, which is not converted: run "
                    "`vsaimage convert --in-place '/srv/my vsa.img'` (with the --kernel and --initrd of "
                    "its first conversion)")


@pytest.mark.parametrize("root,slots,converted", [
    (5, (2, 5), (5,)),  # the converted slot boots
    (2, (2, 5), (2, 5)),  # both converted (after convert --in-place)
    (5, (5,), ()),  # one slot, not converted yet: a plain stock image
    (2, (2, 5), ()),  # nothing converted: a stock image whose VSA upgraded under VMware
])
def test_no_upgrade_line_otherwise(root: int, slots: tuple[int, ...], converted: tuple[int, ...]) -> None:
    assert unconverted_default("vsa.img", root, slots, converted, "10.0") is None

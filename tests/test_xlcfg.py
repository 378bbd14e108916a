"""xlcfg.py: the rendered config read back with an independent xl reader."""

from __future__ import annotations

import dataclasses
import re
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vsaimage import __version__
from vsaimage.commands.options import XlOptions
from vsaimage.errors import BadInput
from vsaimage.xen.xlcfg import (
    XlConfig,
    command_line,
    derive_identity,
    render,
    validate_mac,
    validate_uuid,
)
from xl_reader import parse, parse_spec

ROOT_FS_UUID = "3f1e2d4c-5b6a-4789-8a7b-6c5d4e3f2a1b"


def config(**changes: object) -> XlConfig:
    dom_uuid, mac = derive_identity(ROOT_FS_UUID)
    base = XlConfig(
        name="vsa1",
        kernel="/boot/vmlinuz-6.1.0-56-amd64",
        ramdisk="/srv/xen/vsa1.initrd",
        root_part=1,
        uuid=dom_uuid,
        mac=mac,
        disk="/srv/xen/vsa1.img",
        memory=XlOptions.memory,
        vcpus=XlOptions.vcpus,
        bridge=XlOptions.bridge,
        disk_format="raw",
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def strings(value: object) -> list[str]:
    assert isinstance(value, list) and all(isinstance(v, str) for v in value)
    return [str(v) for v in value]


def test_every_key() -> None:
    cfg = config(data_disks=("/dev/sdb", "/srv/xen/data1.img"), bridge="br-san", root_part=5)
    got = parse(render(cfg))
    assert got == {
        "type": "pv",
        "name": "vsa1",
        "kernel": "/boot/vmlinuz-6.1.0-56-amd64",
        "ramdisk": "/srv/xen/vsa1.initrd",
        "root": "/dev/xvda5",
        "extra": "console=hvc0 net.ifnames=0",
        "memory": 3072,
        "vcpus": 2,
        "uuid": cfg.uuid,
        "disk": [
            "format=raw, vdev=xvda, access=rw, target=/srv/xen/vsa1.img",
            "format=raw, vdev=xvdc, access=rw, target=/dev/sdb",
            "format=raw, vdev=xvdd, access=rw, target=/srv/xen/data1.img",
        ],
        "vif": [f"mac={cfg.mac},bridge=br-san"],
        "on_poweroff": "destroy",
        "on_reboot": "restart",
        "on_crash": "destroy",
    }


def test_vsyscall_emulate_for_old_glibc() -> None:
    extra = parse(render(config(vsyscall_emulate=True)))["extra"]
    assert extra == "console=hvc0 net.ifnames=0 vsyscall=emulate"


@pytest.mark.parametrize("guest_type", ["pv", "pvh"])
def test_boot_loaders_name_nothing_of_the_dom0(guest_type: str) -> None:
    """--boot pygrub / pvgrub: no kernel, ramdisk, root or extra of the
    dom0's; the command line lives in the guest's menu. Everything else is
    as in the direct config."""
    direct = parse(render(config(guest_type=guest_type)))
    assert direct["type"] == guest_type
    dom0_side = {"kernel", "ramdisk", "root", "extra"}
    pygrub = parse(render(config(boot="pygrub", guest_type=guest_type)))
    assert pygrub == {**{k: v for k, v in direct.items() if k not in dom0_side}, "bootloader": "pygrub"}
    pvgrub = parse(render(config(boot="pvgrub", guest_type=guest_type)))
    loader = {"pv": "/usr/lib/grub-xen/grub-x86_64-xen.bin",
              "pvh": "/usr/lib/grub-xen/grub-i386-xen_pvh.bin"}[guest_type]
    assert pvgrub == {**{k: v for k, v in direct.items() if k not in dom0_side}, "kernel": loader}


def test_command_line_is_what_xl_passes() -> None:
    """xl gives a direct boot `root=<root> <extra>`: the guest's own menu
    repeats exactly that."""
    cfg = config(root_part=5, vsyscall_emulate=True, vendor_args=("elevator=deadline",), user_args=("debug",))
    got = parse(render(cfg))
    assert command_line(cfg) == f"root={got['root']} {got['extra']}"
    assert got["extra"] == "elevator=deadline console=hvc0 net.ifnames=0 vsyscall=emulate debug"


def test_disk_specs() -> None:
    disks = tuple(f"/dev/sd{c}" for c in "bcdef")
    got = parse(render(config(disk_format="qcow2", data_disks=disks)))
    specs = [parse_spec(d) for d in strings(got["disk"])]
    assert [s["vdev"] for s in specs] == ["xvda", "xvdc", "xvdd", "xvde", "xvdf", "xvdg"]
    assert specs[0] == {
        "format": "qcow2", "vdev": "xvda", "access": "rw", "target": "/srv/xen/vsa1.img"
    }
    # Data disks are block devices or raw files whatever the output's format.
    assert {s["format"] for s in specs[1:]} == {"raw"}
    assert [s["target"] for s in specs[1:]] == list(disks)


def test_vif_spec() -> None:
    cfg = config()
    (vif,) = strings(parse(render(cfg))["vif"])
    assert parse_spec(vif) == {"mac": cfg.mac, "bridge": "xenbr0"}


def test_header_names_tool_and_version_without_time() -> None:
    text = render(config())
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert comments and f"vsaimage {__version__}" in comments[0]
    assert not re.search(r"\d{4}-\d{2}-\d{2}|\d{2}:\d{2}:\d{2}", "\n".join(comments))


def test_deterministic() -> None:
    a = render(config(data_disks=("/dev/sdb",)))
    b = render(config(data_disks=("/dev/sdb",)))
    assert a == b
    assert a.endswith("\n")


def test_quoting_round_trips() -> None:
    odd = "/srv/it's \"quoted\" \\ and, comma.img"
    cfg = config(name='vsa "one" \\ it\'s', kernel=odd, data_disks=(odd,))
    got = parse(render(cfg))
    assert got["name"] == cfg.name
    assert got["kernel"] == odd
    assert parse_spec(strings(got["disk"])[1])["target"] == odd


@given(st.text(st.characters(min_codepoint=0x20, blacklist_characters="\x7f"), min_size=1))
def test_any_printable_name_round_trips(name: str) -> None:
    assert parse(render(config(name=name)))["name"] == name


def test_derive_identity_stable() -> None:
    dom_uuid, mac = derive_identity(ROOT_FS_UUID)
    assert (dom_uuid, mac) == derive_identity(ROOT_FS_UUID)
    # Filesystem UUIDs are case-insensitive; so is the identity.
    assert (dom_uuid, mac) == derive_identity(ROOT_FS_UUID.upper())
    assert uuid.UUID(dom_uuid).version == 5
    assert validate_uuid(dom_uuid) == dom_uuid
    assert validate_mac(mac) == mac
    other = derive_identity("0b1c2d3e-aaaa-bbbb-cccc-0123456789ab")
    assert other[0] != dom_uuid and other[1] != mac


@given(st.text(min_size=1).filter(lambda s: s.strip() != ""))
def test_derived_mac_in_xen_oui_local_half(seed: str) -> None:
    _, mac = derive_identity(seed)
    assert re.fullmatch(r"00:16:3e:[0-7][0-9a-f](:[0-9a-f]{2}){2}", mac)


def test_derive_identity_empty_seed() -> None:
    with pytest.raises(BadInput):
        derive_identity("  ")


def test_eight_data_disks_refused_seven_attached() -> None:
    with pytest.raises(BadInput, match=r"8 --data-disk given: at most 7 \(xvdc\.\.xvdi"):
        render(config(data_disks=tuple(f"/dev/sd{c}" for c in "bcdefghi")))
    got = parse(render(config(data_disks=tuple(f"/dev/sd{c}" for c in "bcdefgh"))))
    assert [parse_spec(d)["vdev"] for d in strings(got["disk"])[1:]] == [f"xvd{c}" for c in "cdefghi"]


def test_validate_mac() -> None:
    assert validate_mac("00:16:3E:0A:BB:CC") == "00:16:3e:0a:bb:cc"
    assert validate_mac("00-16-3e-0a-bb-cc") == "00:16:3e:0a:bb:cc"


@pytest.mark.parametrize(
    "mac",
    ["", "00:16:3e:0a:bb", "00:16:3e:0a:bb:cc:dd", "00:16:3e:0a:bb:zz", "0016.3e0a.bbcc",
     "01:16:3e:0a:bb:cc", "00:00:00:00:00:00", "00:16:3e:0a:bb:ccx"],
)
def test_bad_mac(mac: str) -> None:
    with pytest.raises(BadInput):
        validate_mac(mac)


def test_validate_uuid() -> None:
    value = "C8E77060-F256-491A-BF4E-DCEA462C1E1F"
    assert validate_uuid(value) == value.lower()


@pytest.mark.parametrize(
    "value",
    ["", "c8e77060f256491abf4edcea462c1e1f", "{c8e77060-f256-491a-bf4e-dcea462c1e1f}",
     "c8e77060-f256-491a-bf4e-dcea462c1e1", "g8e77060-f256-491a-bf4e-dcea462c1e1f",
     "00000000-0000-0000-0000-000000000000"],
)
def test_bad_uuid(value: str) -> None:
    with pytest.raises(BadInput):
        validate_uuid(value)


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "vsa\n1"},
        {"name": ""},
        {"kernel": "/boot/vmlinuz\nextra = 'x'"},
        {"data_disks": ("/dev/sdb\r",)},
        {"kernel": "vmlinuz"},
        {"ramdisk": "out.initrd"},
        {"disk": "out.img"},
        {"data_disks": ("sdb",)},
        {"bridge": "xenbr0,script=evil"},
        {"bridge": "a-very-long-bridge-name"},
        {"disk_format": "vmdk"},
        {"root_part": 0},
        {"memory": 0},
        {"vcpus": -1},
        {"boot": "grub"},
        {"guest_type": "hvm"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_bad_values(changes: dict[str, object]) -> None:
    with pytest.raises(BadInput) as exc:
        render(config(**changes))
    assert "\n" not in exc.value.message

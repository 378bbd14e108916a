"""The xl domU config written next to the converted image (`X.cfg`).

Rendering is pure and deterministic: the same inputs give the same bytes, so a
pipeline can diff or checksum the config. The guest's identity (uuid and MAC)
is pinned here because the VSA derives its motherboard UUID and serial from
them on every boot.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from vsaimage import __version__
from vsaimage.errors import BadInput
from vsaimage.xen.bootmenu import BOOT_MODES, GRUB_CFG, KERNEL

# Data disks are attached where the VMware VSA had its SCSI host1 disks, in
# the order of its platform file's slots (the udev edit maps them onto those
# /dev/scsi names); LeftHand OS 11.5 and later take seven.
DATA_VDEVS = ("xvdc", "xvdd", "xvde", "xvdf", "xvdg", "xvdh", "xvdi")
# The VM's system disks (SAN/iQ 8 has two: its root is an md mirror over
# them) come before: xvda, then these.
SYSTEM_VDEVS = ("xvda", "xvdb")

# Fixed, so a given root filesystem UUID always yields the same domU identity.
_IDENTITY_NAMESPACE = uuid.UUID("c8e77060-f256-491a-bf4e-dcea462c1e1f")

_UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MAC_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}")
# A Linux interface name: at most 15 bytes, and nothing xl's vif syntax splits on.
_BRIDGE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
DISK_FORMATS = ("raw", "qcow2")
GUEST_TYPES = ("pv", "pvh")
# pvgrub2 as Debian's grub-xen-host installs it on the dom0: a PV kernel
# for a PV guest, a PVH one for PVH.
PVGRUB = {"pv": "/usr/lib/grub-xen/grub-x86_64-xen.bin", "pvh": "/usr/lib/grub-xen/grub-i386-xen_pvh.bin"}
# Xen's hotplug script for a disk that is an iSCSI LUN (a disk converted in
# place over iSCSI): it logs the dom0 in with open-iscsi's iscsiadm and
# attaches the target's LUN 0; its target is `iqn=IQN,portal=IP:PORT`.
BLOCK_ISCSI = "block-iscsi"


@dataclass(frozen=True)
class XlConfig:
    name: str
    kernel: str  # absolute path on the dom0
    ramdisk: str  # absolute path on the dom0
    root_part: int  # partition number of the VSA root on xvda
    uuid: str  # canonical: validated on the command line or derived
    mac: str  # canonical, likewise
    disk: str  # absolute path of the converted image, or the target of disk_script
    memory: int  # MiB
    vcpus: int
    bridge: str
    disk_format: str  # format of `disk`; data disks are always raw
    data_disks: tuple[str, ...] = ()
    # The guest's glibc calls the vsyscall page (see vsa/glibc.py).
    vsyscall_emulate: bool = False
    # direct: `kernel` and `ramdisk` above; pvgrub or pygrub: the guest's own
    # copies, through its /boot/grub/grub.cfg (bootmenu.py).
    boot: str = "direct"
    guest_type: str = "pv"
    # The VM's other system disks (xvdb), each in `disk_format`.
    system_disks: tuple[str, ...] = ()
    # The md array the root is on, as the guest names it (/dev/md200), which
    # the repacked initrd assembles; root_part is then not used.
    root_array: str = ""
    # The VSA's own kernel arguments kept (vsa/cmdline.py), and --extra's.
    vendor_args: tuple[str, ...] = ()
    user_args: tuple[str, ...] = ()
    disk_script: str = ""  # the hotplug script that attaches `disk` ("": a file or device)

    @property
    def root(self) -> str:
        return self.root_array or f"/dev/xvda{self.root_part}"


def iscsi_target(iqn: str, portal: str) -> str:
    """The disk target BLOCK_ISCSI takes for a LUN of `iqn` at `portal` (HOST:PORT)."""
    return f"iqn={iqn},portal={portal}"


def own_args(vsyscall_emulate: bool) -> tuple[str, ...]:
    """The arguments vsaimage adds. net.ifnames=0: the NIC stays eth0, which
    the VSA reads its MAC (its serial) from; a Debian initramfs's udev would
    rename it enX0."""
    return ("console=hvc0", "net.ifnames=0", *(("vsyscall=emulate",) if vsyscall_emulate else ()))


def extra_args(cfg: XlConfig) -> str:
    """The config's `extra`: the VSA's arguments, vsaimage's, then --extra's
    (the kernel takes the last of a repeated one)."""
    return " ".join((*cfg.vendor_args, *own_args(cfg.vsyscall_emulate), *cfg.user_args))


def user_args_of(extra: str) -> tuple[str, ...] | None:
    """The --extra arguments of an `extra` that extra_args wrote: those
    after vsaimage's own; None when its own are not there (edited by hand)."""
    words = extra.split()
    for own in (own_args(True), own_args(False)):
        for i in range(len(words) - len(own) + 1):
            if tuple(words[i:i + len(own)]) == own:
                return tuple(words[i + len(own):])
    return None


def command_line(cfg: XlConfig) -> str:
    """The kernel command line a direct boot gets from xl (root=, then
    extra), which the guest's own menu repeats."""
    return f"root={cfg.root} {extra_args(cfg)}"


def derive_identity(seed: str) -> tuple[str, str]:
    """(uuid, mac) for a guest, derived from its root filesystem UUID.

    The edits never change that UUID, so converting the output again keeps the
    identity (the MAC: xen_mac of a hash of it).
    """
    key = seed.strip().lower()
    if not key:
        raise BadInput("cannot derive the guest's uuid and MAC from an empty seed")
    dom_uuid = str(uuid.uuid5(_IDENTITY_NAMESPACE, key))
    return dom_uuid, xen_mac(hashlib.sha256(b"vsaimage-mac\0" + key.encode("utf-8")).digest())


def xen_mac(tail: bytes) -> str:
    """A MAC in Xen's OUI 00:16:3e whose last three bytes are those of
    `tail`, the top bit of the first of them cleared: the half of the range
    Xen leaves to administrators and tools."""
    return "00:16:3e:" + ":".join(f"{b:02x}" for b in (tail[0] & 0x7F, tail[1], tail[2]))


def validate_uuid(s: str) -> str:
    """The canonical lowercase form of a UUID given on the command line."""
    value = s.strip().lower()
    if not _UUID_RE.fullmatch(value):
        raise BadInput(
            f"bad uuid {s!r}", hint="use the form 01234567-89ab-cdef-0123-456789abcdef"
        )
    if value == "00000000-0000-0000-0000-000000000000":
        raise BadInput("the nil uuid cannot identify a domain")
    return value


def validate_mac(s: str) -> str:
    """The canonical lowercase colon form of a MAC given on the command line."""
    value = s.strip().lower().replace("-", ":")
    if not _MAC_RE.fullmatch(value):
        raise BadInput(f"bad MAC address {s!r}", hint="use the form 00:16:3e:12:34:56")
    first = int(value[:2], 16)
    if first & 0x01:
        raise BadInput(f"MAC address {value} is a multicast address")
    if value == "00:00:00:00:00:00":
        raise BadInput("the all-zero MAC address cannot be used")
    return value


def validate_bridge(s: str) -> str:
    """A bridge name xl's vif syntax and Linux can take."""
    if not _BRIDGE_RE.fullmatch(s):
        raise BadInput(f"bad bridge name {s!r}",
                       hint="an interface name of at most 15 letters, digits, '_', '.', ':' or '-'")
    return s


def validate_name(s: str) -> str:
    """A domain name the config can quote."""
    _quote(s, "the domain name")
    return s


def _quote(value: str, what: str, quote: str = '"') -> str:
    """An xl string literal: backslash and the quote escaped; xl strings cannot
    span lines, and control characters would only be trouble in a config."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise BadInput(f"{what} {value!r} contains a newline or control character")
    escaped = value.replace("\\", "\\\\").replace(quote, "\\" + quote)
    return f"{quote}{escaped}{quote}"


def _absolute(value: str, what: str) -> str:
    if not value.startswith("/"):
        raise BadInput(f"{what} {value!r} must be an absolute path for the xl config")
    return value


def positive(value: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInput(f"{what} must be a positive integer, not {value!r}")
    return value


def _disk_spec(fmt: str, vdev: str, target: str, script: str = "") -> str:
    # target= goes last: xl then takes the rest of the string verbatim, commas
    # included.
    return f"format={fmt}, vdev={vdev}, access=rw, " + (f"script={script}, " if script else "") + \
        f"target={target}"


def check_settings(cfg: XlConfig) -> None:
    """Refuse what the command line put into `cfg` (not what the guest
    did: root_part, uuid, mac, vsyscall_emulate) and the config cannot take.
    Run before any work on the values a convert will use, so that a dry
    run refuses what a real run would, and again by render()."""
    if not cfg.name:
        raise BadInput("the domain name is empty")
    validate_name(cfg.name)
    if len(cfg.data_disks) > len(DATA_VDEVS):
        raise BadInput(too_many_disks(len(cfg.data_disks)))
    if len(cfg.system_disks) >= len(SYSTEM_VDEVS):
        raise BadInput(f"{1 + len(cfg.system_disks)} system disks: at most {len(SYSTEM_VDEVS)} "
                       f"({', '.join(SYSTEM_VDEVS)}; the data disks are {DATA_VDEVS[0]}..{DATA_VDEVS[-1]})")
    if cfg.disk_format not in DISK_FORMATS:
        raise BadInput(f"unknown disk format {cfg.disk_format!r} (raw or qcow2)")
    validate_bridge(cfg.bridge)
    positive(cfg.memory, "memory")
    positive(cfg.vcpus, "vcpus")
    if cfg.boot not in BOOT_MODES:
        raise BadInput(f"unknown boot mode {cfg.boot!r} ({', '.join(BOOT_MODES)})")
    if cfg.guest_type not in GUEST_TYPES:
        raise BadInput(f"unknown guest type {cfg.guest_type!r} ({', '.join(GUEST_TYPES)})")
    paths = [*([] if cfg.disk_script else [(cfg.disk, "the output image")]),
             *((d, f"system disk {v}") for v, d in zip(SYSTEM_VDEVS[1:], cfg.system_disks, strict=False)),
             *((d, f"data disk {v}") for v, d in zip(DATA_VDEVS, cfg.data_disks, strict=False))]
    if cfg.boot == "direct":  # the config names no dom0 file but the disks otherwise
        paths += [(cfg.kernel, "the kernel"), (cfg.ramdisk, "the initrd")]
    for value, what in paths:
        _quote(_absolute(value, what), f"{what} path")
    check_args(cfg.user_args)


def check_args(words: Sequence[str]) -> None:
    """Kernel arguments the config's `extra` string can hold."""
    _quote(" ".join(words), "--extra")


def too_many_disks(count: int) -> str:
    return (f"{count} --data-disk given: at most {len(DATA_VDEVS)} "
            f"({DATA_VDEVS[0]}..{DATA_VDEVS[-1]}, the VSA's data-disk slots from LeftHand OS 11.5 on)")


def render(cfg: XlConfig) -> str:
    """The text of the xl config for `cfg`."""
    check_settings(cfg)
    if not cfg.root_array:
        positive(cfg.root_part, "the root partition number")

    system = cfg.disk if cfg.disk_script else _absolute(cfg.disk, "the output image")
    disks = [_disk_spec(cfg.disk_format, "xvda", system, cfg.disk_script)]
    for vdev, target in zip(SYSTEM_VDEVS[1:], cfg.system_disks, strict=False):
        disks.append(_disk_spec(cfg.disk_format, vdev, _absolute(target, f"system disk {vdev}")))
    for vdev, target in zip(DATA_VDEVS, cfg.data_disks, strict=False):
        disks.append(_disk_spec("raw", vdev, _absolute(target, f"data disk {vdev}")))
    disk_lines = "".join("    " + _quote(d, "disk", quote="'") + ",\n" for d in disks)
    vif = _quote(f"mac={cfg.mac},bridge={cfg.bridge}", "vif", quote="'")
    return (
        f"# xl domU config written by vsaimage {__version__}\n"
        f"# A HP LeftHand / StoreVirtual VSA system disk booted as a Xen {cfg.guest_type.upper()} guest.\n"
        "# uuid and the MAC are pinned: the VSA derives its identity from them.\n"
        f'type = "{cfg.guest_type}"\n'
        f"name = {_quote(cfg.name, 'the domain name')}\n"
        f"{_boot_lines(cfg)}"
        f"memory = {positive(cfg.memory, 'memory')}\n"
        f"vcpus = {positive(cfg.vcpus, 'vcpus')}\n"
        f'uuid = "{cfg.uuid}"\n'
        f"disk = [\n{disk_lines}]\n"
        f"vif = [ {vif} ]\n"
        # A guest that shuts itself down stays down; a reboot (e.g. after a
        # SAN/iQ setting change) comes back; a crash is left for the admin
        # rather than looping.
        'on_poweroff = "destroy"\n'
        'on_reboot = "restart"\n'
        'on_crash = "destroy"\n'
    )


def _boot_lines(cfg: XlConfig) -> str:
    if cfg.boot == "pygrub":
        return (f"# pygrub (xen-utils) boots the default entry of the disk's {GRUB_CFG}:\n"
                f"# its own copy of the kernel ({KERNEL}), nothing of the dom0.\n"
                'bootloader = "pygrub"\n')
    if cfg.boot == "pvgrub":
        return (f"# pvgrub2 (Debian package grub-xen-host) boots the default entry of the\n"
                f"# disk's {GRUB_CFG}: its own copy of the kernel ({KERNEL}).\n"
                f'kernel = "{PVGRUB[cfg.guest_type]}"\n')
    return (f"kernel = {_quote(_absolute(cfg.kernel, 'the kernel'), 'the kernel path')}\n"
            f"ramdisk = {_quote(_absolute(cfg.ramdisk, 'the initrd'), 'the initrd path')}\n"
            f"root = {_quote(cfg.root, 'the root device')}\n"
            f"extra = {_quote(extra_args(cfg), 'the kernel arguments')}\n")

"""The command line's options, each declared once in OPTIONS (its flags,
the commands that take it, its type, default, choices, help and the
README's words, and how it is checked), as mkosi declares its settings: the
argument parser (cli/argv.py), the frozen option sets below (their
defaults) and the README's option table (cli/docs.py, checked by a test)
all read it. The core never sees an argparse Namespace, only the option
sets built once from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vsaimage.edits import DEFAULT_PCI_HACK, PciHack
from vsaimage.edits.catalog import NAMES as STEPS
from vsaimage.errors import BadInput
from vsaimage.initrd.cpio import COMPRESSIONS
from vsaimage.inputs.diskformat import FORMATS
from vsaimage.inputs.source import ImageSource
from vsaimage.plan import check_skips
from vsaimage.vsa import cmdline
from vsaimage.xen import xlcfg
from vsaimage.xen.bootmenu import BOOT_MODES

COMMANDS = ("inspect", "convert", "verify", "initrd")
IMAGE_COMMANDS = ("inspect", "convert", "verify")
_WHAT = ("disk image (raw, VMDK, OVA, VHD, VHDX, qcow2, or raw compressed with gzip, xz or zstd), block "
         "device or iscsi://HOST[:PORT]/IQN/LUN")


@dataclass(frozen=True)
class Option:
    """One option of one or more commands. `validate` takes the parsed value
    and returns it checked (canonical), or raises BadInput: it runs before
    any work. `doc` is the README's text when --help's is too short."""

    flags: tuple[str, ...]  # ("-o", "--output"), or a positional's name
    commands: tuple[str, ...]
    help: str
    type: Callable[[str], Any] | None = None
    default: Any = None
    choices: Sequence[str] | None = None
    metavar: str | None = None
    action: str | None = None  # "store_true", "append" or "count"
    nargs: str | None = None
    required: bool = False
    group: str | None = None  # a heading of its own in --help
    validate: Callable[[Any], Any] | None = None
    doc: str | None = None

    @property
    def dest(self) -> str:
        long = next((f for f in self.flags if f.startswith("--")), self.flags[0])
        return long.lstrip("-").replace("-", "_")

    @property
    def common(self) -> bool:
        """Taken by every command, and by vsaimage itself."""
        return self.commands == ("*",)


def _data_disks(disks: list[Path]) -> list[Path]:
    if len(disks) > len(xlcfg.DATA_VDEVS):
        raise BadInput(xlcfg.too_many_disks(len(disks)))
    return disks


def _extra(texts: list[str]) -> tuple[str, ...]:
    """--extra's words, as the kernel will split them."""
    words = cmdline.split_args(" ".join(texts))
    xlcfg.check_args(words)
    return words


XL = "xl config"
OPTIONS: tuple[Option, ...] = (
    Option(("-v", "--verbose"), ("*",), "more log lines: the roles found, every change and file written",
           action="count", default=0),
    Option(("-q", "--quiet"), ("*",), "only warnings and errors", action="store_true"),
    Option(("--debug",), ("*",), "show tracebacks", action="store_true"),
    Option(("--json",), ("*",), "print one JSON document on stdout (logs stay on stderr)",
           action="store_true"),
    Option(("image",), ("inspect",), _WHAT),
    Option(("image",), ("convert", "verify"), f"{_WHAT} (several: all in one appliance launch)", nargs="+"),
    Option(("input",), ("initrd",), "the initrd to repack", type=Path),
    Option(("--input-format",), IMAGE_COMMANDS, "the image's format (default: told from its content)",
           choices=FORMATS),
    Option(("--disk",), IMAGE_COMMANDS, "an OVA's disk to take, counted from 1 in the VM's hardware order "
           "(default: the first, the system disk); or a tar archive's disk image, by its name in the "
           "archive or counted from 1 (needed when it holds several)", metavar="N|NAME"),
    Option(("--root-part",), IMAGE_COMMANDS, "the root partition's number (default: found by content)",
           type=int, metavar="N", doc="override the detected root partition"),
    Option(("--boot-part",), IMAGE_COMMANDS, "the boot partition's number (default: /boot in the root's "
           "fstab)", type=int, metavar="N", doc="override the detected boot partition"),
    Option(("--system-disk",), IMAGE_COMMANDS, "another system disk of the same VM (SAN/iQ 8: the second "
           "half of the root's md mirror), in the VM's order after IMAGE; repeatable", action="append",
           default=[], metavar="IMG",
           doc="another system disk of the same VM, in the VM's order after `IMAGE` (SAN/iQ 8 keeps its "
               "root on an md RAID1 over two; an OVA gives its own); converted to `OUT-2.img` and attached "
               "as `xvdb`; repeatable"),
    Option(("--degraded",), IMAGE_COMMANDS, "go on with an md root one of whose members is not given",
           action="store_true",
           doc="go on with an md root whose other members are not given (without it, refused: the halves "
               "would differ at the next assembly)"),
    Option(("--bundle",), ("inspect",), "also write a tarball to send back when an edit fails on a real "
           "image: a manifest and copies of the text files the edits read (no binaries)", type=Path,
           metavar="OUT.tar.gz"),
    Option(("--force",), ("inspect",), "overwrite an existing bundle", action="store_true"),
    Option(("--kernel",), ("convert",), "the dom0's Xen-capable kernel (bzImage)", type=Path, required=True),
    Option(("--initrd",), ("convert",), "its initramfs-tools initrd", type=Path, required=True),
    Option(("--initrd",), ("verify",), "also check the repacked initrd", type=Path),
    Option(("-o", "--output"), ("convert",), "output disk; OUT.initrd and OUT.cfg are written beside it "
           "(several images: an existing directory, each image's files named after it; --in-place: only "
           "OUT.initrd and OUT.cfg, by default beside a disk file)", type=Path, metavar="OUT.img|DIR"),
    Option(("--in-place",), ("convert",), "convert the disk where it is, with no copy (a raw file, a block "
           "device, an iSCSI LUN, or a qcow2 file); the settings of the xl config it replaces are kept",
           action="store_true",
           doc="convert the disk where it is, with no copy (a raw file, a block device, an iSCSI LUN, or a "
               "qcow2 file: not while a domain runs from it; one system disk: not a SAN/iQ 8 md root); "
               "writes OUT.initrd and OUT.cfg, replacing them, and keeps what the config there says (name, "
               "uuid, MAC, bridge, memory, vCPUs, data disks, `--boot`, `--type`, `--extra`) for each "
               "option not given (below)"),
    Option(("-o", "--output"), ("initrd",), "the repacked initrd", type=Path, required=True),
    Option(("--format",), ("convert",), "output disk format", choices=xlcfg.DISK_FORMATS, default="raw",
           doc="`qcow2` writes the disk as qcow2"),
    Option(("--pci-hack",), ("convert", "verify"), "fake /proc/bus/pci/devices by an initrd bind mount, by "
           "patching the binaries that read it, or both (default)", choices=tuple(PciHack),
           default=DEFAULT_PCI_HACK.value,
           doc="how the fake PCI list is shown (below; default both): `binary` patches the binaries and "
               "gives an initrd without `pcihack` (taken out if the given one has it); `bind` patches no "
               "binary"),
    Option(("--console-autologin",), ("convert",), "root shell on hvc0 without a password (the original "
           "hack; insecure)", action="store_true",
           doc="root shell on `hvc0` without a password, as the original hack did (insecure; warns)"),
    Option(("--skip",), ("convert", "verify"), "leave a step out", action="append", default=[],
           metavar="STEP", validate=check_skips,
           doc=f"leave a step out ({', '.join(f'`{s}`' for s in STEPS)}); `--skip pci` also writes the "
               "initrd as given (recompressed only with `--initrd-compression`; missing drivers are still "
               "added, below)"),
    Option(("--force",), ("convert", "initrd"), "overwrite existing outputs", action="store_true"),
    Option(("--dry-run",), ("convert",), "print the plan and stop", action="store_true",
           doc="print the plan and stop: every step (disk copy, each edit, modules, initrd, xl config) with "
               "the output file or guest paths it would write; with `--json`, the document a convert "
               "prints, `dry_run` true"),
    Option(("--kernel-version",), ("convert",), "override the version read from the kernel header"),
    Option(("--force-kernel",), ("convert",), "use the kernel even when its config says it cannot run the "
           "guest's 32-bit programs, or cannot be read", action="store_true",
           doc="use `--kernel` even when it cannot be shown to run a 32-bit userland (its "
               "`CONFIG_IA32_EMULATION`, read from `config-VERSION` beside it or its embedded config, is off "
               "or unreadable; below)"),
    Option(("--kernel-version",), ("verify",), "check the modules of this version (and, with --initrd, its "
           "drivers against /lib/modules/VERSION)"),
    Option(("--modules-dir",), ("convert",), "modules tree to copy, and to add the initrd's missing "
           "drivers from (default /lib/modules/<kernel version>)", type=Path, metavar="DIR"),
    Option(("--modules",), ("convert",), "copy the whole modules tree, only what the guest needs, or "
           "the whole tree when the guest's root has room for it (auto)",
           choices=("auto", "full", "minimal"), default="auto",
           doc="`minimal`: copy only the modules the guest needs (Xen block/net, ext3/4, md, raid0/1, brd, "
               "what the initrd loads) instead of the whole tree: under 1 % of the bytes, much faster; "
               "`auto`: the whole tree when it leaves 64 MiB free in the root filesystem, else the minimal "
               "set (the plan says which and why); either refused when it does not fit"),
    Option(("--initrd-compression",), ("convert", "initrd"), "recompress the initrd (default: as the input)",
           choices=COMPRESSIONS),
    Option(("--name",), ("convert",), "domain name (default: the output's name)", group=XL,
           validate=xlcfg.validate_name),
    Option(("--memory",), ("convert",), "the domain's memory", type=int, default=3072, metavar="MiB",
           group=XL, validate=lambda n: xlcfg.positive(n, "memory"),
           # SAN/iQ needs about 3 GiB to run; xl's own default (128 MiB) would
           # not even get the VSA through its boot scripts.
           doc="the domain's memory in MiB (SAN/iQ needs about 3 GiB)"),
    Option(("--vcpus",), ("convert",), "the domain's virtual CPUs", type=int, default=2, group=XL,
           validate=lambda n: xlcfg.positive(n, "vcpus")),
    Option(("--bridge",), ("convert",), "the dom0 bridge of eth0's vif", default="xenbr0", group=XL,
           validate=xlcfg.validate_bridge),
    Option(("--mac",), ("convert",), "MAC of eth0 (default: the one the VSA recorded, its serial id; else "
           "derived from the root filesystem UUID)", group=XL, validate=xlcfg.validate_mac),
    Option(("--uuid",), ("convert",), "domain UUID (default: derived from the root filesystem UUID)",
           group=XL, validate=xlcfg.validate_uuid),
    Option(("--new-identity",), ("convert",), "a fresh random MAC and UUID, for a clone that must not pose "
           "as the original", action="store_true", group=XL,
           doc="a fresh random MAC and domain UUID, for a clone that must not pose as the original "
               "(otherwise the VSA keeps its own MAC, below)"),
    Option(("--data-disk",), ("convert",), "a data disk (xvdc..xvdi, at most seven; repeatable)",
           action="append", default=[], type=Path, metavar="PATH", group=XL, validate=_data_disks,
           doc="a data disk (xvdc..xvdi, at most seven, in the order of the VSA's data-disk slots; "
               "repeatable)"),
    Option(("--extra",), ("convert",), "more kernel arguments for the guest, after the VSA's and "
           "vsaimage's (repeatable)", action="append", default=[], metavar="ARGS", group=XL,
           validate=_extra,
           doc="more kernel arguments for the guest (quote several: `--extra \"loglevel=7 debug\"`; "
               "repeatable), after the VSA's own and vsaimage's (below)"),
    Option(("--boot",), ("convert",), "direct: the xl config names the kernel and initrd on the dom0; "
           "pvgrub or pygrub: copy them into the VSA's /boot with a GRUB 2 menu, and the xl config names "
           "only the boot loader (the domU survives dom0 kernel upgrades)", choices=BOOT_MODES,
           default="direct", group=XL,
           doc="where the guest's kernel comes from: the dom0's files (`direct`, the default) or the disk's "
               "own copies through a boot loader (below)"),
    Option(("--type",), ("convert",), "Xen guest type: pv, or pvh (needs hardware virtualisation on the "
           "host)", choices=xlcfg.GUEST_TYPES, default="pv", group=XL,
           doc="the Xen guest type (default `pv`; below)"),
)


def options_of(command: str) -> list[Option]:
    """The options `command` takes, common ones first, in table order."""
    return [o for o in OPTIONS if o.common or command in o.commands]


def default(dest: str) -> Any:
    """The default of the option `dest`: the option sets take theirs from
    the table."""
    return next(o.default for o in OPTIONS if o.dest == dest and not o.common)

_PCI_HACK = PciHack(default("pci_hack"))


@dataclass(frozen=True)
class Roles:
    """Which disks make up the VSA's system, and where its roles are."""

    root_part: int | None = None
    boot_part: int | None = None
    system_disks: tuple[ImageSource, ...] = ()  # after the image, in the VM's order
    degraded: bool = False

    def disks(self, image: ImageSource) -> tuple[ImageSource, ...]:
        """Every system disk, the image first (xvda)."""
        return (image, *self.system_disks)


@dataclass(frozen=True)
class InspectOptions:
    image: ImageSource
    roles: Roles = Roles()
    bundle: Path | None = None
    force: bool = False


@dataclass(frozen=True)
class VerifyOptions:
    image: ImageSource
    roles: Roles = Roles()
    initrd: Path | None = None
    kernel_version: str | None = None
    pci_hack: PciHack = _PCI_HACK
    skip: frozenset[str] = frozenset()


@dataclass(frozen=True)
class XlOptions:
    name: str | None = None
    memory: int = default("memory")  # MiB
    vcpus: int = default("vcpus")
    bridge: str = default("bridge")
    mac: str | None = None
    uuid: str | None = None
    data_disks: tuple[Path, ...] = ()
    extra: tuple[str, ...] = ()  # kernel arguments, split
    new_identity: bool = False
    boot: str = default("boot")  # xen.bootmenu.BOOT_MODES
    guest_type: str = default("type")  # xen.xlcfg.GUEST_TYPES
    # --in-place: the fields above taken from the config it replaces, and that config
    kept: frozenset[str] = frozenset()
    kept_from: Path | None = None


@dataclass(frozen=True)
class ConvertOptions:
    image: ImageSource
    kernel: Path
    initrd: Path
    output: Path
    format: str = default("format")
    pci_hack: PciHack = _PCI_HACK
    console_autologin: bool = False
    skip: frozenset[str] = frozenset()
    roles: Roles = Roles()
    force: bool = False
    dry_run: bool = False
    kernel_version: str | None = None
    force_kernel: bool = False
    modules_dir: Path | None = None
    modules: str = default("modules")  # auto, full or minimal
    initrd_compression: str | None = None
    xl: XlOptions = XlOptions()
    # the disk is converted where it is; `output` then names only OUT.initrd and OUT.cfg
    in_place: bool = False


@dataclass(frozen=True)
class Refused:
    """An image of several that its arguments already rule out (no such
    file, no partition table): it fails alone, the others go on."""

    text: str  # as the user wrote it
    error: BadInput


@dataclass(frozen=True)
class BatchOptions:
    """Several images converted (or verified) in one appliance launch, in the
    order given. Each convert's options differ only in `image` and `output`
    (every output named after its input); the first one's settings are
    everyone's."""

    images: tuple[ConvertOptions | Refused, ...]


@dataclass(frozen=True)
class VerifyBatch:
    """verify with several images, in one read-only appliance launch."""

    images: tuple[VerifyOptions | Refused, ...]


@dataclass(frozen=True)
class InitrdOptions:
    input: Path
    output: Path
    compression: str | None = None
    force: bool = False

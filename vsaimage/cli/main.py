"""Command line: parses arguments into option sets, runs the command, maps
exceptions to exit codes (0 ok, 1 failure, 2 bad input or usage, 130
interrupted) and picks the reporter. Nothing else."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from vsaimage import __version__
from vsaimage.cli.report import Reporter
from vsaimage.commands.options import (
    BatchOptions,
    ConvertOptions,
    InitrdOptions,
    InspectOptions,
    Refused,
    Roles,
    VerifyBatch,
    VerifyOptions,
    XlOptions,
)
from vsaimage.edits import PciHack
from vsaimage.errors import BadInput, Failure, ImageError
from vsaimage.initrd.cpio import COMPRESSIONS
from vsaimage.inputs.diskformat import FORMATS
from vsaimage.inputs.source import ImageSource, parse_image
from vsaimage.outputs.staging import OutputPaths
from vsaimage.xen.bootmenu import BOOT_MODES
from vsaimage.xen.xlcfg import DISK_FORMATS, GUEST_TYPES, validate_mac, validate_uuid

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

_EXAMPLES = {
    "inspect": """examples:
  make demo            # builds demo/vsa.img, the example VSA disk
  vsaimage inspect demo/vsa.img
  vsaimage inspect demo/vsa.img --json
  vsaimage inspect iscsi://127.0.0.1:3260/iqn.2003-10.com.lefthandnetworks:vsa/0
  vsaimage inspect vsa.img --bundle vsa-report.tar.gz   # what to send back with a bug report
  vsaimage inspect StoreVirtual-VSA.ova     # the VM's disks, and which is the system disk
  vsaimage inspect vsa.img.gz               # VMDK, VHD(X), qcow2 and xz/zstd work the same way
""",
    "convert": """examples:
  V=$(ls /boot/vmlinuz-* | sort -V | tail -n 1 | sed 's|.*/vmlinuz-||')
  vsaimage convert demo/vsa.img --kernel /boot/vmlinuz-$V \\
      --initrd /boot/initrd.img-$V -o demo/vsa-xen.img --force
  vsaimage convert demo/vsa.img --kernel /boot/vmlinuz-$V \\
      --initrd /boot/initrd.img-$V -o demo/vsa-xen.img --dry-run
  vsaimage convert StoreVirtual-VSA.ova --disk 1 --kernel /boot/vmlinuz-$V \\
      --initrd /boot/initrd.img-$V -o vsa-xen.img
  xl create demo/vsa-xen.cfg      # on the Xen dom0
  vsaimage convert vsa1.img vsa2.img vsa3.img --kernel /boot/vmlinuz-$V \\
      --initrd /boot/initrd.img-$V -o xen/   # one launch: xen/vsa1.img, xen/vsa1.initrd, ...
  vsaimage convert demo/vsa.img --kernel /boot/vmlinuz-$V --initrd /boot/initrd.img-$V \\
      -o demo/vsa-own-kernel.img --boot pygrub --type pvh   # the disk carries its kernel

writes OUT.img (the disk), OUT.initrd (the repacked initrd) and OUT.cfg (the
xl config); nothing is written under those names unless everything succeeded.
With several images, -o is a directory and each image's three files are named
after it; one image failing does not stop the others.
steps (for --skip): mobo-uuid, pci, udev, fstab, platform, drivers, modules, console,
bootloader
""",
    "verify": """examples:
  vsaimage verify demo/vsa-xen.img --initrd demo/vsa-xen.initrd
  vsaimage verify demo/vsa.img --json     # the unconverted image: exit 1
  vsaimage verify xen/vsa1.img xen/vsa2.img --initrd xen/vsa1.initrd   # one launch
""",
    "initrd": """examples:
  V=$(ls /boot/vmlinuz-* | sort -V | tail -n 1 | sed 's|.*/vmlinuz-||')
  vsaimage initrd /boot/initrd.img-$V -o demo/vsa-xen.initrd --force
  vsaimage initrd /boot/initrd.img-$V -o demo/x.initrd --initrd-compression gzip
""",
}


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0, help="more log lines")
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument("--json", action="store_true",
                        help="print one JSON document on stdout (logs stay on stderr)")

    p = argparse.ArgumentParser(
        prog="vsaimage", parents=[common],
        description="Turn a dd'd HP LeftHand / StoreVirtual VSA system disk into a Xen PV domU "
                    "disk, offline and without root.")
    p.add_argument("--version", action="version", version=f"vsaimage {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], help=help_, description=help_,
                              epilog=_EXAMPLES[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    def roles(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--root-part", type=int, metavar="N", help="the root partition's number "
                        "(default: found by content)")
        sp.add_argument("--boot-part", type=int, metavar="N", help="the boot partition's number "
                        "(default: /boot in the root's fstab)")

    def image(sp: argparse.ArgumentParser, several: str | None = None) -> None:
        what = ("disk image (raw, VMDK, OVA, VHD, VHDX, qcow2, or raw compressed with gzip, xz or "
                "zstd), block device or iscsi://HOST[:PORT]/IQN/LUN")
        if several is None:
            sp.add_argument("image", help=what)
        else:
            sp.add_argument("image", nargs="+", help=f"{what} ({several})")
        sp.add_argument("--input-format", choices=FORMATS,
                        help="the image's format (default: told from its content)")
        sp.add_argument("--disk", type=int, metavar="N",
                        help="an OVA's disk to take, counted from 1 in the VM's hardware order "
                        "(default: the first, the system disk)")

    i = cmd("inspect", "Show an image's partitions, roles, VSA version and the status of each edit.")
    image(i)
    roles(i)
    i.add_argument("--bundle", type=Path, metavar="OUT.tar.gz",
                   help="also write a tarball to send back when an edit fails on a real image: "
                        "a manifest and copies of the text files the edits read (no binaries)")
    i.add_argument("--force", action="store_true", help="overwrite an existing bundle")

    c = cmd("convert", "Convert a VSA system disk into a Xen PV domU disk, initrd and xl config.")
    image(c, several="several: all converted in one appliance launch")
    c.add_argument("--kernel", required=True, type=Path, help="the dom0's Xen-capable kernel (bzImage)")
    c.add_argument("--initrd", required=True, type=Path, help="its initramfs-tools initrd")
    c.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.img|DIR",
                   help="output disk; OUT.initrd and OUT.cfg are written beside it (several images: "
                   "an existing directory, each image's files named after it)")
    c.add_argument("--format", choices=DISK_FORMATS, default=ConvertOptions.format,
                   help="output disk format")
    c.add_argument("--pci-hack", choices=[m.value for m in PciHack], default=ConvertOptions.pci_hack.value,
                   help="fake /proc/bus/pci/devices by an initrd bind mount, by patching the "
                        "binaries that read it, or both (default)")
    c.add_argument("--console-autologin", action="store_true",
                   help="root shell on hvc0 without a password (the original hack; insecure)")
    c.add_argument("--skip", action="append", default=[], metavar="STEP", help="leave a step out")
    roles(c)
    c.add_argument("--force", action="store_true", help="overwrite existing outputs")
    c.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    c.add_argument("--kernel-version", help="override the version read from the kernel header")
    c.add_argument("--modules-dir", type=Path,
                   help="modules tree to copy, and to add the initrd's missing drivers from "
                   "(default /lib/modules/<kernel version>)")
    c.add_argument("--modules", choices=("full", "minimal"), default="full",
                   help="copy the whole modules tree, or only what the guest needs")
    c.add_argument("--initrd-compression", choices=COMPRESSIONS,
                   help="recompress the initrd (default: as the input)")
    x = c.add_argument_group("xl config")
    x.add_argument("--name", help="domain name (default: the output's name)")
    x.add_argument("--memory", type=int, default=XlOptions.memory, metavar="MiB")
    x.add_argument("--vcpus", type=int, default=XlOptions.vcpus)
    x.add_argument("--bridge", default=XlOptions.bridge)
    x.add_argument("--mac", help="MAC of eth0 (default: the one the VSA recorded, its serial id; "
                   "else derived from the root filesystem UUID)")
    x.add_argument("--uuid", help="domain UUID (default: derived from the root filesystem UUID)")
    x.add_argument("--new-identity", action="store_true",
                   help="a fresh random MAC and UUID, for a clone that must not pose as the original")
    x.add_argument("--data-disk", action="append", default=[], type=Path, metavar="PATH",
                   help="a data disk (xvdc..xvdg, at most five; repeatable)")
    x.add_argument("--boot", choices=BOOT_MODES, default=XlOptions.boot,
                   help="direct: the xl config names the kernel and initrd on the dom0; pvgrub or "
                   "pygrub: copy them into the VSA's /boot with a GRUB 2 menu, and the xl config "
                   "names only the boot loader (the domU survives dom0 kernel upgrades)")
    x.add_argument("--type", dest="guest_type", choices=GUEST_TYPES, default=XlOptions.guest_type,
                   help="Xen guest type: pv, or pvh (needs hardware virtualisation on the host)")

    v = cmd("verify", "Check that every edit is in place; exit 0 only if so.")
    image(v, several="several: all checked in one appliance launch")
    v.add_argument("--initrd", type=Path, help="also check the repacked initrd")
    v.add_argument("--kernel-version", help="check the modules of this version (and, with --initrd, "
                   "its drivers against /lib/modules/VERSION)")
    v.add_argument("--pci-hack", choices=[m.value for m in PciHack], default=VerifyOptions.pci_hack.value)
    v.add_argument("--skip", action="append", default=[], metavar="STEP")
    roles(v)

    r = cmd("initrd", "Add the pcihack bind mount to an initramfs-tools initrd.")
    r.add_argument("input", type=Path, help="the initrd to repack")
    r.add_argument("-o", "--output", required=True, type=Path)
    r.add_argument("--initrd-compression", choices=COMPRESSIONS)
    r.add_argument("--force", action="store_true")
    return p


def _roles(a: argparse.Namespace) -> Roles:
    return Roles(a.root_part, a.boot_part)


def _run(a: argparse.Namespace, rep: Reporter) -> dict[str, Any]:
    # Imported here so that `--help` and usage errors stay instant.
    from vsaimage.commands import convert, survey
    from vsaimage.commands import initrd as initrd_command
    from vsaimage.plan import check_skips

    if a.command == "initrd":
        return initrd_command.run(InitrdOptions(a.input, a.output, a.initrd_compression, a.force), rep)

    def parse(text: str) -> ImageSource:
        return parse_image(text, input_format=a.input_format, disk=a.disk)

    if a.command == "inspect":
        return survey.inspect(InspectOptions(parse(a.image), _roles(a), a.bundle, a.force), rep)
    several = len(a.image) > 1
    if a.command == "verify":
        skip = check_skips(a.skip)

        def verify_options(image: ImageSource) -> VerifyOptions:
            return VerifyOptions(image, _roles(a), a.initrd, a.kernel_version, PciHack(a.pci_hack), skip)

        if several:
            return survey.verify_batch(VerifyBatch(_each_image(a.image, parse, verify_options)), rep)
        return survey.verify(verify_options(parse(a.image[0])), rep)
    if len(a.data_disk) > 5:
        raise BadInput(f"{len(a.data_disk)} --data-disk given: at most 5 (xvdc..xvdg)")
    if several:
        _check_batch(a)
    skip = check_skips(a.skip)
    # MAC and UUID are checked here, once; the core takes them as given
    if a.boot != "direct" and "bootloader" in skip:
        raise BadInput(f"--boot {a.boot} with --skip bootloader: the disk would have no kernel to boot",
                       hint="drop one of them")
    xl = XlOptions(a.name, a.memory, a.vcpus, a.bridge, a.mac and validate_mac(a.mac),
                   a.uuid and validate_uuid(a.uuid), tuple(a.data_disk), a.new_identity,
                   a.boot, a.guest_type)

    def convert_options(image: ImageSource) -> ConvertOptions:
        return ConvertOptions(
            image=image, kernel=a.kernel, initrd=a.initrd,
            output=OutputPaths.in_directory(a.output, image.name).image if several else a.output,
            format=a.format, pci_hack=PciHack(a.pci_hack), console_autologin=a.console_autologin,
            skip=skip, roles=_roles(a), force=a.force, dry_run=a.dry_run,
            kernel_version=a.kernel_version, modules_dir=a.modules_dir,
            modules_minimal=a.modules == "minimal", initrd_compression=a.initrd_compression, xl=xl)

    if several:
        images = _each_image(a.image, parse, convert_options)
        _check_names([o for o in images if isinstance(o, ConvertOptions)])
        return convert.convert_batch(BatchOptions(images), rep)
    opts = convert_options(parse(a.image[0]))
    return convert.convert(opts, rep)


_Options = TypeVar("_Options", ConvertOptions, VerifyOptions)


def _each_image(texts: Sequence[str], parse: Callable[[str], ImageSource],
                options: Callable[[ImageSource], _Options]) -> tuple[_Options | Refused, ...]:
    """Each image's options; an image refused at once (no such file, no
    partition table) fails alone, as one that fails later would."""
    found: list[_Options | Refused] = []
    for text in texts:
        try:
            found.append(options(parse(text)))
        except ImageError as e:
            found.append(Refused(text, e))
    return tuple(found)


def _check_batch(a: argparse.Namespace) -> None:
    """Several images: -o is a directory, and nothing may give every image
    the same identity or the same data disk."""
    if not a.output.is_dir():
        raise BadInput(f"-o {a.output}: with several images, -o names an existing directory",
                       hint="each image's .img, .initrd and .cfg are named after it there")
    shared = [flag for flag, value in (("--name", a.name), ("--mac", a.mac), ("--uuid", a.uuid),
                                       ("--data-disk", a.data_disk)) if value]
    if shared:
        raise BadInput(f"{shared[0]} with several images would give them all the same one",
                       hint="convert that image on its own")


def _check_names(images: Sequence[ConvertOptions]) -> None:
    seen: dict[Path, ConvertOptions] = {}
    for o in images:
        if o.output in seen:
            raise BadInput(f"{seen[o.output].image} and {o.image} would both be written to {o.output}",
                           hint="rename one of them, or convert it on its own")
        seen[o.output] = o


def _show(a: argparse.Namespace, doc: dict[str, Any], rep: Reporter) -> None:
    from vsaimage.cli import report

    if a.json:
        rep.json(doc)
        return
    shows: dict[str, Callable[[Reporter, dict[str, Any]], None]] = {
        "inspect": report.show_inspect, "verify": report.show_verify,
        "convert": report.show_convert, "initrd": report.show_initrd,
    }
    if doc.get("batch"):
        report.show_batch(rep, doc, shows[a.command])
    else:
        shows[a.command](rep, doc)


class _Terminated(Exception):
    pass


def _on_sigterm(_sig: int, _frame: FrameType | None) -> None:
    raise _Terminated


def _run_cancellably(a: argparse.Namespace, rep: Reporter) -> dict[str, Any]:
    """Run the command in a worker thread so that Ctrl-C and SIGTERM take
    effect at once, even while the worker is blocked in the appliance."""
    from vsaimage import cancel

    outcome: dict[str, Any] = {}
    # An Event, not Thread.join(): a join interrupted by Ctrl-C marks the
    # thread as finished in CPython 3.11, and a second join would not wait.
    done = threading.Event()

    def work() -> None:
        try:
            outcome["doc"] = _run(a, rep)
        except BaseException as e:  # re-raised in the main thread
            outcome["error"] = e
        finally:
            done.set()

    threading.Thread(target=work, name="vsaimage", daemon=True).start()
    try:
        while not done.wait(0.2):
            pass
    except (KeyboardInterrupt, _Terminated):
        cancel.cancel()
        done.wait(60)  # the worker removes its temporaries as it unwinds
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["doc"]  # type: ignore[no-any-return]


def main(argv: Sequence[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    rep = Reporter(verbosity=-1 if a.quiet else a.verbose)
    # SIGTERM unwinds like Ctrl-C, so temporaries are removed on the way out.
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        doc = _run_cancellably(a, rep)
        _show(a, doc, rep)
        return _batch_exit(doc) if doc.get("batch") else EXIT_OK if doc.get("success", True) else EXIT_FAILURE
    except (KeyboardInterrupt, _Terminated):
        rep.close()
        rep.error("interrupted; nothing was left under the output names")
        return EXIT_INTERRUPTED
    except Exception as e:  # VsaError, or a bug or an unexpected appliance failure
        return _fail(a, rep, Failure.of(e), e)
    finally:
        rep.close()
        signal.signal(signal.SIGTERM, previous)


def _batch_exit(doc: dict[str, Any]) -> int:
    """Several images: 0 when every one succeeded, 2 when each that failed
    was refused as bad input, else 1 (the document says which and why)."""
    codes = {d["error"]["exit_code"] if "error" in d else EXIT_FAILURE
             for d in doc["images"] if not d["success"]}
    if not codes:
        return EXIT_OK
    return EXIT_BAD_INPUT if codes == {EXIT_BAD_INPUT} else EXIT_FAILURE


def _fail(a: argparse.Namespace, rep: Reporter, failure: Failure, exc: BaseException) -> int:
    rep.close()
    if a.debug:
        traceback.print_exception(exc, file=sys.stderr)
    rep.error(failure.message, failure.hint)
    if a.json:
        rep.json({"success": False, "command": a.command, "error": failure.as_dict()})
    return failure.exit_code

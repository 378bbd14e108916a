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
from typing import Any

from vsaimage import __version__
from vsaimage.cpio import COMPRESSIONS
from vsaimage.diskformat import FORMATS
from vsaimage.edits import PciHack
from vsaimage.errors import BadInput, VsaError
from vsaimage.options import (
    ConvertOptions,
    InitrdOptions,
    InspectOptions,
    Roles,
    VerifyOptions,
    XlOptions,
)
from vsaimage.report import Reporter
from vsaimage.xlcfg import DISK_FORMATS, validate_mac, validate_uuid

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

writes OUT.img (the disk), OUT.initrd (the repacked initrd) and OUT.cfg (the
xl config); nothing is written under those names unless everything succeeded.
steps (for --skip): mobo-uuid, pci, udev, fstab, platform, drivers, modules, console
""",
    "verify": """examples:
  vsaimage verify demo/vsa-xen.img --initrd demo/vsa-xen.initrd
  vsaimage verify demo/vsa.img --json     # the unconverted image: exit 1
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

    def image(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("image", help="disk image (raw, VMDK, OVA, VHD, VHDX, qcow2, or raw compressed "
                        "with gzip, xz or zstd), block device or iscsi://HOST[:PORT]/IQN/LUN")
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
    image(c)
    c.add_argument("--kernel", required=True, type=Path, help="the dom0's Xen-capable kernel (bzImage)")
    c.add_argument("--initrd", required=True, type=Path, help="its initramfs-tools initrd")
    c.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.img",
                   help="output disk; OUT.initrd and OUT.cfg are written beside it")
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

    v = cmd("verify", "Check that every edit is in place; exit 0 only if so.")
    image(v)
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
    from vsaimage import convert, initrd_command, survey
    from vsaimage.plan import check_skips
    from vsaimage.source import parse_image

    if a.command == "initrd":
        return initrd_command.run(InitrdOptions(a.input, a.output, a.initrd_compression, a.force), rep)
    image = parse_image(a.image, input_format=a.input_format, disk=a.disk)
    if a.command == "inspect":
        return survey.inspect(InspectOptions(image, _roles(a), a.bundle, a.force), rep)
    if a.command == "verify":
        return survey.verify(VerifyOptions(image, _roles(a), a.initrd, a.kernel_version,
                                           PciHack(a.pci_hack), check_skips(a.skip)), rep)
    if len(a.data_disk) > 5:
        raise BadInput(f"{len(a.data_disk)} --data-disk given: at most 5 (xvdc..xvdg)")
    opts = ConvertOptions(
        image=image, kernel=a.kernel, initrd=a.initrd, output=a.output, format=a.format,
        pci_hack=PciHack(a.pci_hack), console_autologin=a.console_autologin,
        skip=check_skips(a.skip), roles=_roles(a), force=a.force, dry_run=a.dry_run,
        kernel_version=a.kernel_version, modules_dir=a.modules_dir,
        modules_minimal=a.modules == "minimal", initrd_compression=a.initrd_compression,
        # MAC and UUID are checked here, once; the core takes them as given
        xl=XlOptions(a.name, a.memory, a.vcpus, a.bridge, a.mac and validate_mac(a.mac),
                     a.uuid and validate_uuid(a.uuid), tuple(a.data_disk), a.new_identity),
    )
    if opts.console_autologin:
        rep.warn("--console-autologin: hvc0 gives a root shell to anyone on the Xen console")
    return (convert.dry_run if opts.dry_run else convert.convert)(opts, rep)


def _show(a: argparse.Namespace, doc: dict[str, Any], rep: Reporter) -> None:
    from vsaimage import report

    if a.json:
        rep.json(doc)
        return
    shows: dict[str, Callable[[Reporter, dict[str, Any]], None]] = {
        "inspect": report.show_inspect, "verify": report.show_verify,
        "convert": report.show_convert, "initrd": report.show_initrd,
    }
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
        return EXIT_OK if doc.get("success", True) else EXIT_FAILURE
    except (KeyboardInterrupt, _Terminated):
        rep.close()
        rep.error("interrupted; nothing was left under the output names")
        return EXIT_INTERRUPTED
    except VsaError as e:
        return _fail(a, rep, e.exit_code, e.kind, e.message, e.hint, e)
    except Exception as e:  # a bug or an unexpected appliance failure
        return _fail(a, rep, EXIT_FAILURE, "internal", f"{type(e).__name__}: {e}".splitlines()[0],
                     "run again with --debug for a traceback", e)
    finally:
        rep.close()
        signal.signal(signal.SIGTERM, previous)


def _fail(a: argparse.Namespace, rep: Reporter, code: int, kind: str, message: str,
          hint: str | None, exc: BaseException) -> int:
    rep.close()
    if a.debug:
        traceback.print_exception(exc, file=sys.stderr)
    rep.error(message, hint)
    if a.json:
        rep.json({"success": False, "command": a.command,
                  "error": {"kind": kind, "message": message, "hint": hint}})
    return code

"""The argument parser, built from the option table (commands/options.py),
and the option sets built once from what it parsed: every option checked
before any work."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from vsaimage import __version__
from vsaimage.commands import inplace
from vsaimage.commands.options import (
    COMMANDS,
    BatchOptions,
    ConvertOptions,
    InitrdOptions,
    InspectOptions,
    Option,
    Refused,
    Roles,
    VerifyBatch,
    VerifyOptions,
    XlOptions,
    options_of,
)
from vsaimage.edits import PciHack
from vsaimage.edits.catalog import NAMES as STEPS
from vsaimage.errors import BadInput, ImageError
from vsaimage.inputs.source import ImageSource, parse_image
from vsaimage.outputs.staging import OutputPaths

HELP = {
    "inspect": "Show an image's partitions, roles, VSA version and the status of each edit.",
    "convert": "Convert a VSA system disk into a Xen PV domU disk, initrd and xl config.",
    "verify": "Check that every edit is in place; exit 0 only if so.",
    "initrd": "Add the pcihack bind mount to an initramfs-tools initrd.",
}

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
    "convert": f"""examples:
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
  vsaimage convert --in-place demo/vsa-xen.img --kernel /boot/vmlinuz-$V \\
      --initrd /boot/initrd.img-$V    # after the VSA upgraded itself: no copy; keeps vsa-xen.cfg's identity

writes OUT.img (the disk), OUT.initrd (the repacked initrd) and OUT.cfg (the
xl config); nothing is written under those names unless everything succeeded.
With several images, -o is a directory and each image's three files are named
after it; one image failing does not stop the others. With --in-place the disk
is converted where it is and only OUT.initrd and OUT.cfg are written (beside
the disk file unless -o names them).
steps (for --skip): {", ".join(STEPS[:8])},
{", ".join(STEPS[8:])}
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


def _add(parser: argparse.ArgumentParser | argparse._ArgumentGroup, option: Option) -> None:
    kwargs: dict[str, Any] = {"help": option.help}
    for key in ("type", "choices", "metavar", "action", "nargs"):
        if getattr(option, key) is not None:
            kwargs[key] = getattr(option, key)
    if option.default is not None:
        # argparse would append to the table's own list
        kwargs["default"] = list(option.default) if isinstance(option.default, list) else option.default
    if option.required:
        kwargs["required"] = True
    if option.flags[0].startswith("-"):
        kwargs["dest"] = option.dest
    parser.add_argument(*option.flags, **kwargs)


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    for option in options_of("inspect"):
        if option.common:
            _add(common, option)
    p = argparse.ArgumentParser(
        prog="vsaimage", parents=[common],
        description="Turn a dd'd HP LeftHand / StoreVirtual VSA system disk into a Xen PV domU "
                    "disk, offline and without root.")
    p.add_argument("--version", action="version", version=f"vsaimage {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sp = sub.add_parser(command, parents=[common], help=HELP[command], description=HELP[command],
                            epilog=_EXAMPLES[command], formatter_class=argparse.RawDescriptionHelpFormatter)
        groups: dict[str, argparse._ArgumentGroup] = {}
        for option in options_of(command):
            if option.common:
                continue
            if option.group is not None and option.group not in groups:
                groups[option.group] = sp.add_argument_group(option.group)
            _add(groups[option.group] if option.group is not None else sp, option)
    return p


def checked(a: argparse.Namespace) -> argparse.Namespace:
    """The parsed values with every option's own check applied (canonical
    values; BadInput for one that cannot be used), before any work."""
    values = vars(a).copy()
    for option in options_of(a.command):
        value = values.get(option.dest)
        if option.validate is not None and value is not None:
            values[option.dest] = option.validate(value)
    return argparse.Namespace(**values)


# --- the option sets of each command ---------------------------------------------


def _roles(a: argparse.Namespace, image: ImageSource) -> Roles:
    """The roles' options; the system disks: those given, else those an OVA
    gives (the disks on its system disk's controller)."""
    given = tuple(parse_image(text) for text in a.system_disk)
    if given and image.ova is not None and image.ova.fellows:
        raise BadInput(f"--system-disk with {image.text}: the OVA names its system disks itself "
                       f"(disks {', '.join(str(n) for n in image.ova.fellows)})")
    return Roles(a.root_part, a.boot_part, given or image.ova_system_disks(), a.degraded)


def _parse(a: argparse.Namespace) -> Callable[[str], ImageSource]:
    return lambda text: parse_image(text, input_format=a.input_format, disk=a.disk)


def initrd_options(a: argparse.Namespace) -> InitrdOptions:
    return InitrdOptions(a.input, a.output, a.initrd_compression, a.force)


def inspect_options(a: argparse.Namespace) -> InspectOptions:
    image = _parse(a)(a.image)
    return InspectOptions(image, _roles(a, image), a.bundle, a.force)


def verify_options(a: argparse.Namespace) -> VerifyOptions | VerifyBatch:
    if len(a.image) > 1 and a.system_disk:
        raise BadInput("--system-disk with several images would give them all the same one",
                       hint="verify that image on its own")

    def options(image: ImageSource) -> VerifyOptions:
        return VerifyOptions(image, _roles(a, image), a.initrd, a.kernel_version, PciHack(a.pci_hack), a.skip)

    if len(a.image) > 1:
        return VerifyBatch(_each_image(a.image, _parse(a), options))
    return options(_parse(a)(a.image[0]))


def convert_options(a: argparse.Namespace) -> ConvertOptions | BatchOptions:
    several = len(a.image) > 1
    if a.in_place and several:
        raise BadInput("--in-place converts one disk at a time", hint="run it once per disk")
    if a.output is None and not a.in_place:
        raise BadInput("convert: -o OUT.img is required (or --in-place)")
    if several:
        _check_batch(a)
    if a.boot != "direct" and "bootloader" in a.skip:
        raise BadInput(f"--boot {a.boot} with --skip bootloader: the disk would have no kernel to boot",
                       hint="drop one of them")
    xl = XlOptions(a.name, a.memory, a.vcpus, a.bridge, a.mac, a.uuid, tuple(a.data_disk), tuple(a.extra),
                   a.new_identity, a.boot, a.type)

    def options(image: ImageSource) -> ConvertOptions:
        roles = _roles(a, image)
        if a.in_place:
            output, fmt = inplace.output_name(image, a.output), inplace.disk_format(image, a.format)
            inplace.check_roles(image, roles)
        else:
            output = OutputPaths.in_directory(a.output, image.name).image if several else a.output
            fmt = a.format
        return ConvertOptions(
            image=image, kernel=a.kernel, initrd=a.initrd, output=output,
            format=fmt, pci_hack=PciHack(a.pci_hack), console_autologin=a.console_autologin,
            skip=a.skip, roles=roles, force=a.force, dry_run=a.dry_run,
            kernel_version=a.kernel_version, force_kernel=a.force_kernel, modules_dir=a.modules_dir,
            modules=a.modules, initrd_compression=a.initrd_compression, xl=xl, in_place=a.in_place)

    if several:
        images = _each_image(a.image, _parse(a), options)
        _check_names([o for o in images if isinstance(o, ConvertOptions)])
        return BatchOptions(images)
    return options(_parse(a)(a.image[0]))


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
                                       ("--data-disk", a.data_disk), ("--system-disk", a.system_disk))
              if value]
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

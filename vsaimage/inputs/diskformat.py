"""The input image's format, told from its content (never from its name):
the formats qemu reads itself (raw, qcow2, VMDK, VHD, VHDX), raw compressed
with gzip, xz or zstd, and an OVA. For the qemu formats, `qemu-img` checks
on the host, in milliseconds, what the appliance would only report as a
failed launch: a VMDK extent file that is missing, a truncated sparse file."""

from __future__ import annotations

import json
from pathlib import Path

from vsaimage import tools
from vsaimage.errors import ImageError

# The names --input-format takes; "vhd" is what qemu calls "vpc".
QEMU_FORMATS = ("raw", "qcow2", "vmdk", "vhd", "vhdx")
COMPRESSED = ("gzip", "xz", "zstd")
FORMATS = (*QEMU_FORMATS, *COMPRESSED, "ova", "tar")  # tar: a disk image in a (compressed) tar

_MAGIC = (
    (b"QFI\xfb", "qcow2"),
    (b"KDMV", "vmdk"),  # hosted sparse extent (monolithicSparse, 2 GB sparse, streamOptimized)
    (b"# Disk DescriptorFile", "vmdk"),  # text descriptor of flat or split extents
    (b"vhdxfile", "vhdx"),
    (b"conectix", "vhd"),  # a dynamic VHD starts with a copy of its footer
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
# qemu-img check knows these; for "vpc" it says the format has no checks.
_CHECKABLE = ("qcow2", "vmdk", "vhdx")


def qemu_name(fmt: str) -> str:
    return "vpc" if fmt == "vhd" else fmt


def detect(path: Path) -> str:
    """The format of the file or block device at `path`."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
            size = f.seek(0, 2)
            if size >= 512:
                f.seek(size - 512)
                tail = f.read(512)
            else:
                tail = b""
    except OSError as e:
        raise ImageError(f"{path}: cannot read: {e.strerror}") from None
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if head[257:262] == b"ustar":
        return "ova"
    if tail.startswith(b"conectix"):  # a fixed VHD: raw data, then a footer
        return "vhd"
    return "raw"


def virtual_size(path: Path, fmt: str) -> int:
    """The disk's size as the guest sees it, from `qemu-img info`, which also
    opens every extent: a missing one fails here with qemu's reason. A
    sparse format is then checked for truncation (`qemu-img check`)."""
    info = _qemu_img(["info", "--output=json", "-f", qemu_name(fmt), str(path)], path, "read")
    size = int(json.loads(info)["virtual-size"])
    if fmt in _CHECKABLE:
        _qemu_img(["check", "-f", fmt, str(path)], path, "check")
    return size


def _qemu_img(args: list[str], path: Path, step: str) -> str:
    r = tools.run(["qemu-img", *args], "qemu-utils")
    if r.returncode != 0:
        why = tools.reason(r.stderr + r.stdout, "qemu-img", names=[str(path)], default="failed")
        raise ImageError(f"{path}: qemu-img cannot {step} it as {args[args.index('-f') + 1]}: {why}",
                         hint="is the file complete (copied whole, every extent beside its descriptor)?")
    return r.stdout

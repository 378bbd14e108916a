"""Inputs libguestfs cannot read as they are, put into a file it can: a raw
image compressed with gzip, xz or zstd is decompressed (sparse: only its
data takes space), an OVA's disk is taken out of the archive (a
streamOptimized VMDK, compressed, so small). The qemu formats need nothing.

convert unpacks beside its output, into its staging names (a compressed
image straight into the staged raw output); the read-only commands unpack
into a temporary directory under TMPDIR, removed when they are done."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vsaimage.errors import ImageError
from vsaimage.inputs import decompress, diskformat, ova, tarball
from vsaimage.inputs.source import ImageSource, check_partition_table
from vsaimage.model import Drive
from vsaimage.progress import Progress


@dataclass(frozen=True)
class Unpacked:
    """A file qemu reads (`format` in its own names) holding the input's disk."""

    path: Path
    format: str
    virtual_size: int


def unpack(image: ImageSource, dst: Path, *, label: Path, rep: Progress) -> Unpacked:
    """Write the disk of the packed `image` to `dst`; `label` names the
    output in write errors."""
    assert image.path is not None and image.packed
    if image.ova is not None:
        disk = image.ova.system_disk
        with rep.phase(f"OVA disk {disk.file}") as ph:
            ova.extract(image.ova, dst, label=label)
            ph.detail = f"({dst.stat().st_size / 2**20:.0f} MiB)"
        fmt = diskformat.detect(dst)
        if fmt not in diskformat.QEMU_FORMATS:
            raise ImageError(f"{image.path}: the OVA's disk {disk.file} is {fmt}, not a disk image")
        size = diskformat.virtual_size(dst, fmt)
        return Unpacked(dst, diskformat.qemu_name(fmt), size)
    if image.tar is not None:
        member = image.tar.chosen
        with rep.phase(f"tar member {member.name}", nbytes=True) as ph:
            written = tarball.extract(image.tar, dst, label=label, progress=ph.advance)
            ph.detail = f"({member.size / 2**30:.1f} GiB, {written / 2**20:.0f} MiB of data)"
        fmt = diskformat.detect(dst)
        if fmt not in diskformat.QEMU_FORMATS:
            raise ImageError(f"{image.path}: the archive's {member.name} is {fmt}, not a disk image")
        if fmt == "raw":
            check_partition_table(dst, name=f"{image.path} ({member.name})")
            return Unpacked(dst, "raw", member.size)
        return Unpacked(dst, diskformat.qemu_name(fmt), diskformat.virtual_size(dst, fmt))
    with rep.phase(f"decompress ({image.format})", nbytes=True) as ph:
        size, written = decompress.decompress(image.path, image.format, dst, label=label,
                                              progress=ph.advance)
        ph.detail = f"({size / 2**30:.1f} GiB, {written / 2**20:.0f} MiB of data)"
    check_partition_table(dst, name=f"{image.path} (decompressed)")
    return Unpacked(dst, "raw", size)


@contextlib.contextmanager
def readable(image: ImageSource, rep: Progress) -> Iterator[tuple[Drive, dict[str, Any]]]:
    """A read-only drive of `image`, unpacked under TMPDIR when it must be,
    and the input's facts (its format, virtual size, OVA disks)."""
    if not image.packed:
        yield image.drive(readonly=True), image.facts()
        return
    with tempfile.TemporaryDirectory(prefix="vsaimage-") as tmp:
        assert image.path is not None
        u = unpack(image, Path(tmp) / "disk", label=image.path, rep=rep)
        facts = {**image.facts(), "virtual_size": u.virtual_size, "unpacked_format": u.format}
        yield Drive(str(u.path), readonly=True, format=u.format), facts


@contextlib.contextmanager
def readable_disks(images: Sequence[ImageSource],
                   rep: Progress) -> Iterator[tuple[list[Drive], dict[str, Any]]]:
    """`readable` for each of a VM's system disks (the first one's facts)."""
    with contextlib.ExitStack() as stack:
        found = [stack.enter_context(readable(image, rep)) for image in images]
        yield [drive for drive, _ in found], found[0][1]

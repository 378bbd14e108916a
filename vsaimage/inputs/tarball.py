"""A disk image inside a tar archive (LeftHand OS 12's KVM download: a 32
GiB raw `.img` in an `.img.tgz`): plain, or compressed with gzip, xz or
zstd, read entry by entry with libarchive. The archive is told from its
content: a compressed stream whose content is a tar, or a tar holding no
OVF descriptor (an OVA is one with).

The disk is written sparse, from the data blocks libarchive hands out with
their offsets: the holes of a GNU sparse entry (`tar -S`) are seeked over
without being read, and zero blocks of a plain one are skipped as the
decompressor does, so a 32 GiB disk holding little takes about that little.
"""

from __future__ import annotations

import ctypes
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libarchive
from libarchive import ffi
from libarchive.exception import ArchiveError

from vsaimage import cancel
from vsaimage.errors import ImageError, write_error
from vsaimage.inputs.decompress import data_runs

# Entries that are never the disk: descriptors, manifests, checksums, notes.
_NOT_DISKS = (".ovf", ".mf", ".cert", ".md5", ".sha1", ".sha256", ".txt", ".pdf", ".xml", ".html")
# A disk image is at least a partition table's worth of sectors.
_MIN_DISK = 2**20


@dataclass(frozen=True)
class Member:
    name: str
    size: int  # as the disk sees it (a sparse entry's full size)


@dataclass(frozen=True)
class Tarball:
    path: Path
    filters: tuple[str, ...]  # ("gzip",), or () for a plain tar
    disks: tuple[Member, ...]
    chosen: Member

    def as_dict(self) -> dict[str, Any]:
        return {"compression": list(self.filters), "disks": [m.name for m in self.disks],
                "disk": self.chosen.name}


def _first_line(e: ArchiveError) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def probe(path: Path) -> tuple[tuple[str, ...], list[Member], bool] | None:
    """(compression filters, the regular entries, whether one is an OVF
    descriptor) when `path` is a tar archive; None when it is not."""
    try:
        with libarchive.file_reader(str(path)) as archive:
            members, ovf = [], False
            for entry in archive:
                if not archive.format_name.decode(errors="replace").startswith(("GNU tar", "POSIX", "tar")):
                    return None
                if entry.isreg:
                    members.append(Member(entry.pathname, entry.size))
                    ovf = ovf or entry.pathname.lower().endswith(".ovf")
            filters = tuple(f.decode() for f in archive.filter_names if f.decode() != "none")
    except ArchiveError:
        return None
    return filters, members, ovf


def read_tarball(path: Path, found: tuple[tuple[str, ...], list[Member], bool], disk: str | None) -> Tarball:
    """The disk image to take from the archive: the only one, or the one
    --disk names (by name, or counted from 1 in archive order)."""
    filters, members, _ = found
    disks = tuple(m for m in members
                  if not m.name.lower().endswith(_NOT_DISKS) and m.size >= _MIN_DISK)
    if not disks:
        raise ImageError(f"{path}: the archive holds no disk image "
                         f"({len(members)} files, none of {_MIN_DISK // 2**20} MiB or more)")
    names = ", ".join(m.name for m in disks)
    if disk is None:
        if len(disks) > 1:
            raise ImageError(f"{path}: the archive holds {len(disks)} disk images ({names})",
                             hint="choose one with --disk NAME")
        return Tarball(path, filters, disks, disks[0])
    chosen = [m for m in disks if disk in (m.name, posixpath.basename(m.name))]
    if not chosen and disk.isdigit() and 1 <= int(disk) <= len(disks):
        chosen = [disks[int(disk) - 1]]
    if not chosen:
        raise ImageError(f"{path}: --disk {disk}: no such disk image in the archive (it holds {names})")
    return Tarball(path, filters, disks, chosen[0])


def extract(tar: Tarball, dst: Path, *, label: Path, progress: Callable[[int], None] | None = None) -> int:
    """Write the chosen entry's data into a new sparse `dst`; returns the
    bytes of data written. A truncated or corrupt archive is an ImageError
    naming it."""
    written = 0
    try:
        with libarchive.file_reader(str(tar.path)) as archive, open(dst, "wb") as out:
            for entry in archive:
                if entry.pathname != tar.chosen.name or not entry.isreg:
                    continue
                written = _write_blocks(archive._pointer, out, progress)
                try:
                    out.truncate(tar.chosen.size)
                    out.flush()
                    os.fsync(out.fileno())
                except OSError as e:
                    raise write_error(label, e) from e
                return written
    except ArchiveError as e:
        raise ImageError(f"{tar.path}: cannot read {tar.chosen.name} from the archive: {_first_line(e)}",
                         hint="is the file complete? Compare its size or checksum with the original's"
                         ) from None
    except OSError as e:
        raise write_error(label, e) from e
    raise ImageError(f"{tar.path}: {tar.chosen.name} is no longer in the archive")


def _write_blocks(archive_p: Any, out: Any, progress: Callable[[int], None] | None) -> int:
    """Each data block at its offset (holes of a sparse entry never read),
    zero runs within a block skipped."""
    buff, size, offset = ctypes.c_void_p(), ctypes.c_size_t(), ctypes.c_longlong()
    written = 0
    while ffi.read_data_block(archive_p, ctypes.byref(buff), ctypes.byref(size),
                              ctypes.byref(offset)) != ffi.ARCHIVE_EOF:
        cancel.check()
        n = size.value
        if not n:
            continue
        chunk = ctypes.string_at(buff, n)
        for start, end in data_runs(chunk):
            out.seek(offset.value + start)
            out.write(chunk[start:end])
            written += end - start
        if progress:
            progress(n)
    return written

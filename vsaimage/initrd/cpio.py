"""The segments of an initrd file: zero or more uncompressed newc segments
(early microcode), each 4-byte aligned and ended by its own `TRAILER!!!`,
optional zero padding, then the main segment, compressed or not. Splitting
them is ours to do: libarchive stops reading at the first trailer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

from vsaimage.errors import InitrdError

COMPRESSIONS = ("gzip", "bzip2", "xz", "lzma", "lz4", "zstd")

_NEWC_MAGICS = (b"070701", b"070702")
_NEWC_HEADER = 110
_TRAILER = b"TRAILER!!!"
_CHUNK = 1 << 16
# The kernel only looks at two bytes; the longer prefixes keep us from taking
# random data for a compressed segment.
_MAGICS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x5d\x00\x00", "lzma"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
_REFUSED_MAGICS: tuple[tuple[bytes, str, str], ...] = (
    (b"\x04\x22\x4d\x18", "lz4 frame format", "the kernel reads legacy lz4 only (lz4 -l)"),
    (b"\x89LZO", "lzo", "recompress it with gzip, xz or zstd"),
    (b"070707", "odc cpio (070707)", "the kernel reads newc (070701) only"),
)


@dataclass(frozen=True)
class Split:
    early: bytes  # every byte before the main segment, unchanged
    early_segments: int
    main_offset: int
    main_size: int
    compression: str  # "none" for an uncompressed main segment


def _read_at(f: BinaryIO, pos: int, n: int) -> bytes:
    f.seek(pos)
    return f.read(n)


def _hex_field(header: bytes, pos: int, index: int) -> int:
    start = 6 + 8 * index
    try:
        return int(header[start:start + 8], 16)
    except ValueError:
        raise InitrdError(f"corrupt cpio header at offset {pos} of the initrd") from None


def _newc_segment_end(f: BinaryIO, pos: int, size: int) -> int:
    """Offset just past the TRAILER!!! of the newc segment starting at pos."""
    while True:
        if pos + _NEWC_HEADER > size:
            raise InitrdError("truncated initrd: an uncompressed cpio segment has no TRAILER!!!")
        header = _read_at(f, pos, _NEWC_HEADER)
        if header[:6] not in _NEWC_MAGICS:
            raise InitrdError(f"corrupt cpio segment in the initrd: no newc header at offset {pos}")
        filesize = _hex_field(header, pos, 6)
        namesize = _hex_field(header, pos, 11)
        name = _read_at(f, pos + _NEWC_HEADER, namesize).rstrip(b"\0")
        end = _align4(_align4(pos + _NEWC_HEADER + namesize) + filesize)
        if name == _TRAILER and pos + _NEWC_HEADER + namesize <= size:
            return min(end, size)
        if end > size:
            raise InitrdError("truncated initrd: an uncompressed cpio segment ends mid-entry")
        pos = end


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _skip_zeros(f: BinaryIO, pos: int, size: int) -> int:
    f.seek(pos)
    while pos < size:
        chunk = f.read(_CHUNK)
        kept = chunk.lstrip(b"\0")
        pos += len(chunk) - len(kept)
        if kept:
            break
    return pos


def trailing_zeros(f: BinaryIO, start: int, end: int) -> int:
    """How many zero bytes end f[start:end]."""
    pos = end
    while pos > start:
        n = min(_CHUNK, pos - start)
        chunk = _read_at(f, pos - n, n)
        kept = chunk.rstrip(b"\0")
        pos -= n - len(kept)
        if kept:
            break
    return end - pos


def _compression_at(head: bytes, pos: int) -> str | None:
    for magic, name in _MAGICS:
        if head.startswith(magic):
            return name
    for magic, what, hint in _REFUSED_MAGICS:
        if head.startswith(magic):
            raise InitrdError(f"unsupported initrd: the segment at offset {pos} is {what}",
                              hint=hint)
    return None


def split(f: BinaryIO) -> Split:
    """Where the segments of the initrd open as `f` are; only the early
    ones are read (the main one is streamed later, from main_offset)."""
    size = f.seek(0, os.SEEK_END)
    pos = 0
    segments: list[int] = []  # start offsets of the uncompressed segments
    while True:
        pos = _skip_zeros(f, pos, size)
        if pos == size:
            break
        head = _read_at(f, pos, 8)
        if head.startswith(_NEWC_MAGICS) and pos % 4 == 0:
            segments.append(pos)
            pos = _newc_segment_end(f, pos, size)
            continue
        compression = _compression_at(head, pos)
        if compression is not None:
            return Split(_read_at(f, 0, pos), len(segments), pos, size - pos, compression)
        if not segments:
            raise InitrdError("not an initrd: no cpio or compression magic at its start")
        magic = head[:4].hex(" ")
        raise InitrdError(f"unknown compression in the initrd: magic {magic} at offset {pos}",
                          hint=f"known: {', '.join(COMPRESSIONS)}")
    if not segments:
        raise InitrdError("not an initrd: the file is empty or all zeros")
    # No compressed segment: the last uncompressed one is the main segment.
    last = segments[-1]
    return Split(_read_at(f, 0, last), len(segments) - 1, last, size - last, "none")

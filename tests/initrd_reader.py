"""An initrd reader and newc writer for the tests, independent of vsaimage.initrd.

It walks the segments itself, decompresses with the command-line tools and
parses newc by hand, so the code under test is checked against something it
does not share code with.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass

DECOMPRESSORS = {
    b"\x1f\x8b": ["gzip", "-dc"],
    b"BZh": ["bzip2", "-dc"],
    b"\xfd7zXZ": ["xz", "-dc"],
    b"\x5d\x00": ["xz", "--format=lzma", "-dc"],
    b"\x02\x21\x4c\x18": ["lz4", "-dc"],
    b"\x28\xb5\x2f\xfd": ["zstd", "-dc"],
}


@dataclass
class Member:
    name: str
    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    devmajor: int
    devminor: int
    rdevmajor: int
    rdevminor: int
    data: bytes


def pad4(n: int) -> int:
    return (n + 3) & ~3


def parse_newc(buf: bytes, pos: int = 0) -> tuple[list[Member], int]:
    """Members up to TRAILER!!! (excluded) and the offset after it."""
    members: list[Member] = []
    while True:
        magic = buf[pos:pos + 6]
        assert magic in (b"070701", b"070702"), f"bad magic {magic!r} at {pos}"
        f = [int(buf[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        ino, mode, uid, gid, nlink, mtime, size, dmaj, dmin, rmaj, rmin, namesize, _ = f
        name = buf[pos + 110:pos + 110 + namesize - 1].decode()
        start = pad4(pos + 110 + namesize)
        data = buf[start:start + size]
        assert len(data) == size, f"truncated member {name}"
        pos = pad4(start + size)
        if name == "TRAILER!!!":
            return members, pos
        members.append(Member(name, ino, mode, uid, gid, nlink, mtime, dmaj, dmin, rmaj, rmin,
                              data))


def decompress(blob: bytes) -> bytes:
    for magic, cmd in DECOMPRESSORS.items():
        if blob.startswith(magic):
            return subprocess.run(cmd, input=blob, capture_output=True, check=True).stdout
    raise AssertionError(f"unknown magic {blob[:4].hex()}")


def split(data: bytes) -> tuple[list[bytes], int, bytes]:
    """(early uncompressed segments, offset of the main segment, its bytes)."""
    early = []
    pos = 0
    while True:
        while pos < len(data) and data[pos] == 0:
            pos += 1
        if data.startswith(b"0707", pos):
            _, end = parse_newc(data, pos)
            early.append(data[pos:end])
            pos = end
            continue
        return early, pos, data[pos:]


def main_members(data: bytes) -> list[Member]:
    _, _, main = split(data)
    members, _ = parse_newc(decompress(main))
    return members


def listing(members: list[Member]) -> dict[str, tuple[object, ...]]:
    """name -> (mode, uid, gid, size, sha256, link target, rdev, nlink, hardlink group).

    Hardlinks are resolved: each link gets the group's content and the sorted
    names of the group, whichever link carries the body in the archive.
    """
    groups: dict[tuple[int, int, int], list[Member]] = {}
    for m in members:
        if m.mode & 0o170000 == 0o100000 and m.nlink > 1:
            groups.setdefault((m.devmajor, m.devminor, m.ino), []).append(m)
    out: dict[str, tuple[object, ...]] = {}
    for m in members:
        data = m.data
        group: tuple[str, ...] = ()
        key = (m.devmajor, m.devminor, m.ino)
        if key in groups and m.mode & 0o170000 == 0o100000:
            group_members = groups[key]
            data = next((g.data for g in group_members if g.data), b"")
            group = tuple(sorted(g.name for g in group_members))
        link = m.data.decode() if m.mode & 0o170000 == 0o120000 else None
        is_reg = m.mode & 0o170000 == 0o100000
        out[m.name] = (
            m.mode, m.uid, m.gid, len(data) if is_reg else len(m.data),
            hashlib.sha256(data).hexdigest() if is_reg else None,
            link, (m.rdevmajor, m.rdevminor), m.nlink, group,
        )
    return out


def _header(m: Member, size: int, namesize: int) -> bytes:
    fields = (m.ino, m.mode, m.uid, m.gid, m.nlink, m.mtime, size, m.devmajor, m.devminor,
              m.rdevmajor, m.rdevminor, namesize, 0)
    return b"070701" + b"".join(b"%08x" % v for v in fields)


def write_newc(members: list[Member], *, trailer: bool = True) -> bytes:
    """The members as newc, each padded to 4 bytes: pieces written without
    the trailer can be concatenated."""
    out = bytearray()
    end = [Member("TRAILER!!!", 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, b"")] if trailer else []
    for m in [*members, *end]:
        name = m.name.encode() + b"\0"
        out += _header(m, len(m.data), len(name)) + name
        out += b"\0" * (pad4(len(out)) - len(out))
        out += m.data
        out += b"\0" * (pad4(len(out)) - len(out))
    return bytes(out)


def member(name: str, mode: int, data: bytes = b"", *, ino: int, nlink: int = 1,
           rdev: tuple[int, int] = (0, 0), uid: int = 0, gid: int = 0,
           mtime: int = 1_600_000_000) -> Member:
    return Member(name, ino, mode, uid, gid, nlink, mtime, 8, 1, rdev[0], rdev[1], data)

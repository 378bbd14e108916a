"""How Guest reads a file: one pread per small file (libguestfs's read_file
goes through its file-transfer protocol, which costs a fraction of a second
per file under TCG), read_file only when a pread comes back short. On a
stand-in for the libguestfs handle: no appliance."""

from __future__ import annotations

import stat
from typing import Any

import pytest

from vsaimage.guest.appliance import Guest


class FakeHandle:
    """The handle calls Guest.read makes, over a dict of files in /etc."""

    def __init__(self, files: dict[str, bytes], short: bool = False) -> None:
        self.files = files
        self.short = short
        self.calls: list[str] = []

    def lstatnslist(self, directory: str, names: list[str]) -> list[dict[str, Any]]:
        self.calls.append("lstatnslist")
        out = []
        for n in names:
            path = f"{directory.rstrip('/')}/{n}"
            if directory == "/" and n == "etc":
                out.append({"st_ino": 2, "st_mode": stat.S_IFDIR | 0o755, "st_size": 4096})
            elif path in self.files:
                out.append({"st_ino": 3, "st_mode": stat.S_IFREG | 0o644, "st_size": len(self.files[path])})
            else:
                out.append({"st_ino": -1, "st_mode": 0, "st_size": 0})
        return out

    def pread(self, path: str, count: int, offset: int) -> bytes:
        self.calls.append("pread")
        data = self.files[path][offset : offset + count]
        return data[: len(data) // 2] if self.short else data

    def read_file(self, path: str) -> bytes:
        self.calls.append("read_file")
        return self.files[path]


@pytest.mark.parametrize("short", [False, True])
def test_small_file_read_by_pread(short: bool) -> None:
    handle = FakeHandle({"/etc/inittab": b"id:3:initdefault:\n"}, short=short)
    f = Guest(handle).read("/etc/inittab")
    assert f.data == b"id:3:initdefault:\n"
    reads = [c for c in handle.calls if c in ("pread", "read_file")]
    assert reads == (["pread", "read_file"] if short else ["pread"])


def test_empty_file_needs_no_read() -> None:
    handle = FakeHandle({"/etc/securetty": b""})
    assert Guest(handle).read("/etc/securetty").data == b""
    assert "pread" not in handle.calls and "read_file" not in handle.calls

"""The libarchive layer of the initrd repack: cpio members as owned copies of
libarchive's entry structs plus their data (so owners, modes, device numbers,
inode numbers and hardlinks survive whoever runs the tool), read from one
segment and written back as newc with the kernel-compatible compressions.
Nothing is extracted to the host filesystem.
"""

from __future__ import annotations

import ctypes
import lzma
import shutil
import subprocess
from collections.abc import Iterable
from typing import Any

import libarchive
from libarchive import ffi
from libarchive.exception import ArchiveError

from vsaimage.cpio import Split
from vsaimage.errors import InitrdError

# Levels chosen for the repack time of a ~150 MB bookworm cpio on a slow
# dom0, not for the best ratio: gzip -9 and xz -6 take minutes there and the
# repack runs while the appliance boots (~16 s). zstd -9 with a *fixed*
# thread count: 1 and 2 threads give different bytes, and the output must not
# depend on the machine.
LEVELS: dict[str, int] = {"gzip": 6, "bzip2": 9, "xz": 1, "lzma": 1, "lz4": 9, "zstd": 9}

S_IFMT = 0o170000
S_IFREG = 0o100000
S_IFDIR = 0o040000

# --- libarchive entry fields libarchive-c does not wrap --------------------

_lib = ffi.libarchive
_P = ctypes.c_void_p


def _bind(name: str, argtypes: list[Any], restype: Any) -> Any:
    # CDLL.__getitem__ returns a fresh function object: setting its signature
    # here leaves libarchive-c's own cached bindings untouched.
    func = _lib["archive_" + name]
    func.argtypes = argtypes
    func.restype = restype
    return func


_entry_new = _bind("entry_new", [], _P)
_entry_clone = _bind("entry_clone", [_P], _P)
_entry_free = _bind("entry_free", [_P], None)
_entry_pathname = _bind("entry_pathname", [_P], ctypes.c_char_p)
_entry_copy_pathname = _bind("entry_copy_pathname", [_P, ctypes.c_char_p], None)
_entry_mode = _bind("entry_mode", [_P], ctypes.c_uint)
_entry_set_mode = _bind("entry_set_mode", [_P, ctypes.c_uint], None)
_entry_size = _bind("entry_size", [_P], ctypes.c_int64)
_entry_set_size = _bind("entry_set_size", [_P, ctypes.c_int64], None)
_entry_nlink = _bind("entry_nlink", [_P], ctypes.c_uint)
_entry_set_nlink = _bind("entry_set_nlink", [_P, ctypes.c_uint], None)
_entry_ino = _bind("entry_ino64", [_P], ctypes.c_int64)
_entry_set_ino = _bind("entry_set_ino64", [_P, ctypes.c_int64], None)
_entry_devmajor = _bind("entry_devmajor", [_P], ctypes.c_uint64)
_entry_devminor = _bind("entry_devminor", [_P], ctypes.c_uint64)
_entry_set_devmajor = _bind("entry_set_devmajor", [_P, ctypes.c_uint64], None)
_entry_set_devminor = _bind("entry_set_devminor", [_P, ctypes.c_uint64], None)
_entry_set_uid = _bind("entry_set_uid", [_P, ctypes.c_int64], None)
_entry_set_gid = _bind("entry_set_gid", [_P, ctypes.c_int64], None)
_entry_mtime = _bind("entry_mtime", [_P], ctypes.c_int64)
_entry_set_mtime = _bind("entry_set_mtime", [_P, ctypes.c_int64, ctypes.c_long], None)


class Entry:
    """One cpio member: an owned copy of libarchive's header plus its data."""

    __slots__ = ("data", "name", "ptr")

    def __init__(self, ptr: int, data: bytes) -> None:
        self.ptr = ptr
        self.data = data
        raw = _entry_pathname(ptr)
        self.name: bytes = raw if raw is not None else b""

    def __del__(self) -> None:
        _entry_free(self.ptr)

    @property
    def key(self) -> bytes:
        """The name without a leading `./` or `/`, for lookups."""
        return _norm(self.name)

    @property
    def mode(self) -> int:
        return int(_entry_mode(self.ptr))

    @property
    def isreg(self) -> bool:
        return self.mode & S_IFMT == S_IFREG

    @property
    def isdir(self) -> bool:
        return self.mode & S_IFMT == S_IFDIR

    @property
    def nlink(self) -> int:
        return int(_entry_nlink(self.ptr))

    @property
    def mtime(self) -> int:
        return int(_entry_mtime(self.ptr))

    @property
    def inode(self) -> tuple[int, int, int]:
        return (int(_entry_devmajor(self.ptr)), int(_entry_devminor(self.ptr)),
                int(_entry_ino(self.ptr)))

    def set_mode(self, mode: int) -> None:
        _entry_set_mode(self.ptr, mode)

    def set_data(self, data: bytes) -> None:
        self.data = data
        _entry_set_size(self.ptr, len(data))


def _norm(name: bytes) -> bytes:
    while name.startswith((b"./", b"/")):
        name = name[1:] if name.startswith(b"/") else name[2:]
    return b"" if name == b"." else name


def sort_key(entry: Entry) -> tuple[bytes, ...]:
    # Component-wise, so that a directory always precedes its contents even
    # when a sibling name sorts between them bytewise ("a-b" vs "a/b").
    key = entry.key
    return tuple(key.split(b"/")) if key else ()


# --- reading ----------------------------------------------------------------


def _read_data(archive_p: int, size: int) -> bytes:
    if size <= 0:
        return b""
    buf = ctypes.create_string_buffer(size)
    got = 0
    base = ctypes.addressof(buf)
    while got < size:
        n = ffi.read_data(archive_p, base + got, size - got)
        if n <= 0:
            break
        got += n
    if got != size:
        raise InitrdError("truncated initrd: a file in the main segment ends early")
    return buf.raw


def _read_entries(main: bytes) -> list[Entry]:
    entries: list[Entry] = []
    with libarchive.memory_reader(main, format_name="cpio") as archive:
        for entry in archive:
            ptr = _entry_clone(entry._entry_p)
            if not ptr:
                raise MemoryError("archive_entry_clone")
            item = Entry(ptr, b"")
            if item.isreg:
                item.data = _read_data(archive._pointer, int(_entry_size(ptr)))
            entries.append(item)
    return entries


def read_main(split: Split) -> list[Entry]:
    try:
        return _read_entries(split.main)
    except ArchiveError as exc:
        # Some tools pad the whole file after a compressed segment; the kernel
        # skips the zeros but libarchive's zstd reader chokes on them.
        stripped = split.main.rstrip(b"\0")
        if split.compression != "none" and len(stripped) < len(split.main):
            try:
                return _read_entries(stripped)
            except ArchiveError:
                pass
        message = (str(exc.msg or "") or "unknown libarchive error").splitlines()[0]
        raise InitrdError(
            f"truncated or corrupt initrd: reading the {split.compression} main segment"
            f" failed: {message}") from None


def new_entry(name: bytes, mode: int, data: bytes, *, like: Entry, ino: int,
               mtime: int, nlink: int) -> Entry:
    ptr = _entry_new()
    if not ptr:
        raise MemoryError("archive_entry_new")
    _entry_copy_pathname(ptr, name)
    _entry_set_mode(ptr, mode)
    _entry_set_uid(ptr, 0)
    _entry_set_gid(ptr, 0)
    _entry_set_mtime(ptr, mtime, 0)
    _entry_set_nlink(ptr, nlink)
    _entry_set_ino(ptr, ino)
    dev = like.inode
    _entry_set_devmajor(ptr, dev[0])
    _entry_set_devminor(ptr, dev[1])
    entry = Entry(ptr, b"")
    entry.set_data(data)
    return entry


class Members:
    """The entries of a main segment, looked up by key (a later duplicate
    wins, as in the kernel), plus new members made alike: owned by root, one
    mtime, fresh inode numbers, and the archive's name style (`./` or not)."""

    def __init__(self, entries: list[Entry], mtime: int) -> None:
        self.entries = entries
        self.by_key = {e.key: e for e in entries}
        self.mtime = mtime
        self._next_ino = max((e.inode[2] for e in entries), default=0) + 1
        named = next((e for e in entries if e.key), None)
        self.prefix = named.name[: len(named.name) - len(named.key)] if named else b""

    def get(self, key: bytes) -> Entry | None:
        return self.by_key.get(key)

    def add(self, key: bytes, mode: int, data: bytes = b"", *, like: Entry) -> Entry:
        """A new member `key` (a directory's nlink is 2), on `like`'s device."""
        entry = new_entry(self.prefix + key, mode, data, like=like, ino=self._next_ino,
                          mtime=self.mtime, nlink=2 if mode & S_IFMT == S_IFDIR else 1)
        self._next_ino += 1
        self.entries.append(entry)
        self.by_key[key] = entry
        return entry

    def remove(self, entry: Entry) -> None:
        self.entries.remove(entry)
        if self.by_key.get(entry.key) is entry:
            del self.by_key[entry.key]


def hardlinks_data_on_last(entries: list[Entry]) -> None:
    """Put each hardlink group's data on its last member in the new order.

    newc stores the body once, on the last link; sorting can change which
    link is last, so move it there and leave the others empty.
    """
    groups: dict[tuple[int, int, int], list[Entry]] = {}
    for entry in entries:
        if entry.isreg and entry.nlink > 1:
            groups.setdefault(entry.inode, []).append(entry)
    for members in groups.values():
        if len(members) < 2:
            continue
        data = next((m.data for m in reversed(members) if m.data), b"")
        for member in members[:-1]:
            member.set_data(b"")
        members[-1].set_data(data)


# --- writing ----------------------------------------------------------------


def _write_cpio(entries: Iterable[Entry], filter_name: str | None, options: str) -> bytes:
    chunks: list[bytes] = []

    def sink(data: Any) -> int:
        chunks.append(bytes(data))
        return len(data)

    # custom_writer sets bytes_in_last_block=1: no block padding after the
    # trailer (padding after a compressed segment breaks zstd readers).
    with libarchive.custom_writer(sink, "cpio_newc", filter_name=filter_name,
                                  options=options, block_size=1 << 20) as writer:
        archive_p = writer._pointer
        for entry in entries:
            ffi.write_header(archive_p, entry.ptr)
            if entry.isreg and entry.data:
                ffi.write_data(archive_p, entry.data, len(entry.data))
            ffi.write_finish_entry(archive_p)
    return b"".join(chunks)


def _lz4_legacy(cpio: bytes) -> bytes:
    tool = shutil.which("lz4")
    if tool is None:
        raise InitrdError("cannot write an lz4 initrd: the lz4 command is not installed",
                          hint="install lz4, or choose another --initrd-compression")
    proc = subprocess.run([tool, "-l", f"-{LEVELS['lz4']}", "-q", "-c"], input=cpio,
                          capture_output=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise InitrdError(f"lz4 -l failed: {err[0] if err else proc.returncode}")
    return proc.stdout


def compress_main(entries: list[Entry], compression: str, threads: int) -> bytes:
    if compression == "zstd":
        opts = f"zstd:compression-level={LEVELS['zstd']}"
        if threads > 0:
            opts += f",zstd:threads={threads}"
        return _write_cpio(entries, "zstd", opts)
    if compression == "gzip":
        return _write_cpio(entries, "gzip",
                           f"gzip:!timestamp,gzip:compression-level={LEVELS['gzip']}")
    if compression == "bzip2":
        return _write_cpio(entries, "bzip2", f"bzip2:compression-level={LEVELS['bzip2']}")
    cpio = _write_cpio(entries, None, "")
    # libarchive's xz writes CRC64 checks and its lz4 the frame format; the
    # kernel decoders need CRC32 and legacy lz4, so these are done here.
    if compression == "xz":
        return lzma.compress(cpio, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32,
                             preset=LEVELS["xz"])
    if compression == "lzma":
        return lzma.compress(cpio, format=lzma.FORMAT_ALONE, preset=LEVELS["lzma"])
    if compression == "lz4":
        return _lz4_legacy(cpio)
    return cpio  # "none"

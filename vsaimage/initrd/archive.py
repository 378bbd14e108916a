"""The libarchive layer of the initrd repack: the main cpio segment read and
written entry by entry, never whole. Headers are owned copies of
libarchive's entry structs (so owners, modes, device numbers, inode numbers
and hardlinks survive whoever runs the tool); file data passes through one
fixed buffer, so memory does not grow with the initrd. Written as newc with
the kernel-compatible compressions. Nothing is extracted to the host
filesystem except where a caller asks for it (depmod's inputs).
"""

from __future__ import annotations

import ctypes
import lzma
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any, BinaryIO

from libarchive import ffi
from libarchive.entry import new_archive_entry
from libarchive.exception import ArchiveError
from libarchive.read import new_archive_read
from libarchive.write import new_archive_write

from vsaimage import tools
from vsaimage.errors import InitrdError

# Levels chosen for the repack time of a ~150 MB bookworm cpio on a slow
# dom0, not for the best ratio: gzip -9 and xz -6 take minutes there. zstd -9
# in one thread, libarchive's default: one or more compression workers give
# other (equally valid) bytes and hold a job buffer each. On the Debian 6.1
# initrd (34 MB) the repack peaked at 68 MiB in one thread, 136 MiB with one
# worker and 166 MiB with two, for the same CPU time (2.8 s, 2.6 s, 2.6 s;
# 2.9 s, 2.5 s, 1.6 s of wall time).
LEVELS: dict[str, int] = {"gzip": 6, "bzip2": 9, "xz": 1, "lzma": 1, "lz4": 9, "zstd": 9}

# File data in flight at once, in each direction, whatever the initrd's size.
BUFFER = 1 << 16

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


class Header:
    """One cpio member's header: an owned copy of libarchive's entry struct."""

    __slots__ = ("name", "ptr")

    def __init__(self, ptr: int) -> None:
        if not ptr:
            raise MemoryError("archive_entry")
        self.ptr = ptr
        raw = _entry_pathname(ptr)
        self.name: bytes = raw if raw is not None else b""

    def __del__(self) -> None:
        _entry_free(self.ptr)

    @classmethod
    def new(cls, name: bytes, mode: int, *, like: Header, ino: int, mtime: int,
            nlink: int) -> Header:
        """A member made here: owned by root, on `like`'s device."""
        ptr = _entry_new()
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
        _entry_set_size(ptr, 0)
        return cls(ptr)

    def clone(self) -> Header:
        return Header(_entry_clone(self.ptr))

    @property
    def key(self) -> bytes:
        """The name without a leading `./` or `/`, for lookups."""
        return norm(self.name)

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
    def size(self) -> int:
        return int(_entry_size(self.ptr))

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

    def set_size(self, size: int) -> None:
        _entry_set_size(self.ptr, size)


def norm(name: bytes) -> bytes:
    while name.startswith((b"./", b"/")):
        name = name[1:] if name.startswith(b"/") else name[2:]
    return b"" if name == b"." else name


# --- reading ----------------------------------------------------------------


class Reader:
    """One pass over a main segment: headers in archive order, and the data
    of the member just read, in BUFFER-sized chunks."""

    def __init__(self, archive_p: int, segment: Segment, read: Any,
                 failed: list[BaseException]) -> None:
        self._archive = archive_p
        self._segment = segment
        self._failed = failed  # what the read callback could not raise itself
        self._buf = ctypes.create_string_buffer(BUFFER)
        self._call(ffi.read_open, archive_p, None, ffi.NO_OPEN_CB, read, ffi.NO_CLOSE_CB)

    def __iter__(self) -> Iterator[Header]:
        with new_archive_entry() as entry_p:
            while self._call(ffi.read_next_header2, self._archive, entry_p) != ffi.ARCHIVE_EOF:
                # Data left unread is skipped by the next call.
                yield Header(_entry_clone(entry_p))

    def chunks(self, header: Header) -> Iterator[tuple[ctypes.Array[ctypes.c_char], int]]:
        """The member's data as (buffer, length); each buffer is reused by the next."""
        size, got = header.size if header.isreg else 0, 0
        while got < size:
            n = self._call(ffi.read_data, self._archive, self._buf, BUFFER)
            if n <= 0:
                break
            got += n
            yield self._buf, n
        if got != size:
            raise InitrdError("truncated initrd: a file in the main segment ends early")

    def _call(self, func: Callable[..., int], *args: Any) -> int:
        """A libarchive read call; its failure is the input's (a write's,
        in the same loop, is not)."""
        try:
            return func(*args)
        except ArchiveError as exc:
            if self._failed:
                raise self._failed[0] from None
            raise self._segment.corrupt(exc) from None

    def read(self, header: Header) -> bytes:
        """The member's data, for the few small files the repack edits."""
        return b"".join(ctypes.string_at(buf, n) for buf, n in self.chunks(header))

    def copy_to(self, header: Header, out: IO[bytes]) -> None:
        for buf, n in self.chunks(header):
            out.write(memoryview(buf)[:n])


@dataclass(frozen=True)
class Segment:
    """The main segment of an initrd file: `size` bytes at `offset` of `src`,
    which stays open while the repack reads it (once per pass)."""

    src: BinaryIO
    offset: int
    size: int
    compression: str

    @contextmanager
    def reading(self) -> Iterator[Reader]:
        src, left = self.src, self.size
        current = b""  # the block libarchive is reading: alive until the next call
        failed: list[BaseException] = []

        def read(_archive: int, _context: int, ptrptr: int) -> int:
            nonlocal left, current
            try:
                current = src.read(min(BUFFER, left))
            except BaseException as e:  # an exception must not cross libarchive
                failed.append(e)
                return int(ffi.ARCHIVE_FATAL)
            left -= len(current)
            ctypes.cast(ptrptr, ctypes.POINTER(ctypes.c_char_p))[0] = current
            return len(current)

        callback = ffi.READ_CALLBACK(read)
        src.seek(self.offset)
        with new_archive_read("cpio", "all") as archive_p:
            yield Reader(archive_p, self, callback, failed)

    def corrupt(self, exc: ArchiveError) -> InitrdError:
        message = (str(exc.msg or "") or "unknown libarchive error").splitlines()[0]
        return InitrdError(f"truncated or corrupt initrd: reading the {self.compression} "
                           f"main segment failed: {message}")


# --- writing ----------------------------------------------------------------


class Writer:
    """A newc archive being written, member by member."""

    def __init__(self, archive_p: int) -> None:
        self._archive = archive_p

    def add(self, header: Header, data: bytes = b"") -> None:
        """`header` with `data` (its size set to match)."""
        header.set_size(len(data))
        ffi.write_header(self._archive, header.ptr)
        if data:
            ffi.write_data(self._archive, data, len(data))
        ffi.write_finish_entry(self._archive)

    def copy(self, header: Header, reader: Reader) -> None:
        """`header` as read, with its data streamed from `reader`."""
        ffi.write_header(self._archive, header.ptr)
        for buf, n in reader.chunks(header):
            ffi.write_data(self._archive, buf, n)
        ffi.write_finish_entry(self._archive)


@contextmanager
def _newc(sink: Callable[[bytes], object], filter_name: str | None,
          options: str) -> Iterator[Writer]:
    failed: list[BaseException] = []

    def write(_archive: int, _context: int, buffer: int, length: int) -> int:
        try:
            sink(ctypes.string_at(buffer, length))
        except BaseException as e:  # an exception must not cross libarchive
            failed.append(e)
            return int(ffi.ARCHIVE_FATAL)
        return length

    callback = ffi.WRITE_CALLBACK(write)
    try:
        with new_archive_write("cpio_newc", filter_name, options) as archive_p:
            # No block padding after the trailer: padding after a compressed
            # segment breaks zstd readers.
            ffi.write_set_bytes_in_last_block(archive_p, 1)
            ffi.write_set_bytes_per_block(archive_p, BUFFER)
            ffi.write_open(archive_p, None, ffi.NO_OPEN_CB, callback, ffi.NO_CLOSE_CB)
            yield Writer(archive_p)
    except ArchiveError:
        if failed:
            raise failed[0] from None
        raise


@contextmanager
def writing(out: BinaryIO, compression: str) -> Iterator[Writer]:
    """A main segment written to `out` as it is made, compressed with
    `compression`."""
    if compression == "zstd":
        with _newc(out.write, "zstd", f"zstd:compression-level={LEVELS['zstd']}") as w:
            yield w
    elif compression == "gzip":
        with _newc(out.write, "gzip", f"gzip:!timestamp,gzip:compression-level={LEVELS['gzip']}") as w:
            yield w
    elif compression == "bzip2":
        with _newc(out.write, "bzip2", f"bzip2:compression-level={LEVELS['bzip2']}") as w:
            yield w
    # libarchive's xz writes CRC64 checks and its lz4 the frame format; the
    # kernel decoders need CRC32 and legacy lz4, so these are done here.
    elif compression in ("xz", "lzma"):
        comp = (lzma.LZMACompressor(lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=LEVELS["xz"])
                if compression == "xz" else lzma.LZMACompressor(lzma.FORMAT_ALONE, preset=LEVELS["lzma"]))
        with _newc(lambda data: out.write(comp.compress(data)), None, "") as w:
            yield w
        out.write(comp.flush())
    elif compression == "lz4":
        with _lz4_legacy(out) as stdin, _newc(stdin.write, None, "") as w:
            yield w
    else:  # "none"
        with _newc(out.write, None, "") as w:
            yield w


@contextmanager
def _lz4_legacy(out: BinaryIO) -> Iterator[IO[bytes]]:
    """The stdin of `lz4 -l`, whose output lands in `out` once it is closed."""
    tool = tools.find("lz4", "lz4", otherwise="choose another --initrd-compression")
    with tempfile.TemporaryFile() as packed, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([tool, "-l", f"-{LEVELS['lz4']}", "-q", "-c"],
                                stdin=subprocess.PIPE, stdout=packed, stderr=err)
        assert proc.stdin is not None
        try:
            with proc.stdin:
                yield proc.stdin
        finally:
            code = proc.wait()
        if code != 0:
            err.seek(0)
            why = tools.reason(err.read().decode(errors="replace"), "lz4", default=f"exit status {code}")
            raise InitrdError(f"lz4 -l failed: {why}")
        packed.seek(0)
        shutil.copyfileobj(packed, out, BUFFER)

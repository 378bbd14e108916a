"""Repack an initramfs-tools initrd so that it carries the pcihack init-bottom script.

This module owns the initrd file format: splitting the concatenated cpio
segments, reading the main segment with libarchive, adding
`scripts/init-bottom/pcihack` and registering it in `scripts/init-bottom/ORDER`,
and writing the result back as newc, byte for byte reproducible. Nothing is
extracted to the host filesystem: entries travel as libarchive entry structs
and bytes, so owners, modes, device numbers and hardlinks survive whoever runs
the tool.

Layout of the input (what the kernel accepts): zero or more uncompressed newc
segments (early microcode), each 4-byte aligned and ended by its own
`TRAILER!!!`, optional zero padding, then the main segment, compressed or not.
"""

from __future__ import annotations

import ctypes
import lzma
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import libarchive
from libarchive import ffi
from libarchive.exception import ArchiveError

from .errors import InitrdError

COMPRESSIONS = ("gzip", "bzip2", "xz", "lzma", "lz4", "zstd")

# Levels chosen for the repack time of a ~150 MB bookworm cpio on a slow
# dom0, not for the best ratio: gzip -9 and xz -6 take minutes there and the
# repack runs while the appliance boots (~16 s). zstd -9 with a *fixed*
# thread count: 1 and 2 threads give different bytes, and the output must not
# depend on the machine.
LEVELS: dict[str, int] = {"gzip": 6, "bzip2": 9, "xz": 1, "lzma": 1, "lz4": 9, "zstd": 9}

PCIHACK_PATH = "scripts/init-bottom/pcihack"
ORDER_PATH = "scripts/init-bottom/ORDER"
PCIHACK_SCRIPT = b"""\
#!/bin/sh
# Added by vsaimage: show the VSA software the fake PCI device list of the
# real root (the Xen platform device) instead of the domU's /proc/bus/pci.
# Must never fail the boot: every path ends in exit 0.

PREREQ=""
prereqs()
{
	echo "$PREREQ"
}
case $1 in
prereqs)
	prereqs
	exit 0
	;;
esac

src="${rootmnt}/hack/bus/pci"
dst=/proc/bus/pci
if [ ! -d "$dst" ]; then
	echo "pcihack: $dst missing, not mounting"
elif [ ! -d "$src" ]; then
	echo "pcihack: $src missing, not mounting"
elif mount -o bind "$src" "$dst"; then
	echo "pcihack: bind-mounted $src on $dst"
else
	echo "pcihack: bind mount of $src on $dst failed, carrying on"
fi
exit 0
"""

_NEWC_MAGICS = (b"070701", b"070702")
_NEWC_HEADER = 110
_TRAILER = b"TRAILER!!!"
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

_S_IFMT = 0o170000
_S_IFREG = 0o100000
_S_IFDIR = 0o040000
_MODULES_RE = re.compile(rb"^(?:usr/)?lib/modules/([^/]+)(?:/|$)")
_ORDER_SCRIPT_RE = re.compile(r'^/scripts/init-bottom/\S+(?:\s+"\$@")?\s*$')


@dataclass(frozen=True)
class RepackResult:
    compression: str
    input_compression: str
    early_segments: int
    entries: int
    added: tuple[str, ...]
    changed: tuple[str, ...]
    already_applied: bool
    module_versions: tuple[str, ...]
    conf_modules: tuple[str, ...]  # what conf/modules loads at boot: the guest needs them too
    input_bytes: int
    output_bytes: int
    # the kernel modules inside (paths), for initrd_drivers; too long for the report
    module_files: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                if k != "module_files"}


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


class _Entry:
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
        return self.mode & _S_IFMT == _S_IFREG

    @property
    def isdir(self) -> bool:
        return self.mode & _S_IFMT == _S_IFDIR

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

    def set_data(self, data: bytes) -> None:
        self.data = data
        _entry_set_size(self.ptr, len(data))


def _norm(name: bytes) -> bytes:
    while name.startswith((b"./", b"/")):
        name = name[1:] if name.startswith(b"/") else name[2:]
    return b"" if name == b"." else name


def _sort_key(entry: _Entry) -> tuple[bytes, ...]:
    # Component-wise, so that a directory always precedes its contents even
    # when a sibling name sorts between them bytewise ("a-b" vs "a/b").
    key = entry.key
    return tuple(key.split(b"/")) if key else ()


# --- splitting the segments -------------------------------------------------


@dataclass(frozen=True)
class _Split:
    early: bytes  # every byte before the main segment, unchanged
    early_segments: int
    main: bytes
    compression: str  # "none" for an uncompressed main segment


def _hex_field(data: bytes, pos: int, index: int) -> int:
    start = pos + 6 + 8 * index
    try:
        return int(data[start:start + 8], 16)
    except ValueError:
        raise InitrdError(f"corrupt cpio header at offset {pos} of the initrd") from None


def _newc_segment_end(data: bytes, pos: int) -> int:
    """Offset just past the TRAILER!!! of the newc segment starting at pos."""
    while True:
        if pos + _NEWC_HEADER > len(data):
            raise InitrdError("truncated initrd: an uncompressed cpio segment has no TRAILER!!!")
        if data[pos:pos + 6] not in _NEWC_MAGICS:
            raise InitrdError(f"corrupt cpio segment in the initrd: no newc header at offset {pos}")
        filesize = _hex_field(data, pos, 6)
        namesize = _hex_field(data, pos, 11)
        name = data[pos + _NEWC_HEADER:pos + _NEWC_HEADER + namesize].rstrip(b"\0")
        end = _align4(_align4(pos + _NEWC_HEADER + namesize) + filesize)
        if name == _TRAILER and pos + _NEWC_HEADER + namesize <= len(data):
            return min(end, len(data))
        if end > len(data):
            raise InitrdError("truncated initrd: an uncompressed cpio segment ends mid-entry")
        pos = end


def _align4(n: int) -> int:
    return (n + 3) & ~3


def _compression_at(data: bytes, pos: int) -> str | None:
    for magic, name in _MAGICS:
        if data.startswith(magic, pos):
            return name
    for magic, what, hint in _REFUSED_MAGICS:
        if data.startswith(magic, pos):
            raise InitrdError(f"unsupported initrd: the segment at offset {pos} is {what}",
                              hint=hint)
    return None


def _split(data: bytes) -> _Split:
    pos = 0
    segments: list[int] = []  # start offsets of the uncompressed segments
    while True:
        while pos < len(data) and data[pos] == 0:
            pos += 1
        if pos == len(data):
            break
        if data.startswith(_NEWC_MAGICS, pos) and pos % 4 == 0:
            segments.append(pos)
            pos = _newc_segment_end(data, pos)
            continue
        compression = _compression_at(data, pos)
        if compression is not None:
            return _Split(data[:pos], len(segments), data[pos:], compression)
        if not segments:
            raise InitrdError("not an initrd: no cpio or compression magic at its start")
        magic = data[pos:pos + 4].hex(" ")
        raise InitrdError(f"unknown compression in the initrd: magic {magic} at offset {pos}",
                          hint=f"known: {', '.join(COMPRESSIONS)}")
    if not segments:
        raise InitrdError("not an initrd: the file is empty or all zeros")
    # No compressed segment: the last uncompressed one is the main segment.
    last = segments[-1]
    return _Split(data[:last], len(segments) - 1, data[last:], "none")


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


def _read_entries(main: bytes) -> list[_Entry]:
    entries: list[_Entry] = []
    with libarchive.memory_reader(main, format_name="cpio") as archive:
        for entry in archive:
            ptr = _entry_clone(entry._entry_p)
            if not ptr:
                raise MemoryError("archive_entry_clone")
            item = _Entry(ptr, b"")
            if item.isreg:
                item.data = _read_data(archive._pointer, int(_entry_size(ptr)))
            entries.append(item)
    return entries


def _read_main(split: _Split) -> list[_Entry]:
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


# --- the edit ---------------------------------------------------------------


def order_with_pcihack(text: str) -> str:
    """ORDER with the pcihack line added: after the script lines, before param.conf.

    Follows the file's line style: `"$@"` only if the existing lines have it
    (squeeze-era ORDER files do not).
    """
    lines = text.splitlines(keepends=True)
    if any(line.split()[:1] == ["/" + PCIHACK_PATH] for line in lines):
        return text
    scripts = [i for i, line in enumerate(lines) if _ORDER_SCRIPT_RE.match(line)]
    param = next((i for i, line in enumerate(lines) if "/conf/param.conf" in line), None)
    if param is not None:
        scripts = [i for i in scripts if i < param]
    if scripts:
        with_args = any('"$@"' in lines[i] for i in scripts)
        at = scripts[-1] + 1
    else:
        with_args = True
        at = param if param is not None else len(lines)
    if at > 0 and not lines[at - 1].endswith("\n"):
        lines[at - 1] += "\n"
    lines.insert(at, "/" + PCIHACK_PATH + (' "$@"' if with_args else "") + "\n")
    return "".join(lines)


def _source_date_epoch() -> int | None:
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InitrdError(f"SOURCE_DATE_EPOCH is not an integer: {value!r}") from None


def _new_entry(name: bytes, mode: int, data: bytes, *, like: _Entry, ino: int,
               mtime: int, nlink: int) -> _Entry:
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
    entry = _Entry(ptr, b"")
    entry.set_data(data)
    return entry


def _apply(entries: list[_Entry]) -> tuple[list[_Entry], list[str], list[str]]:
    """Add the script and the ORDER line; return (entries, added, changed)."""
    by_key = {e.key: e for e in entries}  # later duplicates win, as in the kernel
    scripts_dir = by_key.get(b"scripts")
    if scripts_dir is None or not scripts_dir.isdir:
        if any(e.key.startswith((b"usr/lib/dracut", b"lib/dracut")) for e in entries):
            raise InitrdError("unsupported initrd: it looks like a dracut initrd "
                              "(no scripts/ directory); only initramfs-tools is supported")
        raise InitrdError("not an initramfs-tools initrd: no scripts/ directory in it")
    prefix = scripts_dir.name[: len(scripts_dir.name) - len(b"scripts")]
    epoch = _source_date_epoch()
    mtime = epoch if epoch is not None else max(e.mtime for e in entries)
    next_ino = max(e.inode[2] for e in entries) + 1
    added: list[str] = []
    changed: list[str] = []

    bottom = by_key.get(b"scripts/init-bottom")
    if bottom is None:
        bottom = _new_entry(prefix + b"scripts/init-bottom", _S_IFDIR | 0o755, b"",
                            like=scripts_dir, ino=next_ino, mtime=mtime, nlink=2)
        next_ino += 1
        entries.append(bottom)
        added.append("scripts/init-bottom")

    script = by_key.get(PCIHACK_PATH.encode())
    if script is not None and not script.isreg:
        entries.remove(script)
        script = None
        changed.append(PCIHACK_PATH)
    if script is None:
        entries.append(_new_entry(prefix + PCIHACK_PATH.encode(), _S_IFREG | 0o755,
                                  PCIHACK_SCRIPT, like=bottom, ino=next_ino, mtime=mtime,
                                  nlink=1))
        if PCIHACK_PATH not in changed:
            added.append(PCIHACK_PATH)
    elif script.data != PCIHACK_SCRIPT or script.mode != _S_IFREG | 0o755:
        script.set_data(PCIHACK_SCRIPT)
        _entry_set_mode(script.ptr, _S_IFREG | 0o755)
        changed.append(PCIHACK_PATH)

    order = by_key.get(ORDER_PATH.encode())
    if order is not None and order.isreg:
        text = order.data.decode("utf-8", "surrogateescape")
        new = order_with_pcihack(text)
        if new != text:
            order.set_data(new.encode("utf-8", "surrogateescape"))
            changed.append(ORDER_PATH)
    return entries, added, changed


def _hardlinks_data_on_last(entries: list[_Entry]) -> None:
    """Put each hardlink group's data on its last member in the new order.

    newc stores the body once, on the last link; sorting can change which
    link is last, so move it there and leave the others empty.
    """
    groups: dict[tuple[int, int, int], list[_Entry]] = {}
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


def _write_cpio(entries: Iterable[_Entry], filter_name: str | None, options: str) -> bytes:
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


def _compress_main(entries: list[_Entry], compression: str, threads: int) -> bytes:
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


# --- public API -------------------------------------------------------------


def _module_versions(entries: Iterable[_Entry]) -> tuple[str, ...]:
    found = set()
    for entry in entries:
        match = _MODULES_RE.match(entry.key)
        if match:
            found.add(match.group(1).decode("utf-8", "replace"))
    return tuple(sorted(found))


def _conf_modules(entries: Iterable[_Entry]) -> tuple[str, ...]:
    """The module names in conf/modules (from /etc/initramfs-tools/modules)."""
    for entry in entries:
        if entry.key == b"conf/modules" and entry.isreg:
            lines = entry.data.decode("utf-8", "replace").splitlines()
            return tuple(line.split()[0] for line in lines
                         if line.strip() and not line.lstrip().startswith("#"))
    return ()


def repack(data: bytes, *, compression: str | None = None,
           threads: int = 2) -> tuple[bytes, RepackResult]:
    """Return the initrd with pcihack added, and what was done.

    Early uncompressed segments are kept byte for byte and first; the main
    segment is rewritten as newc, sorted, with every header field kept.
    `threads` is the zstd worker count (fixed, for reproducible bytes).
    """
    if compression is not None and compression not in COMPRESSIONS:
        raise InitrdError(f"unknown initrd compression {compression!r}",
                          hint=f"choose one of {', '.join(COMPRESSIONS)}")
    if threads < 0:
        raise InitrdError(f"zstd thread count must be 0 or more, not {threads}")
    split = _split(data)
    entries = _read_main(split)
    if not entries:
        raise InitrdError("not an initramfs-tools initrd: its main cpio segment is empty")
    entries, added, changed = _apply(entries)
    out_compression = compression or split.compression
    applied = not added and not changed
    entries.sort(key=_sort_key)
    _hardlinks_data_on_last(entries)
    if applied and out_compression == split.compression:
        # Nothing to change: the input is the answer (idempotent, byte for byte).
        out = data
    else:
        out = split.early + _compress_main(entries, out_compression, threads)
    result = RepackResult(
        compression=out_compression,
        input_compression=split.compression,
        early_segments=split.early_segments,
        entries=len(entries),
        added=tuple(added),
        changed=tuple(changed),
        already_applied=applied,
        module_versions=_module_versions(entries),
        conf_modules=_conf_modules(entries),
        input_bytes=len(data),
        output_bytes=len(out),
        module_files=tuple(e.key.decode("utf-8", "replace") for e in entries
                           if e.isreg and b"/modules/" in e.key and b".ko" in e.key),
    )
    return out, result


def check(data: bytes) -> bool:
    """Postcondition: pcihack is present (0755, our content) and listed in ORDER if any."""
    entries = _read_main(_split(data))
    by_key = {e.key: e for e in entries}
    script = by_key.get(PCIHACK_PATH.encode())
    if script is None or not script.isreg or script.mode & 0o7777 != 0o755:
        return False
    if script.data != PCIHACK_SCRIPT:
        return False
    order = by_key.get(ORDER_PATH.encode())
    if order is None:
        return True
    text = order.data.decode("utf-8", "surrogateescape")
    return order_with_pcihack(text) == text


"""Initrd repack: checked with an independent reader (tests/initrd_reader.py).

The machine's Debian initrd (copied at test time: packages regenerate it) is
checked only for what every bookworm initrd has; variants are built from it
with the command-line tools. Initrds built here cover what a machine's may
lack: hardlink groups (busybox's, when busybox is installed) in a tree packed
as mkinitramfs packs it, and small hand-made ones for the odd cases.
"""

from __future__ import annotations

import errno
import gzip
import io
import json
import os
import random
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import initrd_reader as rd
from fixtures.build_image import default_busybox
from support import DebianKernel, check_bytes, repack_bytes
from vsaimage.edits import pcihack
from vsaimage.errors import InitrdError
from vsaimage.initrd import archive
from vsaimage.initrd import drivers as initrd_drivers
from vsaimage.initrd import repack as initrd

SCRIPT = "scripts/init-bottom/pcihack"
ORDER = "scripts/init-bottom/ORDER"
BOOKWORM_ORDER = b'/scripts/init-bottom/udev "$@"\n[ -e /conf/param.conf ] && . /conf/param.conf\n'

Repacked = tuple[bytes, bytes, initrd.RepackResult]


@pytest.fixture(autouse=True)
def _no_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)


# --- building inputs ---------------------------------------------------------


# How mkinitramfs compresses (gzip -n, xz --check=crc32, zstd -q), at the
# fastest levels: the big real cpio takes close to a minute at the default ones.
COMPRESS = {"zstd": ["zstd", "-q", "-1", "-c"], "gzip": ["gzip", "-1", "-n", "-c"],
            "xz": ["xz", "--check=crc32", "-0", "-c"]}


def _compress(tool: str, cpio: bytes) -> bytes:
    return subprocess.run(COMPRESS[tool], input=cpio, capture_output=True, check=True).stdout


@pytest.fixture(scope="session")
def real(debian_kernel: DebianKernel) -> bytes:
    """The main segment of the machine's initrd, as zstd (bookworm's default).
    An early microcode segment (intel- or amd64-microcode installed) or another
    COMPRESS in initramfs.conf are the machine's choice: the cases below add
    their own."""
    _, _, main = rd.split(debian_kernel.initrd.read_bytes())
    return main if main.startswith(b"\x28\xb5\x2f\xfd") else _compress("zstd", rd.decompress(main))


@pytest.fixture(scope="session")
def real_cpio(real: bytes) -> bytes:
    return rd.decompress(real)


@pytest.fixture(scope="session")
def microcode(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """An early segment as mkinitramfs makes it: GNU cpio newc, 512-byte blocks."""
    root = tmp_path_factory.mktemp("ucode")
    blob = root / "kernel/x86/microcode/GenuineIntel.bin"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(random.Random(4).randbytes(5001))
    names = "kernel\nkernel/x86\nkernel/x86/microcode\nkernel/x86/microcode/GenuineIntel.bin\n"
    out = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "--reproducible"],
                         input=names.encode(), cwd=root, capture_output=True, check=True).stdout
    assert len(out) % 512 == 0
    return out


_MEMBERS: dict[int, tuple[bytes, list[rd.Member]]] = {}


def _members(data: bytes) -> list[rd.Member]:
    """rd.main_members, parsed once per (big) initrd."""
    cached = _MEMBERS.get(id(data))
    if cached is None or cached[0] is not data:
        cached = _MEMBERS[id(data)] = (data, rd.main_members(data))
    return cached[1]


def _repack(data: bytes, **kw: object) -> Repacked:
    out, result = repack_bytes(data, **kw)  # type: ignore[arg-type]
    return data, out, result


_CASES: dict[str, Repacked] = {}


def _case(name: str, build: Callable[[], bytes], **kw: object) -> Repacked:
    if name not in _CASES:
        _CASES[name] = _repack(build(), **kw)
    return _CASES[name]


def _trimmed_real(real_cpio: bytes) -> bytes:
    """The real cpio without its big files (hardlink groups kept): xz is slow."""
    members, _ = rd.parse_newc(real_cpio)
    kept = [m for m in members if len(m.data) < 20_000 or m.nlink > 1]
    return rd.write_newc(kept)


@pytest.fixture(params=["zstd", "microcode+zstd", "gzip", "xz-trimmed"])
def case(request: pytest.FixtureRequest, real: bytes, real_cpio: bytes,
         microcode: bytes) -> Iterator[tuple[str, Repacked]]:
    name = request.param
    if name == "zstd":
        yield name, _case(name, lambda: real)
    elif name == "microcode+zstd":
        yield name, _case(name, lambda: microcode + real)
    elif name == "gzip":
        # gzip -9 of the real cpio takes close to a minute: level 1 both ways.
        with pytest.MonkeyPatch.context() as mp:
            mp.setitem(archive.LEVELS, "gzip", 1)
            yield name, _case(name, lambda: _compress("gzip", real_cpio))
    else:
        yield name, _case(name, lambda: _compress("xz", _trimmed_real(real_cpio)))


# Hardlink groups, each with its content. busybox's initramfs hook links its
# applets to usr/bin/busybox like the first; the second's names sort the other
# way bytewise ("-" < "/"), which is how mkinitramfs sorts them.
LINK_GROUPS: dict[tuple[str, ...], bytes] = {
    ("usr/bin/busybox", "usr/bin/cat", "usr/bin/ls", "usr/sbin/switch_root"):
        b"\x7fELF busybox\n",
    ("usr/lib/tool", "usr/lib-compat/tool"): b"\x7fELF tool\n",
}


@pytest.fixture(scope="session")
def linked_cpio(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A main cpio packed as mkinitramfs packs it (find | sort | GNU cpio newc)
    from a tree holding LINK_GROUPS as real hardlinks: GNU cpio writes each
    group's links together, the data on the last one it writes."""
    root = tmp_path_factory.mktemp("linked")
    files = {ORDER: BOOKWORM_ORDER, "scripts/init-bottom/udev": b"#!/bin/sh\n",
             "usr/lib/modules/6.1.0-99-amd64/modules.dep": b""}
    files.update({names[0]: data for names, data in LINK_GROUPS.items()})
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    for names in LINK_GROUPS:
        for name in names[1:]:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            os.link(root / names[0], root / name)
    (root / "bin").symlink_to("usr/bin")
    return subprocess.run("find . | LC_ALL=C sort | cpio --quiet -R 0:0 --reproducible -o -H newc",
                          shell=True, cwd=root, capture_output=True, check=True).stdout


def _linked(name: str, cpio: bytes, microcode: bytes) -> Repacked:
    """The built initrd compressed as `name` says, behind a microcode segment
    for microcode+zstd."""
    early = microcode if name.startswith("microcode+") else b""
    return _case(f"linked {name}",
                 lambda: early + _compress(name.removeprefix("microcode+"), cpio))


@pytest.fixture(params=["zstd", "microcode+zstd", "gzip", "xz"])
def linked(request: pytest.FixtureRequest, linked_cpio: bytes, microcode: bytes) -> Repacked:
    return _linked(request.param, linked_cpio, microcode)


# --- expectations, computed independently ------------------------------------


def _with_pcihack_line(order: bytes) -> bytes:
    lines = order.decode().splitlines(keepends=True)
    last = max(i for i, line in enumerate(lines) if line.startswith("/scripts/init-bottom/"))
    args = ' "$@"' if '"$@"' in lines[last] else ""
    lines.insert(last + 1, f"/scripts/init-bottom/pcihack{args}\n")
    return "".join(lines).encode()


def _expected(before: list[rd.Member], *, mtime: int | None = None) -> dict[str, tuple[object, ...]]:
    members = [rd.Member(m.name, m.ino, m.mode, m.uid, m.gid, m.nlink, m.mtime, m.devmajor,
                         m.devminor, m.rdevmajor, m.rdevminor, m.data) for m in before]
    for m in members:
        if m.name == ORDER:
            m.data = _with_pcihack_line(m.data)
    script_mtime = mtime if mtime is not None else max(m.mtime for m in before)
    members.append(rd.member(SCRIPT, 0o100755, pcihack.PCIHACK_SCRIPT, ino=0,
                             mtime=script_mtime))
    return _listing(members)


def _listing(members: list[rd.Member]) -> dict[str, tuple[object, ...]]:
    mtimes = {m.name: m.mtime for m in members}
    return {name: (*entry, mtimes[name]) for name, entry in rd.listing(members).items()}


# --- the real initrd and its variants -----------------------------------------


def test_listing_is_input_plus_script_and_order(case: tuple[str, Repacked]) -> None:
    _, (before, after, result) = case
    old, new = _members(before), _members(after)
    assert _listing(new) == _expected(old)
    assert result.added == (SCRIPT,)
    assert result.changed == (ORDER,)
    assert not result.already_applied
    assert result.entries == len(new) == len(old) + 1
    assert result.output_bytes == len(after)
    assert result.input_bytes == len(before)
    assert result.module_versions and all(v[0].isdigit() for v in result.module_versions)
    json.dumps(result.as_dict())


def test_order_is_the_inputs_with_the_script_after_its_directory(case: tuple[str, Repacked]) -> None:
    # Deterministic without sorting: the input's order, and the new member
    # in a fixed place (right after its directory, which precedes it).
    _, (before, after, _) = case
    names = [m.name for m in _members(before)]
    bottom = names.index("scripts/init-bottom")
    assert [m.name for m in _members(after)] == [*names[:bottom + 1], SCRIPT, *names[bottom + 1:]]


def test_hardlinks_keep_data_on_the_last_link(linked: Repacked) -> None:
    before, after, _ = linked
    for names, data in LINK_GROUPS.items():
        old = [m for m in _members(before) if m.name in names]
        new = [m for m in _members(after) if m.name in names]
        assert [m.name for m in new] == [m.name for m in old] and len(new) == len(names)
        assert len({(m.devmajor, m.devminor, m.ino) for m in new}) == 1
        assert [m.nlink for m in new] == [len(names)] * len(names)
        assert [m.data for m in new] == [b""] * (len(names) - 1) + [data]


def test_gnu_cpio_extracts_the_hardlinks(linked_cpio: bytes, microcode: bytes,
                                         tmp_path: Path) -> None:
    _, after, _ = _linked("zstd", linked_cpio, microcode)
    subprocess.run(["cpio", "--quiet", "-idm", "--no-absolute-filenames"],
                   input=rd.decompress(after), cwd=tmp_path, check=True)
    for names, data in LINK_GROUPS.items():
        stats = [(tmp_path / name).stat() for name in names]
        assert {(s.st_ino, s.st_nlink) for s in stats} == {(stats[0].st_ino, len(names))}
        assert (tmp_path / names[-1]).read_bytes() == data


def test_compression_and_early_segments(case: tuple[str, Repacked]) -> None:
    name, (before, after, result) = case
    early_in, offset_in, _ = rd.split(before)
    early_out, offset_out, main_out = rd.split(after)
    assert early_out == early_in
    assert after[:offset_out] == before[:offset_in]  # padding included, first
    assert result.early_segments == len(early_in) == (1 if name.startswith("microcode") else 0)
    expected = {"zstd": "zstd", "microcode+zstd": "zstd", "gzip": "gzip", "xz-trimmed": "xz"}
    assert result.compression == result.input_compression == expected[name]
    if result.compression == "xz":
        assert main_out[6:8] == b"\x00\x01"  # stream flags: CRC32, what the kernel reads


def test_gnu_cpio_reads_the_output(real: bytes) -> None:
    _, after, _ = _case("zstd", lambda: real)
    cpio = rd.decompress(after)
    names = subprocess.run(["cpio", "--quiet", "-it"], input=cpio, capture_output=True,
                           check=True).stdout.decode().splitlines()
    assert names == [m.name for m in _members(after)]


def test_deterministic(real: bytes, microcode: bytes) -> None:
    # The same main segment repacked twice, once behind a microcode segment.
    _, plain, _ = _case("zstd", lambda: real)
    _, with_ucode, _ = _case("microcode+zstd", lambda: microcode + real)
    assert with_ucode[len(microcode):] == plain


class _Full(io.BytesIO):
    def write(self, data: Any) -> int:
        if len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return 0


@pytest.mark.parametrize("compression", ["gzip", "xz"])
def test_a_failed_write_is_the_outputs_error_not_the_inputs(compression: str) -> None:
    # Written from inside libarchive (gzip) or beside it (xz): either way the
    # OSError, which the commands report as a write error of the output.
    # More than a block of output while the input is still being read.
    noise = rd.member("noise", 0o100644, random.Random(1).randbytes(4 * archive.BUFFER), ino=99)
    with pytest.raises(OSError) as exc:
        initrd.repack(io.BytesIO(_gz(rd.write_newc([*_small(), noise]))), _Full(),
                      compression=compression)
    assert exc.value.errno == errno.ENOSPC


def test_idempotent(real: bytes) -> None:
    _, once, _ = _case("zstd", lambda: real)
    twice, result = repack_bytes(once)
    assert twice == once
    assert result.already_applied and result.added == () and result.changed == ()
    assert check_bytes(once) and not check_bytes(real)


# --- small hand-made initrds ---------------------------------------------------


def _small(order: bytes | None = BOOKWORM_ORDER, *, bottom_dir: bool = True) -> list[rd.Member]:
    """Out of order on purpose, with a device node, hardlinks and a symlink."""
    m = rd.member
    members = [
        m("usr/lib/modules/5.10.0-9-amd64/modules.dep", 0o100644, b"x.ko:\n", ino=12),
        m("bin/sh", 0o100755, b"", ino=7, nlink=2),
        m(".", 0o040755, ino=1, nlink=6),
        m("dev", 0o040755, ino=2),
        m("dev/console", 0o020600, ino=3, rdev=(5, 1)),
        m("dev/sda", 0o060660, ino=13, rdev=(8, 0), gid=6),
        m("bin", 0o040755, ino=6),
        m("scripts", 0o040755, ino=4, mtime=1_700_000_000),
        m("bin/busybox", 0o104755, b"\x7fELF busybox", ino=7, nlink=2),
        m("lib", 0o120777, b"usr/lib", ino=8),
        m("usr", 0o040755, ino=9),
        m("usr/lib", 0o040755, ino=10),
        m("usr/lib/modules", 0o040755, ino=11),
        m("usr/lib/modules/5.10.0-9-amd64", 0o040755, ino=14),
        m("etc", 0o040700, ino=15, uid=1000, gid=1000),
        m("etc/owned", 0o100640, b"secret\n", ino=16, uid=1000, gid=100),
    ]
    if bottom_dir:
        members.append(m("scripts/init-bottom", 0o040755, ino=5))
        members.append(m("scripts/init-bottom/udev", 0o100755, b"#!/bin/sh\n", ino=17))
    if order is not None:
        members.append(m(ORDER, 0o100644, order, ino=18))
    return members


def _gz(cpio: bytes) -> bytes:
    return gzip.compress(cpio, compresslevel=1, mtime=0)


def test_small_attributes_and_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567890")
    before = _small()
    out, result = repack_bytes(_gz(rd.write_newc(before)))
    after = rd.main_members(out)
    assert _listing(after) == _expected(before, mtime=1234567890)
    console = next(m for m in after if m.name == "dev/console")
    assert (console.rdevmajor, console.rdevminor, console.mode) == (5, 1, 0o020600)
    order = next(m for m in after if m.name == ORDER).data
    assert order == (b'/scripts/init-bottom/udev "$@"\n/scripts/init-bottom/pcihack "$@"\n'
                     b"[ -e /conf/param.conf ] && . /conf/param.conf\n")
    assert result.module_versions == ("5.10.0-9-amd64",)
    assert result.compression == "gzip"


def test_small_order_without_args_style() -> None:
    old = (b"/scripts/init-bottom/udev\n/scripts/init-bottom/other\n"
           b"[ -e /conf/param.conf ] && . /conf/param.conf\n")
    out, _ = repack_bytes(_gz(rd.write_newc(_small(old))))
    order = next(m for m in rd.main_members(out) if m.name == ORDER).data
    assert order == (b"/scripts/init-bottom/udev\n/scripts/init-bottom/other\n"
                     b"/scripts/init-bottom/pcihack\n"
                     b"[ -e /conf/param.conf ] && . /conf/param.conf\n")


def test_order_text_edit() -> None:
    edit = pcihack.order_with_pcihack
    assert edit("") == '/scripts/init-bottom/pcihack "$@"\n'
    assert edit("[ -e /conf/param.conf ] && . /conf/param.conf") == (
        '/scripts/init-bottom/pcihack "$@"\n[ -e /conf/param.conf ] && . /conf/param.conf')
    assert edit("/scripts/init-bottom/udev") == (
        "/scripts/init-bottom/udev\n/scripts/init-bottom/pcihack\n")
    once = edit(BOOKWORM_ORDER.decode())
    assert edit(once) == once


def test_small_without_order_adds_only_the_script() -> None:
    before = _small(None)
    out, result = repack_bytes(_gz(rd.write_newc(before)))
    assert result.added == (SCRIPT,) and result.changed == ()
    assert _listing(rd.main_members(out)) == _expected(before)
    assert check_bytes(out)


def test_small_without_init_bottom_dir() -> None:
    out, result = repack_bytes(_gz(rd.write_newc(_small(None, bottom_dir=False))))
    assert result.added == ("scripts/init-bottom", SCRIPT)
    names = [m.name for m in rd.main_members(out)]
    assert names.index("scripts/init-bottom") < names.index(SCRIPT)
    bottom = next(m for m in rd.main_members(out) if m.name == "scripts/init-bottom")
    assert bottom.mode == 0o040755 and bottom.uid == bottom.gid == 0


@pytest.mark.parametrize("compression", initrd.COMPRESSIONS)
def test_every_compression(compression: str) -> None:
    before = _small()
    out, result = repack_bytes(_gz(rd.write_newc(before)), compression=compression)
    assert result.compression == compression and result.input_compression == "gzip"
    assert _listing(rd.main_members(out)) == _expected(before)
    magic = {"gzip": b"\x1f\x8b", "bzip2": b"BZh", "xz": b"\xfd7zXZ\0", "lzma": b"\x5d\0",
             "lz4": b"\x02\x21\x4c\x18", "zstd": b"\x28\xb5\x2f\xfd"}[compression]
    assert out.startswith(magic)
    if compression == "xz":
        assert out[6:8] == b"\x00\x01"  # stream flags: CRC32
    again, result2 = repack_bytes(out)
    assert again == out and result2.already_applied
    assert repack_bytes(_gz(rd.write_newc(before)), compression=compression)[0] == out


def test_recompress_already_applied_keeps_content() -> None:
    once, _ = repack_bytes(_gz(rd.write_newc(_small())))
    other, result = repack_bytes(once, compression="zstd")
    assert result.already_applied and result.compression == "zstd"
    assert other != once
    assert _listing(rd.main_members(other)) == _listing(rd.main_members(once))


def test_script_parses_and_never_fails(tmp_path: Path) -> None:
    out, _ = repack_bytes(_gz(rd.write_newc(_small())))
    script = next(m for m in rd.main_members(out) if m.name == SCRIPT)
    path = tmp_path / "pcihack"
    path.write_bytes(script.data)
    # dash, and busybox's ash: the initrd's shell when busybox is installed.
    for shell in (["sh"], [str(default_busybox()), "sh"]):
        subprocess.run([*shell, "-n", str(path)], check=True)
    prereqs = subprocess.run(["sh", str(path), "prereqs"], capture_output=True, text=True)
    assert prereqs.returncode == 0 and prereqs.stdout == "\n"
    # A root without /hack: explains itself and carries on, mounting nothing.
    run = subprocess.run(["sh", str(path)], capture_output=True, text=True,
                         env={"rootmnt": str(tmp_path / "root"), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0
    assert run.stdout.startswith("pcihack: ") and "missing, not mounting" in run.stdout
    text = script.data.decode()
    assert 'PREREQ=""' in text and "prereqs)" in text
    assert script.mode == 0o100755 and script.uid == script.gid == 0 and script.nlink == 1


def test_check_rejects_a_wrong_script() -> None:
    members = _small()
    members.append(rd.member(SCRIPT, 0o100755, b"#!/bin/sh\nexit 0\n", ino=30))
    data = _gz(rd.write_newc(members))
    assert not check_bytes(data)
    out, result = repack_bytes(data)
    assert result.added == () and set(result.changed) == {SCRIPT, ORDER}
    assert check_bytes(out)


def test_uncompressed_initrd_stays_uncompressed(microcode: bytes) -> None:
    before = _small()
    out, result = repack_bytes(microcode + rd.write_newc(before))
    assert result.input_compression == result.compression == "none"
    assert result.early_segments == 1 and out.startswith(microcode)
    members, end = rd.parse_newc(out, len(microcode))
    assert end == len(out)
    assert _listing(members) == _expected(before)


def test_zero_padding_after_zstd_is_tolerated() -> None:
    zst = subprocess.run(["zstd", "-q", "-c"], input=rd.write_newc(_small()),
                         capture_output=True, check=True).stdout
    out, result = repack_bytes(zst + bytes(512))
    assert result.input_compression == "zstd" and check_bytes(out)
    assert _listing(rd.main_members(out)) == _expected(_small())


def test_dot_slash_names_keep_their_style() -> None:
    members = _small()
    for m in members:
        if m.name != ".":
            m.name = "./" + m.name
    out, result = repack_bytes(_gz(rd.write_newc(members)))
    names = [m.name for m in rd.main_members(out)]
    assert "./" + SCRIPT in names and result.added == (SCRIPT,) and result.changed == (ORDER,)
    assert all(n == "." or n.startswith("./") for n in names)


def test_unmkinitramfs_reads_the_microcode_output(real: bytes, microcode: bytes,
                                                  tmp_path: Path) -> None:
    _, after, _ = _case("microcode+zstd", lambda: microcode + real)
    path = tmp_path / "initrd.img"
    path.write_bytes(after)
    subprocess.run(["unmkinitramfs", str(path), str(tmp_path / "x")], check=True)
    assert (tmp_path / "x/early/kernel/x86/microcode/GenuineIntel.bin").is_file()
    script = tmp_path / "x/main" / SCRIPT
    assert script.read_bytes() == pcihack.PCIHACK_SCRIPT


# --- errors ---------------------------------------------------------------------


def _error(data: bytes) -> str:
    with pytest.raises(InitrdError) as exc:
        repack_bytes(data)
    message = exc.value.message
    assert "\n" not in message and message
    assert exc.value.exit_code == 2
    return message


def test_error_random_bytes() -> None:
    assert "not an initrd" in _error(b"\x13\x37" + random.Random(1).randbytes(4096))


def test_error_empty() -> None:
    assert "not an initrd" in _error(b"")


def test_error_truncated(real: bytes) -> None:
    assert "truncated" in _error(real[: len(real) // 2])


def test_error_truncated_early_segment(microcode: bytes) -> None:
    assert "truncated" in _error(microcode[:300])


def test_error_unknown_compression(microcode: bytes) -> None:
    message = _error(microcode + b"\xab\xcd\xef\x01" + bytes(range(200)))
    assert "unknown compression" in message and "ab cd ef 01" in message


def test_error_lzo_and_lz4_frame() -> None:
    assert "lzo" in _error(b"\x89LZO\0\r\n\x1a\n" + bytes(64))
    assert "lz4 frame" in _error(subprocess.run(
        ["lz4", "-q", "-c"], input=rd.write_newc(_small()), capture_output=True,
        check=True).stdout)


def test_error_dracut() -> None:
    m = rd.member
    members = [m("usr", 0o040755, ino=1), m("usr/lib", 0o040755, ino=2),
               m("usr/lib/dracut", 0o040755, ino=3),
               m("usr/lib/dracut/build-parameter.txt", 0o100644, b"", ino=4),
               m("init", 0o120777, b"usr/lib/systemd/systemd", ino=5)]
    assert "dracut" in _error(_gz(rd.write_newc(members)))
    assert "initramfs-tools" in _error(_gz(rd.write_newc(members[:2])))


def test_error_unknown_requested_compression() -> None:
    with pytest.raises(InitrdError):
        repack_bytes(_gz(rd.write_newc(_small())), compression="lzo")


# --- what --pci-hack and --skip pci ask of the initrd ---------------------------


def test_pci_options_choose_the_initrd_action() -> None:
    from vsaimage.edits import PciHack

    assert pcihack.action(PciHack.BOTH, frozenset()) == "add"
    assert pcihack.action(PciHack.BIND, frozenset()) == "add"
    assert pcihack.action(PciHack.BINARY, frozenset()) == "remove"
    for hack in PciHack:
        assert pcihack.action(hack, frozenset({"pci"})) == "keep"


def test_binary_takes_pcihack_out_again() -> None:
    stock = _gz(rd.write_newc(_small()))
    added, _ = repack_bytes(stock)
    assert check_bytes(added) and not check_bytes(added, "remove")
    removed, result = repack_bytes(added, action="remove")
    names = {m.name for m in rd.main_members(removed)}
    assert SCRIPT not in names
    order = next(m for m in rd.main_members(removed) if m.name == ORDER).data
    assert order == BOOKWORM_ORDER
    assert result.removed == (SCRIPT,) and result.changed == (ORDER,)
    assert check_bytes(removed, "remove") and not check_bytes(removed)
    # an initrd without pcihack is left as it is, byte for byte
    same, result = repack_bytes(stock, action="remove")
    assert same == stock and result.already_applied


def test_skip_pci_keeps_the_initrd_as_given() -> None:
    added, _ = repack_bytes(_gz(rd.write_newc(_small())))
    for given in (_gz(rd.write_newc(_small())), added):
        out, result = repack_bytes(given, action="keep")
        assert out == given and result.already_applied and result.pcihack == "keep"
        assert check_bytes(given, "keep")


def test_order_without_pcihack_keeps_other_lines() -> None:
    text = '/scripts/init-bottom/udev "$@"\n/scripts/init-bottom/pcihack "$@"\r\n# pcihack\n'
    assert pcihack.order_without_pcihack(text) == '/scripts/init-bottom/udev "$@"\n# pcihack\n'
    assert pcihack.order_without_pcihack(pcihack.order_with_pcihack(BOOKWORM_ORDER.decode())) == \
        BOOKWORM_ORDER.decode()


def test_module_files_are_listed_for_the_driver_check_not_in_the_report() -> None:
    ko = "usr/lib/modules/5.10.0-9-amd64/kernel/drivers/block/xen-blkfront.ko"
    members = [*_small(), rd.member("usr/lib/modules/5.10.0-9-amd64/kernel", 0o040755, ino=30),
               rd.member(ko, 0o100644, b"\x7fELF", ino=31)]
    _, result = repack_bytes(_gz(rd.write_newc(members)))
    assert result.module_files == (ko,)
    assert initrd_drivers.check(result.module_files, "", "ext3").missing == ["ext4"]
    assert "module_files" not in result.as_dict()

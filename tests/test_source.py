"""parse_image: the image argument (file, block device, iscsi:// URI) and the
cheap host-side checks made before any appliance is launched. Exit codes are
tested through the CLI elsewhere; here, the exceptions and what they say."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from vsaimage.errors import ImageError
from vsaimage.inputs import iscsi
from vsaimage.inputs.source import ImageSource, file_size, parse_image
from vsaimage.model import Drive
from vsaimage.outputs import copy as output

IQN = "iqn.2003-10.com.lefthandnetworks:vsa"


def _disk(path: Path, size: int = 2**20, *, signature: bytes = b"\x55\xaa") -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(510)
        f.write(signature)
    return path


# --- iscsi:// ----------------------------------------------------------------


def test_iscsi_uri_with_port() -> None:
    s = parse_image(f"iscsi://10.0.0.5:3261/{IQN}/1")
    assert s.path is None
    assert s.iscsi_server == "tcp:10.0.0.5:3261"
    assert s.iscsi_target == f"{IQN}/1"
    assert s.iscsi_uri == f"iscsi://10.0.0.5:3261/{IQN}/1"
    assert str(s) == f"iscsi://10.0.0.5:3261/{IQN}/1"


def test_iscsi_default_port_and_trailing_slash() -> None:
    s = parse_image(f"iscsi://storage.example/{IQN}/0/")
    assert s.iscsi_server == "tcp:storage.example:3260"
    assert s.iscsi_target == f"{IQN}/0"
    assert s.iscsi_uri == f"iscsi://storage.example:3260/{IQN}/0"


@pytest.mark.parametrize("uri", [f"iscsi://[::1]:3270/{IQN}/2", f"iscsi://[fe80::1]/{IQN}/2"])
def test_iscsi_ipv6_is_refused_with_a_way_out(uri: str) -> None:
    """qemu-img reads iscsi://[::1]:PORT/..., but libguestfs 1.48 hands qemu
    the portal percent-encoded (%5B%3A%3A1%5D), which it cannot resolve: the
    launch would fail with no useful message."""
    with pytest.raises(ImageError, match="IPv6 address") as e:
        parse_image(uri)
    assert e.value.hint == "use a host name that resolves to it"


def test_iscsi_numbers_are_normalised() -> None:
    s = parse_image(f"iscsi://h:03260/{IQN}/007")
    assert s.iscsi_server == "tcp:h:3260"
    assert s.iscsi_target == f"{IQN}/7"


def test_iscsi_drive_is_a_network_drive_of_a_lun_that_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, str | None]] = []

    def lun_size(uri: str, *, image: str | None = None) -> int:
        asked.append((uri, image))
        return 2**30

    monkeypatch.setattr(iscsi, "lun_size", lun_size)
    d = parse_image(f"iscsi://127.0.0.1:3300/{IQN}/01/").drive(readonly=True)
    assert asked == [(f"iscsi://127.0.0.1:3300/{IQN}/1", f"iscsi://127.0.0.1:3300/{IQN}/01/")]
    assert d == Drive(f"{IQN}/1", readonly=True, format="raw", protocol="iscsi",
                      server=("tcp:127.0.0.1:3300",))


@pytest.mark.parametrize("uri, says", [
    ("iscsi://", "not an iSCSI URI"),
    ("iscsi://host", "not an iSCSI URI"),
    (f"iscsi://host/{IQN}", "not an iSCSI URI"),  # no LUN
    ("iscsi://host//1", "not an iSCSI URI"),  # no IQN
    (f"iscsi:///{IQN}/1", "not an iSCSI URI"),  # no host
    (f"iscsi://host/{IQN}/1/extra", "not an iSCSI URI"),
    (f"iscsi://::1/{IQN}/1", "not an iSCSI URI"),  # IPv6 without brackets
    (f"iscsi://[::1/{IQN}/1", "not an iSCSI URI"),
    (f"iscsi://[host]/{IQN}/1", "brackets are for IPv6"),
    (f"iscsi://host:/{IQN}/1", "bad TCP port ''"),
    (f"iscsi://host:0/{IQN}/1", "bad TCP port '0'"),
    (f"iscsi://host:65536/{IQN}/1", "bad TCP port '65536'"),
    (f"iscsi://host:iscsi/{IQN}/1", "bad TCP port 'iscsi'"),
    (f"iscsi://host/{IQN}/lun1", "bad LUN 'lun1'"),
    (f"iscsi://host/{IQN}/-1", "bad LUN '-1'"),
    (f"iscsi://host/{IQN}/16384", "bad LUN '16384'"),
])
def test_bad_iscsi_uris(uri: str, says: str) -> None:
    with pytest.raises(ImageError) as e:
        parse_image(uri)
    assert e.value.message.startswith(uri + ": ")
    assert says in e.value.message
    assert e.value.hint and "iscsi://HOST[:PORT]/IQN/LUN" in e.value.hint


def test_lun_size_of_an_unreachable_target_is_a_clear_error() -> None:
    """Nothing listens on a port just freed: qemu-img fails at once, and the
    error names the URI the user gave (no appliance launched)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"iscsi://127.0.0.1:{port}/{IQN}/1"
    with pytest.raises(ImageError) as e:
        parse_image(uri).drive(readonly=True)
    assert e.value.message.startswith(f"{uri}: cannot open the LUN: ")
    assert "Could not open" not in e.value.message


def test_lun_size_without_the_iscsi_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "qemu-img"
    fake.write_text("#!/bin/sh\necho \"qemu-img: Could not open '$6': Unknown protocol 'iscsi'\" >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    with pytest.raises(ImageError) as e:
        parse_image(f"iscsi://127.0.0.1/{IQN}/1").size()
    assert "Unknown protocol 'iscsi'" in e.value.message
    assert e.value.hint and "qemu-block-extra" in e.value.hint


# --- files and block devices ---------------------------------------------------


def test_plain_file(tmp_path: Path) -> None:
    img = _disk(tmp_path / "vsa.img")
    s = parse_image(str(img))
    assert s == ImageSource(str(img), path=img, virtual_size=2**20)
    assert s.drive(readonly=True) == Drive(str(img), readonly=True)


def test_gpt_disk_is_accepted(tmp_path: Path) -> None:
    img = tmp_path / "gpt.img"
    with open(img, "wb") as f:
        f.truncate(2**20)
        f.seek(512)
        f.write(b"EFI PART")
    assert parse_image(str(img)).path == img


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"nope\.img: no such file$"):
        parse_image(str(tmp_path / "nope.img"))


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="is a directory, not a disk image"):
        parse_image(str(tmp_path))


def test_not_a_file_nor_a_block_device(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file or block device"):
        parse_image(str(fifo))
    with pytest.raises(ImageError, match="not a regular file or block device"):
        parse_image("/dev/null")  # a character device


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.img").touch()
    with pytest.raises(ImageError, match="empty file"):
        parse_image(str(tmp_path / "empty.img"))


def test_too_small(tmp_path: Path) -> None:
    (tmp_path / "tiny.img").write_bytes(b"\x55\xaa" * 100)
    with pytest.raises(ImageError, match=r"too small to be a disk image \(200 bytes\)"):
        parse_image(str(tmp_path / "tiny.img"))


def test_no_partition_table(tmp_path: Path) -> None:
    img = _disk(tmp_path / "part.img", signature=b"\0\0")  # e.g. a dd of one partition
    with pytest.raises(ImageError, match="no partition table") as e:
        parse_image(str(img))
    assert e.value.hint and "whole disk" in e.value.hint


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    img = _disk(tmp_path / "secret.img")
    img.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make access() answer as for a user
        monkeypatch.setattr("vsaimage.inputs.source.os.access", lambda *_a, **_k: False)
    with pytest.raises(ImageError, match="permission denied"):
        parse_image(str(img))


def test_unsearchable_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "locked"
    d.mkdir()
    img = _disk(d / "vsa.img")
    if os.geteuid() == 0:
        real_stat = Path.stat

        def denied(self: Path, **kw: bool) -> os.stat_result:
            if self == img:
                raise PermissionError(13, "Permission denied")
            return real_stat(self, **kw)

        monkeypatch.setattr(Path, "stat", denied)
    d.chmod(0)
    try:
        with pytest.raises(ImageError, match="cannot access: Permission denied"):
            parse_image(str(img))
    finally:
        d.chmod(0o755)


# --- the copy of a block device --------------------------------------------------
# A block device has no holes to seek to: the copy reads everything and skips
# all-zero blocks. Without loop devices (root-only, not in tests) the same path
# is taken by a regular file written in full, zeros included, with SEEK_DATA
# made unavailable as on a block device.


def test_copy_without_seek_data_skips_zero_blocks(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "dev.img"
    size = 64 * 2**20
    data_at = {0: os.urandom(512), 20 * 2**20 + 4096: os.urandom(3 * 2**20), size - 1000: os.urandom(1000)}
    with open(src, "wb") as f:
        pos = 0
        for off, data in sorted(data_at.items()):
            f.write(bytes(off - pos))  # zeros written out: no holes anywhere
            f.write(data)
            pos = off + len(data)
    assert src.stat().st_size == size
    assert src.stat().st_blocks * 512 >= size  # fully allocated, like a device

    def no_seek_data(_fd: int, _size: int) -> list[tuple[int, int]]:
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(output, "_data_extents", no_seek_data)
    seen: list[int] = []
    dst = tmp_path / "copy.img"
    written = output.sparse_copy(src, dst, label=dst, progress=seen.append)

    assert dst.read_bytes() == src.read_bytes()
    assert sum(seen) == size  # progress covers every byte read
    assert written <= 3 * output._CHUNK  # only the chunks holding data
    assert dst.stat().st_blocks * 512 <= written + 2**20


def test_size_seeks_to_the_end(tmp_path: Path) -> None:
    img = _disk(tmp_path / "vsa.img", 5 * 2**20 + 512)
    assert file_size(img) == 5 * 2**20 + 512
    assert parse_image(str(img)).size() == 5 * 2**20 + 512


# --- qemu-img copies (qcow2 output, iSCSI input) --------------------------------


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_qemu_img_copy_with_progress(tmp_path: Path, fmt: str) -> None:
    src = _disk(tmp_path / "vsa.img", 64 * 2**20)
    with open(src, "r+b") as f:
        f.seek(40 * 2**20)
        f.write(os.urandom(2**20))
    dst = tmp_path / f"out.{fmt}"
    seen: list[float] = []
    output.qemu_img_convert(str(src), dst, fmt, "raw", label=dst, progress=seen.append)
    assert seen and seen[-1] == 100.0 and seen == sorted(seen)
    r = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", fmt, str(src), str(dst)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert dst.stat().st_blocks * 512 < 8 * 2**20  # holes and zeros skipped


def test_qemu_img_copy_into_a_missing_directory(tmp_path: Path) -> None:
    from vsaimage.errors import WriteError

    src = _disk(tmp_path / "vsa.img", 2**20)
    dst = tmp_path / "gone" / "out.img"
    with pytest.raises(WriteError, match=r"out\.img: qemu-img convert from .* failed"):
        output.qemu_img_convert(str(src), dst, "raw", "raw", label=dst)

"""kernel.py: the bzImage header on the installed Debian kernel and on crafted files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest

from support import DebianKernel
from vsaimage.errors import BadInput, KernelError
from vsaimage.kmod.kernel import check_initrd_versions, kernel_version


def crafted(
    *, magic: bytes = b"HdrS", ptr: int = 0x3000, text: bytes | None = None, size: int = 0x4000
) -> bytes:
    """A file with just enough of a bzImage setup header for the version lookup."""
    data = bytearray(size)
    data[0x202:0x206] = magic
    data[0x20E:0x210] = struct.pack("<H", ptr)
    if text is not None:
        at = ptr + 0x200
        data[at : at + len(text)] = text
    return bytes(data)


def write(tmp_path: Path, data: bytes, name: str = "vmlinuz") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_installed_kernel_matches_its_file_name(debian_kernel: DebianKernel) -> None:
    # Debian names the file after the version; the header is read independently.
    assert kernel_version(debian_kernel.vmlinuz) == debian_kernel.version


def test_crafted_header(tmp_path: Path) -> None:
    text = b"6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP Debian\0garbage"
    assert kernel_version(write(tmp_path, crafted(text=text))) == "6.1.0-56-amd64"


def test_old_style_version(tmp_path: Path) -> None:
    text = b"2.6.32-5-xen-amd64 (Debian 2.6.32-48squeeze6) (dannf@debian.org)\0"
    assert kernel_version(write(tmp_path, crafted(text=text))) == "2.6.32-5-xen-amd64"


def test_string_running_to_end_of_file(tmp_path: Path) -> None:
    data = crafted(ptr=0x100, size=0x300) + b"5.10.0-1-amd64"
    assert kernel_version(write(tmp_path, data)) == "5.10.0-1-amd64"


def test_error_is_bad_input() -> None:
    # Exit code 2: a wrong --kernel is the user's input.
    assert issubclass(KernelError, BadInput)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (bytes(0x4000), "not a bzImage"),
        (b"", "not a bzImage"),
        (b"MZ\0\0", "not a bzImage"),
        (gzip.compress(b"x" * 5000), "not a bzImage"),
        (b"\x7fELF" + bytes(0x1000), "not a bzImage"),
        (crafted(magic=b"HdrX", text=b"6.1.0 x\0"), "not a bzImage"),
        (crafted(ptr=0), "no kernel version pointer"),
        (crafted(ptr=0xFFF0, size=0x1000), "points past the end"),
        (crafted(text=b"\0"), "no printable kernel version"),
        (crafted(text=b"   \0"), "no printable kernel version"),
        (crafted(text=b"\x01\x02\x03 x\0"), "no printable kernel version"),
        (crafted(text=b"../../etc x\0"), "no printable kernel version"),
        (crafted(text=b"6.1/evil x\0"), "no printable kernel version"),
    ],
    ids=[
        "zeros", "empty", "short", "gzip", "elf", "bad-magic",
        "null-ptr", "ptr-out-of-range", "empty-string", "blank", "binary", "dots", "slash",
    ],
)
def test_bad_kernels(tmp_path: Path, data: bytes, words: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(KernelError) as exc:
        kernel_version(path)
    message = exc.value.message
    assert words in message
    assert str(path) in message
    assert "\n" not in message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope"
    with pytest.raises(KernelError, match="cannot read kernel") as exc:
        kernel_version(path)
    assert str(path) in exc.value.message


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(KernelError, match="cannot read kernel"):
        kernel_version(tmp_path)


def test_initrd_versions_fine() -> None:
    assert check_initrd_versions("6.1.0-56-amd64", ["6.1.0-56-amd64"]) is None
    assert check_initrd_versions("6.1.0-56-amd64", ["5.10.0-1-amd64", "6.1.0-56-amd64"]) is None
    # An initrd without lib/modules (a monolithic kernel) has nothing to disagree with.
    assert check_initrd_versions("6.1.0-56-amd64", []) is None


def test_initrd_versions_mismatch() -> None:
    warning = check_initrd_versions("6.1.0-56-amd64", ["5.10.0-1-amd64", "4.19.0-2-amd64"])
    assert warning is not None
    assert "\n" not in warning
    assert "6.1.0-56-amd64" in warning
    assert "4.19.0-2-amd64, 5.10.0-1-amd64" in warning

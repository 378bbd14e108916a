"""A 32-bit userland: found from ELF headers (vsa/userland.py), and the
kernel's CONFIG_IA32_EMULATION read beside it or from its embedded config
(kmod/kernel.py)."""

from __future__ import annotations

import gzip
import lzma
import struct
from pathlib import Path

from vsaimage.kmod import kernel
from vsaimage.model import GuestFile, Snapshot
from vsaimage.vsa import userland


def elf_header(bits: int, machine: int) -> bytes:
    ident = b"\x7fELF" + bytes([1 if bits == 32 else 2, 1, 1]) + bytes(9)
    return ident + struct.pack("<HH", 2, machine) + bytes(40)


I386, X86_64 = elf_header(32, 3), elf_header(64, 62)


def snap(**files: tuple[bytes | None, str | None]) -> Snapshot:
    paths = {"init": "/sbin/init", "lib": "/lib/libc.so.6", "lib64": "/lib64/libc.so.6"}
    return Snapshot({paths[k]: GuestFile(paths[k], data, real=real) for k, (data, real) in files.items()})


def test_an_i386_init_and_libc() -> None:
    found = userland.detect(snap(init=(I386, "/bin/busybox"), lib=(I386, "/lib/libc-2.5.so")))
    assert found.is_32bit and found.bits == 32
    assert found.as_dict() == {"bits": 32, "machine": "i386", "evidence": [
        "/sbin/init -> /bin/busybox: ELF 32-bit i386", "/lib/libc.so.6 -> /lib/libc-2.5.so: ELF 32-bit i386"]}


def test_the_example_is_64_bit() -> None:
    banner = b"GNU C Library version 2.5\n"
    found = userland.detect(snap(init=(X86_64, None), lib64=(banner, "/lib64/libc-2.5.so")))
    assert found.bits == 64 and not found.is_32bit
    assert found.why == "/sbin/init: ELF 64-bit x86_64"


def test_init_decides_and_scripts_say_nothing() -> None:
    assert userland.detect(snap(init=(b"#!/bin/sh\n", None), lib=(I386, None))).bits == 32
    unknown = userland.detect(snap(init=(None, None)))
    assert unknown.bits is None and not unknown.is_32bit and "unknown" in unknown.why
    assert userland.elf("x", b"\x7fELF") is None


CONFIG = ("CONFIG_X86_64=y\n# CONFIG_X86_X32_ABI is not set\nCONFIG_IA32_EMULATION=y\n"
          "CONFIG_LOCALVERSION=\"-vsa\"\n")


def test_config_values() -> None:
    assert kernel.config_value(CONFIG, "CONFIG_IA32_EMULATION") == "y"
    assert kernel.config_value(CONFIG, "CONFIG_X86_X32_ABI") == "n"
    assert kernel.config_value(CONFIG, "CONFIG_LOCALVERSION") == "-vsa"
    assert kernel.config_value(CONFIG, "CONFIG_NOPE") is None


def fake_kernel(config: str, compress: str) -> bytes:
    """A bzImage stand-in: a setup header, then a compressed payload holding
    the IKCONFIG markers around a gzip of the config."""
    vmlinux = b"\x7fELF...code..." + b"IKCFG_ST" + gzip.compress(config.encode()) + b"IKCFG_ED" + b"..."
    payload = {"xz": lambda d: lzma.compress(d, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
               "gzip": gzip.compress}[compress](vmlinux)
    # a stray gzip magic before the real payload, as the setup code may hold
    return b"MZ" + bytes(0x200) + b"HdrS" + b"\x1f\x8b\x08garbage" + bytes(64) + payload


def test_the_embedded_config_in_xz_and_gzip_payloads() -> None:
    for compress in ("xz", "gzip"):
        assert kernel.embedded_config(fake_kernel(CONFIG, compress)) == CONFIG
    assert kernel.embedded_config(b"MZ" + bytes(4096)) is None


def test_runs_32bit_reads_the_config_beside_the_kernel_first(tmp_path: Path) -> None:
    vmlinuz = tmp_path / "vmlinuz-6.1.0-9-amd64"
    vmlinuz.write_bytes(fake_kernel(CONFIG.replace("=y\nCONFIG_LOC", "=n\nCONFIG_LOC"), "xz"))
    ok, why = kernel.runs_32bit(vmlinuz, "6.1.0-9-amd64")
    assert ok is False and why == f"CONFIG_IA32_EMULATION=n in the config embedded in {vmlinuz}"
    (tmp_path / "config-6.1.0-9-amd64").write_text(CONFIG)
    assert kernel.runs_32bit(vmlinuz, "6.1.0-9-amd64") == (
        True, f"CONFIG_IA32_EMULATION=y in {tmp_path}/config-6.1.0-9-amd64")


def test_runs_32bit_unknown_without_a_config(tmp_path: Path) -> None:
    vmlinuz = tmp_path / "vmlinuz"
    vmlinuz.write_bytes(b"MZ" + bytes(1024))
    ok, why = kernel.runs_32bit(vmlinuz, "1.2.3")
    assert ok is None and "no config-1.2.3 beside" in why


def test_this_machines_debian_kernel_runs_32bit_programs() -> None:
    """Debian's amd64 kernel has CONFIG_IA32_EMULATION=y, in the config
    file installed beside it."""
    kernels = sorted(Path("/boot").glob("vmlinuz-*"))
    assert kernels, "linux-image-amd64 is not installed (make setup installs it)"
    version = kernels[-1].name.removeprefix("vmlinuz-")
    assert kernel.runs_32bit(kernels[-1], version) == (
        True, f"CONFIG_IA32_EMULATION=y in /boot/config-{version}")

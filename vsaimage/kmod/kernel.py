"""The --kernel file: its version, read from the bzImage setup header.

The version names `/lib/modules/<version>` in the guest and is compared with
the versions the initrd carries modules for. It is read from the header rather
than from the file name, which the user may have changed.
"""

from __future__ import annotations

import bz2
import lzma
import re
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

from vsaimage.errors import KernelError

# Offsets of the x86 boot protocol (Documentation/arch/x86/boot.rst).
_MAGIC_OFFSET = 0x202
_MAGIC = b"HdrS"
_VERSION_PTR_OFFSET = 0x20E
# kernel_version points into the setup code, which starts 0x200 into the file.
_VERSION_PTR_BASE = 0x200
# The pointer is 16 bits, so the string starts before 0x200 + 0xFFFF; reading
# this much covers it and a generous string without loading the whole kernel.
_HEADER_READ = 0x200 + 0x10000 + 0x200

# The first word is used as a path component under /lib/modules, so only the
# characters kernel versions are made of: no '/', no spaces, no control bytes
# (and starting with a digit, so never "." or "..").
_VERSION_RE = re.compile(rb"[0-9][0-9A-Za-z._+~-]*")


def kernel_version(path: Path) -> str:
    """Return the version of the bzImage at `path` (e.g. "6.1.0-56-amd64")."""
    try:
        with path.open("rb") as f:
            head = f.read(_HEADER_READ)
    except OSError as e:
        raise KernelError(f"cannot read kernel {path}: {e.strerror or e}") from e
    if head[_MAGIC_OFFSET : _MAGIC_OFFSET + 4] != _MAGIC:
        raise KernelError(
            f"{path} is not a bzImage (no 'HdrS' header at 0x202)",
            hint="give the compressed kernel (vmlinuz), not vmlinux or a gzip file;"
            " or set --kernel-version",
        )
    ptr = int.from_bytes(head[_VERSION_PTR_OFFSET : _VERSION_PTR_OFFSET + 2], "little")
    if ptr == 0:
        raise KernelError(
            f"{path}: the bzImage header has no kernel version pointer",
            hint="set --kernel-version",
        )
    start = ptr + _VERSION_PTR_BASE
    if start >= len(head):
        raise KernelError(
            f"{path}: the kernel version pointer (0x{ptr:x}) points past the end of the file",
            hint="set --kernel-version",
        )
    end = head.find(b"\0", start)
    text = head[start:] if end < 0 else head[start:end]
    words = text.split(None, 1)
    match = _VERSION_RE.fullmatch(words[0]) if words else None
    if match is None:
        raise KernelError(
            f"{path}: no printable kernel version at offset 0x{start:x}",
            hint="set --kernel-version",
        )
    return match.group(0).decode("ascii")


def modules_tree(version: str) -> Path:
    """The modules tree of kernel `version` on this machine (--modules-dir's
    default)."""
    return Path("/lib/modules") / version


def check_initrd_versions(kernel_version: str, initrd_versions: Sequence[str]) -> str | None:
    """A one-line warning when the initrd only has modules for other kernels.

    `initrd_versions` are the directory names under the initrd's lib/modules.
    An initrd without lib/modules at all (everything built in) is fine.
    """
    others = sorted(set(initrd_versions))
    if not others or kernel_version in others:
        return None
    return (
        f"the initrd holds modules for {', '.join(others)}, not for kernel {kernel_version}:"
        " the guest may not find its disk drivers at boot"
    )


# --- whether the kernel runs 32-bit programs ------------------------------------

IA32 = "CONFIG_IA32_EMULATION"
# scripts/extract-ikconfig: the embedded config (CONFIG_IKCONFIG) is a gzip
# stream between these markers, inside the kernel's compressed payload.
_IKCFG_START, _IKCFG_END = b"IKCFG_ST", b"IKCFG_ED"
# The payload compressions Python reads itself, by the magic that starts them.
_PAYLOADS: tuple[tuple[bytes, Callable[[bytes], bytes]], ...] = (
    (b"\x1f\x8b\x08", lambda d: zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(d)),
    (b"\xfd7zXZ\x00", lambda d: lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(d)),
    (b"\x5d\x00\x00", lambda d: lzma.LZMADecompressor(lzma.FORMAT_ALONE).decompress(d)),
    (b"BZh", lambda d: bz2.BZ2Decompressor().decompress(d)),
)


def config_value(config: str, name: str) -> str | None:
    """The value of `name` in a kernel .config: "y", "m", a string; "n" for
    `# NAME is not set`; None when the config does not mention it."""
    for line in config.splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].strip().strip('"')
        if line.strip() == f"# {name} is not set":
            return "n"
    return None


def _ikconfig_in(data: bytes) -> str | None:
    start = data.find(_IKCFG_START)
    if start < 0:
        return None
    end = data.find(_IKCFG_END, start)
    blob = data[start + len(_IKCFG_START): end if end > 0 else None]
    try:
        return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(blob).decode("utf-8", "replace")
    except zlib.error:
        return None


def embedded_config(image: bytes) -> str | None:
    """The config a kernel built with CONFIG_IKCONFIG carries, found as
    scripts/extract-ikconfig finds it: in the file itself (a vmlinux), else
    in the payload a compression magic starts (gzip, xz, lzma or bzip2);
    None when there is none this can read (a zstd or lz4 payload)."""
    found = _ikconfig_in(image)
    if found is not None:
        return found
    for magic, decompress in _PAYLOADS:
        at = image.find(magic)
        while at >= 0:
            try:
                found = _ikconfig_in(decompress(image[at:]))
            except (OSError, EOFError, ValueError, lzma.LZMAError, zlib.error):
                found = None
            if found is not None:
                return found
            at = image.find(magic, at + 1)
    return None


def runs_32bit(kernel: Path, version: str) -> tuple[bool | None, str]:
    """Whether the kernel runs 32-bit x86 programs (CONFIG_IA32_EMULATION=y),
    from /boot/config-VERSION beside it, else from its embedded config;
    None when neither can be read. The reason names where it was read."""
    beside = kernel.parent / f"config-{version}"
    try:
        config, where = beside.read_text(encoding="utf-8", errors="replace"), str(beside)
    except OSError:
        try:
            image = kernel.read_bytes()
        except OSError as e:
            return None, f"cannot read {kernel}: {e.strerror or e}"
        embedded = embedded_config(image)
        if embedded is None:
            return None, (f"no {beside.name} beside {kernel}, and no embedded config (CONFIG_IKCONFIG) "
                          "in it that can be read")
        config, where = embedded, f"the config embedded in {kernel}"
    value = config_value(config, IA32)
    return value == "y", f"{IA32}={value or 'unset'} in {where}"

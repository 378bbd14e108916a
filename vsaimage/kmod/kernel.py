"""The --kernel file: its version, read from the bzImage setup header.

The version names `/lib/modules/<version>` in the guest and is compared with
the versions the initrd carries modules for. It is read from the header rather
than from the file name, which the user may have changed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
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

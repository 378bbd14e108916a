"""The guest's glibc version, read from its files, and whether its kernel
command line needs `vsyscall=emulate`.

glibc before 2.14 (CentOS 5 and 6, the VSA's) calls gettimeofday, time and
getcpu through the legacy vsyscall page at 0xffffffffff600000. Debian's
kernels are built with CONFIG_LEGACY_VSYSCALL_NONE: the page is not mapped,
the first such call segfaults, and init dies with it. `vsyscall=emulate` on
the command line maps it again. Pure: works on a Snapshot.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from vsaimage.model import Snapshot

LIBC_DIRS = ("/lib64", "/lib")
# libc.so.6 is a symlink to libc-X.Y.so up to glibc 2.33 and the library
# itself from 2.34 on; reading it (the link followed) covers both.
READS = tuple(f"{d}/libc.so.6" for d in LIBC_DIRS)
FIRST_WITHOUT_VSYSCALL = (2, 14)

_NAME = re.compile(r"libc-(\d+)\.(\d+)(?:\.\d+)*\.so")
_BANNER = re.compile(rb"GNU C Library[^\n\0]{0,80}? version (\d+)\.(\d+)")
_SYMBOL_VERSION = re.compile(rb"GLIBC_(\d+)\.(\d+)")


@dataclass(frozen=True)
class Glibc:
    version: tuple[int, int] | None
    source: str  # where the version was read, or why it is unknown
    # A 32-bit userland (vsa/userland.py) calls the 32-bit vDSO, whatever its
    # glibc: the 64-bit vsyscall page is not its business.
    userland_32bit: bool = False

    @property
    def vsyscall_emulate(self) -> bool:
        if self.userland_32bit:
            return False
        return self.version is None or self.version < FIRST_WITHOUT_VSYSCALL

    @property
    def why(self) -> str:
        if self.userland_32bit:
            return ("the userland is 32-bit: its programs call the 32-bit vDSO, never the 64-bit vsyscall "
                    "page, so no vsyscall=emulate")
        if self.version is None:
            return "glibc version unknown: vsyscall=emulate, in case it calls the vsyscall page"
        v = f"{self.version[0]}.{self.version[1]}"
        if self.vsyscall_emulate:
            return (f"glibc {v} is older than 2.14 and calls the vsyscall page, which a kernel "
                    "built with CONFIG_LEGACY_VSYSCALL_NONE (Debian's) maps only with vsyscall=emulate")
        return f"glibc {v} does not call the vsyscall page"

    def as_dict(self) -> dict[str, object]:
        return {
            "version": None if self.version is None else f"{self.version[0]}.{self.version[1]}",
            "source": self.source,
            "vsyscall_emulate": self.vsyscall_emulate,
            "why": self.why,
        }


def version_from_name(name: str) -> tuple[int, int] | None:
    """(2, 5) for libc-2.5.so."""
    m = _NAME.fullmatch(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def version_from_library(data: bytes) -> tuple[int, int] | None:
    """The version libc.so.6 states in its banner ("GNU C Library ... release
    version 2.36"), else the newest GLIBC_X.Y symbol version it defines."""
    m = _BANNER.search(data)
    if m:
        return int(m.group(1)), int(m.group(2))
    versions = [(int(a), int(b)) for a, b in _SYMBOL_VERSION.findall(data)]
    return max(versions) if versions else None


def detect(snap: Snapshot, *, userland_32bit: bool = False) -> Glibc:
    """The glibc of the guest, from libc.so.6: the name of the library it
    leads to (libc-X.Y.so up to 2.33), else the version in its contents."""
    for path in READS:
        f = snap.get(path)
        if f.real is not None:
            version = version_from_name(posixpath.basename(f.real))
            if version:
                return Glibc(version, f"{path} -> {f.real}", userland_32bit)
        if f.data is not None:
            version = version_from_library(f.data)
            if version:
                return Glibc(version, f"version string in {path}", userland_32bit)
    return Glibc(None, f"no libc.so.6 with a version in {' or '.join(LIBC_DIRS)}", userland_32bit)

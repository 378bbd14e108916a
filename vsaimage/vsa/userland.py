"""The guest userland's word size, from the ELF headers of its /sbin/init
(a symlink followed inside the guest, as the kernel follows it) and of its
libc.so.6. SAN/iQ 8 and 9.0 may run an i386 userland on their x86-64
kernel: such programs call the 32-bit vDSO, never the 64-bit vsyscall page
(so no `vsyscall=emulate` for them), and the kernel the domU boots must run
32-bit programs (CONFIG_IA32_EMULATION, checked by kmod/kernel.py). Pure:
works on a Snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vsaimage.model import Snapshot
from vsaimage.vsa import glibc

INIT = "/sbin/init"
READS = (INIT,)
# e_machine values of the ELF header, for the report
_MACHINES = {3: "i386", 62: "x86_64", 40: "arm", 183: "aarch64", 8: "mips", 20: "ppc", 21: "ppc64"}


@dataclass(frozen=True)
class Elf:
    path: str
    bits: int  # 32 or 64 (EI_CLASS)
    machine: str  # e_machine, named

    def __str__(self) -> str:
        return f"{self.path}: ELF {self.bits}-bit {self.machine}"


def elf(path: str, data: bytes | None) -> Elf | None:
    """The class and machine of an ELF file; None for anything else (a
    script, a text file standing for a library)."""
    if data is None or len(data) < 20 or data[:4] != b"\x7fELF" or data[4] not in (1, 2):
        return None
    order: Literal["little", "big"] = "little" if data[5] == 1 else "big"
    machine = int.from_bytes(data[18:20], order)
    return Elf(path, 32 if data[4] == 1 else 64, _MACHINES.get(machine, f"machine {machine}"))


@dataclass(frozen=True)
class Userland:
    found: tuple[Elf, ...]  # /sbin/init first, then libc, those that are ELF files

    @property
    def bits(self) -> int | None:
        """The word size of init (else of libc); None when neither is an ELF file."""
        return self.found[0].bits if self.found else None

    @property
    def is_32bit(self) -> bool:
        return self.bits == 32

    @property
    def why(self) -> str:
        if not self.found:
            return f"word size unknown: neither {INIT} nor libc.so.6 is an ELF file"
        return "; ".join(map(str, self.found))

    def as_dict(self) -> dict[str, object]:
        return {"bits": self.bits, "machine": self.found[0].machine if self.found else None,
                "evidence": [str(e) for e in self.found]}


def detect(snap: Snapshot) -> Userland:
    found = []
    for path in (INIT, *glibc.READS):
        f = snap.get(path)
        e = elf(f"{path} -> {f.real}" if f.real else path, f.data)
        if e is not None:
            found.append(e)
    return Userland(tuple(found))

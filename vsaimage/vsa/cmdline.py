"""The VSA's own kernel arguments, kept under Xen.

LeftHand OS boots with arguments its programs and kernel depend on
(`ramdisk_size=32768 elevator=deadline ipv6.disable=1 scsi_mod.scan=sync`
on 12.x). The default entry of its boot menu gives them; they go on the
Xen guest's command line (the xl config's `extra`, and the guest's own
GRUB 2 menu) minus those that name hardware a domU does not have or that
the conversion replaces: `root=` (the xl config names the root by its Xen
device), `console=tty*`/`ttyS*` (hvc0 is the console), `crashkernel=` (a
kdump reservation for a kernel a PV guest cannot kexec), `initrd=` and
`BOOT_IMAGE=` (the boot loader's, not the kernel's), and any vsaimage sets
itself. Pure: the filter works on an entry's argument words, whichever boot
loader's configuration they come from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vsaimage.vsa import grubconf, syslinux

# GRUB legacy's menus, then the SYSLINUX family's configs (SAN/iQ 8 boots
# from a `boot:` prompt), as the guest sees them with its /boot mounted.
READS = (*grubconf.GUEST_PATHS,
         *dict.fromkeys("/boot/" + c.removeprefix("boot/") for c in syslinux.CONFIGS))

# (the argument's key, or its key=prefix, why it is dropped)
_DROP: tuple[tuple[str, str], ...] = (
    ("root=", "the xl config's root= names the root by its Xen device"),
    ("console=tty", "no VGA or serial console under Xen: console=hvc0 instead"),
    ("crashkernel=", "reserves memory for kdump, which a Xen PV guest cannot load"),
    ("initrd=", "the boot loader's: the xl config gives the initrd"),
    ("BOOT_IMAGE=", "the boot loader's record of the kernel it loaded"),
)


@dataclass(frozen=True)
class Dropped:
    arg: str
    why: str


@dataclass(frozen=True)
class KernelArgs:
    """The VSA's arguments and what becomes of each under Xen."""

    source: str  # the menu and entry they come from, or why there are none
    kept: tuple[str, ...] = ()
    dropped: tuple[Dropped, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "kept": list(self.kept),
                "dropped": [{"arg": d.arg, "why": d.why} for d in self.dropped]}


def _key(arg: str) -> str:
    return arg.split("=", 1)[0]


def filter_args(words: Sequence[str], ours: Sequence[str]) -> tuple[tuple[str, ...], tuple[Dropped, ...]]:
    """(kept, dropped) of a boot entry's argument words, given the
    arguments vsaimage sets itself (`ours`)."""
    kept: list[str] = []
    dropped: list[Dropped] = []
    mine = {_key(a): a for a in ours}
    for arg in words:
        why = next((w for prefix, w in _DROP if arg.startswith(prefix)), None)
        if why is None and _key(arg) in mine:
            why = f"vsaimage sets {mine[_key(arg)]}"
        if why is None:
            kept.append(arg)
        else:
            dropped.append(Dropped(arg, why))
    return tuple(kept), tuple(dropped)


def from_menus(configs: Mapping[str, str], ours: Sequence[str]) -> KernelArgs:
    """The arguments of the default entry of the first boot menu of
    `configs` (by path: GRUB legacy's or the SYSLINUX family's) that has
    one."""
    if not configs:
        return KernelArgs("no GRUB or SYSLINUX menu under /boot: no arguments of the VSA's to keep")
    reasons = []
    for path, text in configs.items():
        cfg = syslinux.read_config(path, text)
        entry = cfg.default_entry()
        said = cfg.default_line or "no default line: entry 0"
        if entry is None or not entry.image:
            reasons.append(f"{path}: {said}: no entry with a kernel line")
            continue
        kept, dropped = filter_args(entry.kernel, ours)
        return KernelArgs(f"{path}, {said}: '{entry.title}'", kept, dropped)
    return KernelArgs("; ".join(reasons))


def split_args(text: str) -> tuple[str, ...]:
    """Words of a kernel command line as the kernel splits them: at blanks
    outside double quotes, the quotes kept (`opt="a b"` is one word)."""
    words: list[str] = []
    current: list[str] = []
    quoted = False
    for c in text:
        if c == '"':
            quoted = not quoted
        if c.isspace() and not quoted:
            if current:
                words.append("".join(current))
                current = []
            continue
        current.append(c)
    if current:
        words.append("".join(current))
    return tuple(words)

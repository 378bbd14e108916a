"""Edit `pci`: a fake PCI device list that says "Xen platform device".

The VSA decides what hardware it runs on from /proc/bus/pci/devices, which is
empty on a PV domU; its tables already know the Xen platform device
(5853:0001). We write a one-line list at /hack/bus/pci/devices and, for the
`binary` variant, point the four programs that read the real list at it by
rewriting the path inside them (same length, so offsets in the binaries hold).
The `bind` variant (mounting /hack/bus/pci over /proc/bus/pci from the initrd)
lives in pcihack.py (put into the initrd by initrd/repack.py); where the
guest's rc.sysinit mounts /proc again on top of it (CentOS 5's does), the
bind is done again right after, in rc.sysinit (written here).
"""

from __future__ import annotations

from vsaimage.edits import Change, EditContext, PciHack, Snapshot, StepPlan, WriteFile, decide, text_write
from vsaimage.edits.pcihack import RC_SYSINIT, rebound, with_rebind
from vsaimage.edits.textfile import exact_write
from vsaimage.errors import EditError

FAKE_PATH = "/hack/bus/pci/devices"
REAL_PATH = "/proc/bus/pci/devices"
REAL_DIR = "/proc/bus/pci"  # a program naming it alone builds its paths there: no rewrite reaches them
# Bus/devfn 0000, vendor:device 5853:0001, then IRQ, 7 BARs, ROM, 7 sizes: all 0.
FAKE_DEVICES = "\t".join(["0000", "58530001"] + ["0"] * 15) + "\n"
BINARIES = (
    "/etc/lefthand/brand/common/fst",
    "/etc/lefthand/system/lib/hal/libhal.so",
    "/etc/lefthand/system/liblhnsys.so",
    "/sbin/hwid",
)


def replace_same_length(data: bytes, old: bytes, new: bytes) -> tuple[bytes, int]:
    """`data` with every `old` replaced by `new`, and the count. Refuses a
    replacement of another length: inside an executable that would shift
    every offset after it."""
    if len(old) != len(new):
        raise EditError(
            f"binary replacement of {old!r} by {new!r} would change the length "
            f"({len(old)} -> {len(new)} bytes)"
        )
    count = data.count(old)
    return (data.replace(old, new) if count else data), count


def patch_binary(data: bytes) -> tuple[bytes, int]:
    """A program or library reading the fake list instead of the real one."""
    return replace_same_length(data, REAL_PATH.encode(), FAKE_PATH.encode())


def _binary_wanted(ctx: EditContext) -> bool:
    return ctx.pci_hack in (PciHack.BOTH, PciHack.BINARY)


def _bind_wanted(ctx: EditContext) -> bool:
    return ctx.pci_hack in (PciHack.BOTH, PciHack.BIND)


class Pci:
    name = "pci"
    title = "Fake PCI device list for the Xen platform device"

    def reads(self, ctx: EditContext) -> tuple[str, ...]:
        return ((FAKE_PATH, *BINARIES) if _binary_wanted(ctx) else (FAKE_PATH,)) + (
            (RC_SYSINIT,) if _bind_wanted(ctx) else ())

    def lists(self, ctx: EditContext) -> tuple[str, ...]:
        return ()

    def plan(self, snap: Snapshot, ctx: EditContext) -> StepPlan:
        changes: list[Change] = exact_write(snap, FAKE_PATH, FAKE_DEVICES.encode(), 0o644)
        details: dict[str, object] = {"devices": FAKE_PATH, "pci_hack": ctx.pci_hack.value}
        if _binary_wanted(ctx):
            counts: dict[str, int] = {}
            for path in BINARIES:
                old = snap.get(path)
                if old.data is None:
                    continue
                new, counts[path] = patch_binary(old.data)
                if counts[path]:
                    mode = old.mode if old.mode is not None else 0o755
                    changes.append(WriteFile(path, new, mode))
            details["replacements"] = counts
            without = [p for p, n in counts.items() if not n and not _patched(snap, p)]
            if without:
                details["without_the_path"] = without
            if ctx.pci_hack is PciHack.BINARY:
                _require_patchable(snap, counts, without)
                notes = [f"{p} names no {REAL_DIR}: not patched; if it reads the PCI list some other way, "
                         "it reads the real, empty one" for p in without]
                if notes:
                    details["notes"] = notes
        sysinit = snap.text(RC_SYSINIT)
        if _bind_wanted(ctx) and sysinit is not None:
            rebind_text, added = with_rebind(sysinit)
            changes += text_write(snap, RC_SYSINIT, rebind_text, 0o755)
            if added:
                details["rebind_after_proc_mount"] = [f"{RC_SYSINIT}:{n}" for n in added]
        return decide(self.name, changes, details)

    def check(self, snap: Snapshot, ctx: EditContext) -> bool:
        if snap.get(FAKE_PATH).data != FAKE_DEVICES.encode():
            return False
        if _bind_wanted(ctx) and not rebound(snap.text(RC_SYSINIT) or ""):
            return False
        if not _binary_wanted(ctx):
            return True
        if any(REAL_PATH.encode() in (snap.get(p).data or b"") for p in BINARIES):
            return False
        if ctx.pci_hack is not PciHack.BINARY:
            return True
        # binary alone is in place where a program reads the fake list and
        # none names the real one
        present = [p for p in BINARIES if snap.get(p).data is not None]
        return any(_patched(snap, p) for p in present) and not any(
            REAL_DIR.encode() in (snap.get(p).data or b"") for p in present)


def _patched(snap: Snapshot, path: str) -> bool:
    return FAKE_PATH.encode() in (snap.get(path).data or b"")


def _require_patchable(snap: Snapshot, counts: dict[str, int], without: list[str]) -> None:
    """--pci-hack binary fakes the list only for the programs it patches:
    one that names /proc/bus/pci but not the list's path builds its paths
    there and would still read the real, empty list; with nothing patched,
    no program would read the fake one. A program naming no PCI path at all
    may not read the list: a note (Pci.plan)."""
    hint = "--pci-hack bind (or both) shows the fake list at /proc/bus/pci by a bind mount from the initrd"
    composed = [p for p in without if REAL_DIR.encode() in (snap.get(p).data or b"")]
    if composed:
        raise EditError(f"--pci-hack binary: {composed[0]} names {REAL_DIR} but not {REAL_PATH}: it reads "
                        "the PCI list by paths this edit cannot rewrite", hint=hint)
    if not counts:
        raise EditError(f"--pci-hack binary: none of {', '.join(BINARIES)} is in the guest; "
                        "nothing would read the fake list", hint=hint)
    if len(without) == len(counts):
        raise EditError(f"--pci-hack binary: none of {', '.join(counts)} holds {REAL_PATH}; "
                        "nothing would read the fake list", hint=hint)

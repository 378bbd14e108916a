"""Edit 2: the fake PCI list and the same-length path rewrite in binaries."""

from __future__ import annotations

import pytest

from fixtures.build_image import ROOT_TREE
from test_edit_shell import snapshot
from vsaimage.edits import EditContext, GuestFile, PciHack, Snapshot, WriteFile
from vsaimage.edits.pci import BINARIES, FAKE_DEVICES, FAKE_PATH, Pci, patch_binary, replace_same_length
from vsaimage.edits.pcihack import RC_SYSINIT, REBIND, proc_remounts, with_rebind
from vsaimage.errors import EditError

ELF = (
    b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"/proc/bus/pci/devices\x00%s\x00/proc/bus/pci/devices\x00\xff"
)


def test_fake_devices_line() -> None:
    assert FAKE_DEVICES == "0000\t58530001" + "\t0" * 15 + "\n"
    assert len(FAKE_DEVICES.rstrip("\n").split("\t")) == 17


def test_binary_patch_keeps_length_and_counts() -> None:
    new, count = patch_binary(ELF)
    assert count == 2 and len(new) == len(ELF)
    assert new == ELF.replace(b"/proc/bus/pci/devices", b"/hack/bus/pci/devices")
    assert patch_binary(new) == (new, 0)


def test_length_guard() -> None:
    with pytest.raises(EditError, match="change the length"):
        replace_same_length(b"abc", b"b", b"xy")
    assert replace_same_length(b"abcb", b"b", b"x") == (b"axcx", 2)


def test_plan_both_patches_existing_binaries_keeping_mode() -> None:
    files: dict[str, str | bytes] = {BINARIES[0]: ELF, BINARIES[3]: b"no path here"}
    snap = snapshot(files, modes={BINARIES[0]: 0o750})
    plan = Pci().plan(snap, EditContext())
    writes = {c.path: c for c in plan.changes if isinstance(c, WriteFile)}
    assert writes[FAKE_PATH].data == FAKE_DEVICES.encode() and writes[FAKE_PATH].mode == 0o644
    assert writes[BINARIES[0]].mode == 0o750 and len(writes[BINARIES[0]].data) == len(ELF)
    assert set(writes) == {FAKE_PATH, BINARIES[0]}
    assert plan.details["replacements"] == {BINARIES[0]: 2, BINARIES[3]: 0}
    assert not Pci().check(snap, EditContext())

    done = snapshot({**files, FAKE_PATH: FAKE_DEVICES, BINARIES[0]: writes[BINARIES[0]].data})
    again = Pci().plan(done, EditContext())
    assert again.status == "already applied" and again.changes == ()
    assert Pci().check(done, EditContext())


def test_plan_bind_leaves_binaries_alone() -> None:
    ctx = EditContext(pci_hack=PciHack.BIND)
    assert Pci().reads(ctx) == (FAKE_PATH, RC_SYSINIT)
    plan = Pci().plan(snapshot({BINARIES[0]: ELF}), ctx)
    assert [c.path for c in plan.changes if isinstance(c, WriteFile)] == [FAKE_PATH]
    assert Pci().check(snapshot({FAKE_PATH: FAKE_DEVICES, BINARIES[0]: ELF}), ctx)
    assert not Pci().check(snapshot({FAKE_PATH: FAKE_DEVICES, BINARIES[0]: ELF}), EditContext())


def test_fake_file_with_wrong_mode_is_rewritten() -> None:
    snap = snapshot({FAKE_PATH: FAKE_DEVICES}, modes={FAKE_PATH: 0o600})
    plan = Pci().plan(snap, EditContext(pci_hack=PciHack.BIND))
    assert plan.status == "apply"


# --- the stop rule of --pci-hack binary --------------------------------------
# What it compares: each of the four programs in the guest holds the list's
# path (patched), holds neither it nor /proc/bus/pci (it names no PCI path:
# a note), or names /proc/bus/pci without the list's path (it builds its
# paths there: refused). Refused too: none of them there, or none patched.

PATCHED = patch_binary(ELF)[0]
NO_PATH = b"\x7fELF no pci path here"
BINARY_ONLY_CONVERTS: dict[str, tuple[dict[str, bytes], list[str]]] = {  # -> (files, those noted)
    "all-four": ({p: ELF for p in BINARIES}, []),
    "one-absent": ({p: ELF for p in BINARIES[:3]}, []),
    "three-absent": ({BINARIES[3]: ELF}, []),
    "one-names-no-pci-path": ({BINARIES[0]: ELF, BINARIES[3]: NO_PATH}, [BINARIES[3]]),
    "a-library-names-no-pci-path": ({**{p: ELF for p in BINARIES}, BINARIES[1]: NO_PATH}, [BINARIES[1]]),
    "already-patched": ({p: PATCHED for p in BINARIES}, []),
    "patched-and-not": ({BINARIES[0]: PATCHED, BINARIES[2]: ELF}, []),
    "patched-and-one-without": ({BINARIES[0]: PATCHED, BINARIES[2]: NO_PATH}, [BINARIES[2]]),
}


@pytest.mark.parametrize("shape", sorted(BINARY_ONLY_CONVERTS))
def test_binary_only_converts(shape: str) -> None:
    files, noted = BINARY_ONLY_CONVERTS[shape]
    ctx = EditContext(pci_hack=PciHack.BINARY)
    guest = {p: GuestFile(p, d, 0o755) for p, d in files.items()}
    plan = Pci().plan(Snapshot(guest), ctx)
    notes = plan.details.get("notes", [])
    assert isinstance(notes, list) and [n.split(" ", 1)[0] for n in notes] == noted
    written = {c.path: GuestFile(c.path, c.data, c.mode) for c in plan.changes if isinstance(c, WriteFile)}
    done = Snapshot({**guest, **written})
    assert Pci().check(done, ctx) and Pci().plan(done, ctx).status == "already applied"


BINARY_ONLY_REFUSED = {
    "no-binaries": ({}, "none of .* is in the guest"),
    "names-the-directory-only": ({BINARIES[0]: ELF, BINARIES[3]: b"\x7fELF /proc/bus/pci\0%02x/%02x.%x"},
                                 f"{BINARIES[3]} names /proc/bus/pci but not "),
    "builds-the-path-with-a-format": ({BINARIES[0]: ELF, BINARIES[2]: b"\x7fELF /proc/bus/pci/%s\0devices"},
                                      f"{BINARIES[2]} names /proc/bus/pci but not "),
    "reads-device-config-space": ({BINARIES[1]: b"\x7fELF /proc/bus/pci/00/00.0"}, f"{BINARIES[1]} names "),
    "none-holds-the-path": ({BINARIES[0]: NO_PATH, BINARIES[3]: NO_PATH},
                            "none of .* holds /proc/bus/pci/devices"),
    "the-only-one-holds-no-path": ({BINARIES[3]: NO_PATH}, "none of .* holds /proc/bus/pci/devices"),
    "joins-the-directory-and-the-name": ({**{p: ELF for p in BINARIES[:3]},
                                          BINARIES[3]: b"\x7fELF /proc/bus/pci\0/devices\0"},
                                         f"{BINARIES[3]} names /proc/bus/pci but not "),
    "one-patched-one-naming-the-directory": ({BINARIES[0]: PATCHED, BINARIES[1]: b"\x7fELF /proc/bus/pci\0"},
                                             f"{BINARIES[1]} names /proc/bus/pci but not "),
}


@pytest.mark.parametrize("shape", sorted(BINARY_ONLY_REFUSED))
def test_binary_only_with_a_program_it_cannot_patch_is_an_error(shape: str) -> None:
    files, message = BINARY_ONLY_REFUSED[shape]
    guest = {p: GuestFile(p, d, 0o755) for p, d in files.items()}
    ctx = EditContext(pci_hack=PciHack.BINARY)
    with pytest.raises(EditError, match="^--pci-hack binary: " + message) as err:
        Pci().plan(Snapshot(guest), ctx)
    assert err.value.exit_code == 2 and "--pci-hack bind" in (err.value.hint or "")
    patched = {p: GuestFile(p, patch_binary(d)[0], 0o755) for p, d in files.items()}
    assert not Pci().check(Snapshot({**patched, FAKE_PATH: GuestFile(FAKE_PATH, FAKE_DEVICES.encode())}), ctx)
    # the bind mount fakes the list for every program: only reported there
    both = Pci().plan(Snapshot(guest), EditContext())
    assert both.details.get("without_the_path", []) == [
        p for p, d in files.items() if b"/proc/bus/pci/devices" not in d and FAKE_PATH.encode() not in d]


def test_binary_only_on_a_converted_image_is_already_applied() -> None:
    ctx = EditContext(pci_hack=PciHack.BINARY)
    patched, _ = patch_binary(ELF)
    snap = snapshot({FAKE_PATH: FAKE_DEVICES, BINARIES[0]: patched, BINARIES[2]: patched})
    assert Pci().plan(snap, ctx).status == "already applied" and Pci().check(snap, ctx)


# --- the bind done again after rc.sysinit mounts /proc again ----------------

CENTOS5_SYSINIT = """\
#!/bin/bash
#
# /etc/rc.d/rc.sysinit - run once at boot time
#
HOSTNAME=`/bin/hostname`
mount -n -t proc /proc /proc
[ -d /proc/bus/usb ] && mount -n -t usbfs /proc/bus/usb /proc/bus/usb
mount -n -t sysfs /sys /sys >/dev/null 2>&1
"""


def test_rc_sysinit_binds_again_after_its_proc_mount() -> None:
    ctx = EditContext(pci_hack=PciHack.BIND)
    snap = snapshot({RC_SYSINIT: CENTOS5_SYSINIT}, modes={RC_SYSINIT: 0o755})
    plan = Pci().plan(snap, ctx)
    writes = {c.path: c for c in plan.changes if isinstance(c, WriteFile)}
    new = writes[RC_SYSINIT].data.decode()
    assert writes[RC_SYSINIT].mode == 0o755 and set(writes) == {FAKE_PATH, RC_SYSINIT}
    before, after = CENTOS5_SYSINIT.split("mount -n -t proc /proc /proc\n")
    assert new == before + "mount -n -t proc /proc /proc\n" + REBIND + after
    assert plan.details["rebind_after_proc_mount"] == [f"{RC_SYSINIT}:6"]
    assert not Pci().check(snapshot({FAKE_PATH: FAKE_DEVICES, RC_SYSINIT: CENTOS5_SYSINIT}), ctx)
    done = snapshot({FAKE_PATH: FAKE_DEVICES, RC_SYSINIT: new})
    assert Pci().check(done, ctx)
    again = Pci().plan(done, ctx)
    assert again.status == "already applied" and "rebind_after_proc_mount" not in again.details


def test_the_rebind_never_fails_the_boot() -> None:
    """The line is guarded (both directories) and ends in `|| :`: under
    set -e, and where the bind fails, the script goes on."""
    assert REBIND.splitlines()[1].startswith("[ -d /hack/bus/pci ] && [ -d /proc/bus/pci ] && mount -n ")
    assert REBIND.endswith(" || :\n")


@pytest.mark.parametrize("line", [
    "mount -n -t proc /proc /proc", "  mount -t proc proc /proc", "mount -tproc none /proc/",
    "\tmount -n -t proc -o nosuid /proc /proc"])
def test_what_mounts_proc_again(line: str) -> None:
    assert proc_remounts(f"x\n{line}\n") == [1]


@pytest.mark.parametrize("line", [
    "[ -r /proc/mounts ] || mount -t proc proc /proc", "mount -n -t sysfs /sys /sys",
    "# mount -n -t proc /proc /proc", "mount -t proc proc /mnt/proc",
    "mountpoint -q /proc || mount -t proc p /proc"])
def test_what_does_not(line: str) -> None:
    assert proc_remounts(f"{line}\n") == []


def test_the_example_rc_sysinit_mounts_proc_only_when_missing() -> None:
    """The stock example's rc.sysinit checks /proc/mounts first: nothing to
    bind again, and the file is left as it is."""
    text = (ROOT_TREE / "etc/rc.d/rc.sysinit").read_text()
    assert proc_remounts(text) == [] and with_rebind(text) == (text, [])
    plan = Pci().plan(snapshot({RC_SYSINIT: text}), EditContext())
    assert RC_SYSINIT not in {c.path for c in plan.changes if isinstance(c, WriteFile)}


def test_binary_alone_leaves_rc_sysinit() -> None:
    ctx = EditContext(pci_hack=PciHack.BINARY)
    assert RC_SYSINIT not in Pci().reads(ctx)
    assert Pci().check(snapshot({FAKE_PATH: FAKE_DEVICES, RC_SYSINIT: CENTOS5_SYSINIT,
                                 BINARIES[3]: b"/hack/bus/pci/devices"}), ctx)

"""Every edit against the example image's source tree (fixtures/vsa-root):
it applies, its postcondition then holds, and a second plan on its own output
is 'already applied'."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_edit_shell import REPO, assert_sh_syntax
from vsaimage.edits import (
    Edit,
    EditContext,
    GuestFile,
    InstallModules,
    PartitionFacts,
    Snapshot,
    StepPlan,
    UploadFile,
    WriteFile,
)
from vsaimage.edits.bootloader import BootLoader
from vsaimage.edits.catalog import ALL
from vsaimage.edits.mobo_uuid import BEGIN
from vsaimage.edits.pci import BINARIES
from vsaimage.guest.hosttree import HostTree
from vsaimage.model import BootFiles

ROOT = REPO / "fixtures" / "vsa-root"
VERSION = "6.1.0-18-amd64"
CTX = EditContext(kernel_version=VERSION)
# --boot pygrub: without it the bootloader step is not used
OWN_KERNEL = EditContext(kernel_version=VERSION, boot=BootFiles(
    "pygrub", VERSION, "root=/dev/xvda5 console=hvc0 net.ifnames=0",
    "0f4c5a1e-8d2b-4a67-9e3f-2b1c0d9e8f7a", "/boot"))


def ctx_for(e: Edit) -> EditContext:
    return OWN_KERNEL if isinstance(e, BootLoader) else CTX


def read_tree(root: Path) -> Snapshot:
    """The fixture as guest.py would present it: every path listed and read,
    symlinks followed inside the tree."""
    host = HostTree(root)
    paths = host.list("/")
    return Snapshot({p: host.read(p) for p in paths}, frozenset(paths))


def apply(snap: Snapshot, plan: StepPlan) -> Snapshot:
    """What convert would leave behind, modelled on the Snapshot."""
    files, paths = dict(snap.files), set(snap.paths)
    for change in plan.changes:
        if isinstance(change, WriteFile):
            files[change.path] = GuestFile(change.path, change.data, change.mode)
            paths.add(change.path)
        elif isinstance(change, InstallModules):
            base = f"/lib/modules/{change.version}"
            dep = f"{base}/modules.dep"
            files[dep] = GuestFile(dep, b"kernel/drivers/block/xen-blkfront.ko:\n", 0o644)
            paths |= {base, dep, f"{base}/kernel/drivers/block/xen-blkfront.ko"}
        else:
            paths.add(change.path)
    return Snapshot(files, frozenset(paths))


@pytest.mark.parametrize("e", ALL, ids=lambda e: e.name)
def test_edit_applies_then_is_already_applied(e: Edit, tmp_path: Path) -> None:
    ctx = ctx_for(e)
    snap = read_tree(ROOT)
    assert not e.check(snap, ctx)
    plan = e.plan(snap, ctx)
    assert plan.status == "apply" and plan.changes
    done = apply(snap, plan)
    assert e.check(done, ctx)
    again = e.plan(done, ctx)
    if isinstance(e, BootLoader):
        # an upload is compared with the guest's file only when it runs
        # (sha256 in the appliance): the plan names both files again
        assert [type(c) for c in again.changes] == [UploadFile, UploadFile]
    else:
        assert again.status == "already applied" and again.changes == ()
    for change in plan.changes:
        if isinstance(change, WriteFile) and change.data.startswith(b"#!/bin/sh"):
            assert_sh_syntax(change.data.decode("latin-1"), tmp_path)


def test_whole_conversion_in_order() -> None:
    snap = read_tree(ROOT)
    for edit in ALL:
        snap = apply(snap, edit.plan(snap, CTX))
    for edit in ALL:
        assert edit.check(snap, CTX), edit.name
        # --boot direct (CTX) does not use the bootloader step
        expected = "skipped" if isinstance(edit, BootLoader) else "already applied"
        assert edit.plan(snap, CTX).status == expected, edit.name


def test_fixture_specifics(tmp_path: Path) -> None:
    snap = read_tree(ROOT)
    by_name = {e.name: e for e in ALL}
    pci = by_name["pci"].plan(snap, CTX)
    counts = pci.details["replacements"]
    assert isinstance(counts, dict) and all(counts[p] >= 1 for p in BINARIES)
    mobo = by_name["mobo-uuid"].plan(snap, CTX).changes[0]
    assert isinstance(mobo, WriteFile)
    text = mobo.data.decode("latin-1")
    # after the assignment inside didMotherboardChange, not getSystemSerial's
    assert text.index(BEGIN) > text.index("moboUUID=`/usr/sbin/dmidecode")
    assert text.index(BEGIN) < text.index("savedUUID=`cat")
    assert_sh_syntax(text, tmp_path)
    platform = by_name["platform"].plan(snap, CTX)
    assert platform.details["link"] == "/etc/lefthand/brand/vmnsm/platform.xml -> platform.xml.vmw"


FIXTURE_TTY1 = "1:2345:respawn:/sbin/mingetty --loginprog=/sbin/lhn_login tty1"


@pytest.mark.parametrize(
    ("tty1", "hvc0"),
    [
        (FIXTURE_TTY1, "hvc:2345:respawn:/sbin/mingetty --loginprog=/sbin/lhn_login hvc0"),
        ("1:2345:respawn:/sbin/mingetty tty1", "hvc:2345:respawn:/sbin/agetty hvc0 38400 linux"),
    ],
    ids=["vsa-console", "plain-getty-variant"],
)
def test_console_on_the_fixture_and_its_plain_getty_variant(tty1: str, hvc0: str) -> None:
    snap = read_tree(ROOT)
    inittab = snap.text("/etc/inittab")
    assert inittab is not None and inittab.count(FIXTURE_TTY1 + "\n") == 1
    variant = GuestFile("/etc/inittab", inittab.replace(FIXTURE_TTY1, tty1).encode())
    files = {**snap.files, "/etc/inittab": variant}
    plan = next(e for e in ALL if e.name == "console").plan(Snapshot(files, snap.paths), CTX)
    written = next(c for c in plan.changes if isinstance(c, WriteFile) and c.path == "/etc/inittab")
    lines = written.data.decode().splitlines()
    assert lines[-1] == hvc0 and "#" + tty1 in lines
    assert plan.details["tty1"] == tty1


def test_inspect_findings_on_the_fixture() -> None:
    """What inspect shows before a convert: each edit's plan details, or why it stops."""
    from vsaimage.commands.inspect import findings

    snap = read_tree(ROOT)
    found = findings(snap, EditContext(partitions=(PartitionFacts(5, "ext3", "/", "uuid-of-root"),)))
    assert "modules" not in found and set(found) == {e.name for e in ALL} - {"modules"}
    console = found["console"]
    assert isinstance(console, dict) and console["tty1"] == FIXTURE_TTY1
    fstab = found["fstab"]
    assert isinstance(fstab, dict) and fstab["rewritten"][0]["to"].startswith("UUID=uuid-of-root ")
    broken = Snapshot({p: f for p, f in snap.files.items() if p != "/etc/inittab"}, snap.paths)
    assert findings(broken, CTX)["console"] == {
        "error": "/etc/inittab is missing from the guest (needed by step console)",
        "hint": "--skip console converts without this edit",
    }

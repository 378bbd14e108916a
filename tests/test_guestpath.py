"""Guest paths resolved as inside the running VSA (guestpath.py), on a host
directory standing in for the guest root: symlinks relative and absolute,
dangling links, loops, and places the edits must not touch."""

from __future__ import annotations

from pathlib import Path

import pytest

from vsaimage.edits import EditContext, GuestFile, Snapshot
from vsaimage.edits.console import INITTAB
from vsaimage.edits.pci import BINARIES
from vsaimage.errors import GuestPathError
from vsaimage.guest.hosttree import HostTree
from vsaimage.plan import build


@pytest.fixture
def root(tmp_path: Path) -> HostTree:
    """A small Red Hat-style root: /etc/init.d -> rc.d/init.d (relative),
    /etc/lefthand/brand -> /opt/brand (absolute), a file link, a dangling
    link, a loop, and links into /proc and /boot."""
    (tmp_path / "etc/rc.d/init.d").mkdir(parents=True)
    (tmp_path / "etc/rc.d/init.d/lhn_functions").write_text("f\n")
    (tmp_path / "etc/init.d").symlink_to("rc.d/init.d")
    (tmp_path / "opt/brand/vmnsm").mkdir(parents=True)
    (tmp_path / "opt/brand/vmnsm/platform.xml.vmw").write_text("x")
    (tmp_path / "etc/lefthand").mkdir()
    (tmp_path / "etc/lefthand/brand").symlink_to("/opt/brand")
    (tmp_path / "etc/sysconfig").mkdir()
    (tmp_path / "etc/sysconfig/inittab").write_text("id:3:initdefault:\n")
    (tmp_path / "etc/inittab").symlink_to("/etc/sysconfig/inittab")
    (tmp_path / "etc/securetty").symlink_to("/nowhere/securetty")
    (tmp_path / "etc/a").symlink_to("b")
    (tmp_path / "etc/b").symlink_to("a")
    (tmp_path / "etc/pci").symlink_to("../proc/bus/pci")
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot/vmlinuz").write_bytes(b"")
    (tmp_path / "etc/kernel").symlink_to("/boot/vmlinuz")
    (tmp_path / "etc/self").symlink_to(".")
    return HostTree(tmp_path)


def test_relative_and_absolute_links_resolve_inside_the_root(root: HostTree) -> None:
    assert root.resolve("/etc/init.d/lhn_functions").real == "/etc/rc.d/init.d/lhn_functions"
    assert root.resolve("/etc/lefthand/brand/vmnsm/platform.xml.vmw").real == \
        "/opt/brand/vmnsm/platform.xml.vmw"
    assert root.resolve("/etc/inittab").real == "/etc/sysconfig/inittab"
    assert root.resolve("/etc/self/self/inittab").real == "/etc/sysconfig/inittab"
    # ".." after a link goes up from where the link led, as in the kernel
    assert root.resolve("/etc/init.d/../../inittab").real == "/etc/sysconfig/inittab"


def test_missing_paths_resolve_to_where_they_would_be_created(root: HostTree) -> None:
    r = root.resolve("/etc/init.d/new/file")
    assert (r.real, r.kind) == ("/etc/rc.d/init.d/new/file", None)
    assert root.resolve("/hack/bus/pci/devices").kind is None


@pytest.mark.parametrize(("path", "words"), [
    ("/etc/securetty", ("/etc/securetty", "dangling", "/nowhere/securetty")),
    ("/etc/a", ("/etc/a", "loop")),
    ("/etc/a/x", ("/etc/a/x", "loop")),
    ("/etc/pci/devices", ("/etc/pci/devices", "/proc", "not on the disk")),
    ("/etc/inittab/x", ("not a directory",)),
])
def test_refused(root: HostTree, path: str, words: tuple[str, ...]) -> None:
    with pytest.raises(GuestPathError) as e:
        root.resolve(path)
    for w in words:
        assert w in e.value.message


def test_another_filesystem_is_fenced(root: HostTree) -> None:
    from vsaimage.guest import paths as guestpath

    with pytest.raises(GuestPathError, match=r"/etc/kernel leads into /boot, another filesystem"):
        guestpath.resolve("/etc/kernel", root.lookup, fenced=["/", "/boot"])


def test_read_follows_links_and_reports_where(root: HostTree) -> None:
    f = root.read("/etc/inittab")
    assert (f.data, f.real, f.error) == (b"id:3:initdefault:\n", "/etc/sysconfig/inittab", None)
    bad = root.read("/etc/securetty")
    assert bad.data is None and bad.error is not None and "dangling" in bad.error
    assert root.read("/etc/none") == GuestFile("/etc/none", None)


def test_listing_follows_symlinked_directories(root: HostTree) -> None:
    paths = root.list("/etc/lefthand")
    assert "/etc/lefthand/brand/vmnsm/platform.xml.vmw" in paths
    assert "/etc/init.d/lhn_functions" in root.list("/etc/init.d")
    # the loop and the link to itself are listed, and end
    assert {"/etc/a", "/etc/b", "/etc/self"} <= root.list("/etc")


def test_plan_refuses_a_bad_link_naming_path_and_step() -> None:
    snap = Snapshot({INITTAB: GuestFile(INITTAB, None, error=f"{INITTAB}: symlink loop (at /etc/inittab)")})
    with pytest.raises(GuestPathError) as e:
        build(snap, EditContext(kernel_version="6.1"),
              frozenset({"mobo-uuid", "pci", "udev", "fstab", "platform", "drivers", "modules"}))
    assert INITTAB in e.value.message and "step console" in e.value.message
    assert e.value.exit_code == 2
    binary = GuestFile(BINARIES[3], None, error=f"{BINARIES[3]} is a dangling symlink (-> x)")
    with pytest.raises(GuestPathError, match="step pci"):
        build(Snapshot({BINARIES[3]: binary}), EditContext(), frozenset({"mobo-uuid"}))

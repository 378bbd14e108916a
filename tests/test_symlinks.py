"""The `symlinks` fixture variant: the files the edits read are reached through
symlinks, relative and absolute, as on a Red Hat-style VSA. convert, verify
and inspect --bundle agree on it, a second convert changes nothing, and the
links are still links afterwards. A dangling link and a loop among the paths
an edit reads stop convert with one line naming the path and the step."""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixtures.build_image import LAYOUTS, cached_image
from support import DebianKernel, Run, Variant, fingerprint, run_cli

pytestmark = pytest.mark.integration

LINKS = {path: target for path, target, _ in LAYOUTS["symlinks"].links}
# Where each edited file really is, and what the edit leaves in it.
EDITED = {
    "/etc/rc.d/init.d/lhn_functions": b"/sys/hypervisor/uuid",
    "/opt/lefthand/brand/brand.init": b"platform.xml.vmw",
    "/opt/lefthand/brand/rc.drivers": b"xen_blkfront",
    "/opt/lefthand/brand/common/fst": b"/hack/bus/pci/devices",
    "/etc/sysconfig/inittab": b"hvc:2345:respawn:/sbin/mingetty --loginprog=/sbin/lhn_login hvc0",
    "/usr/lib/lefthand/hwid": b"/hack/bus/pci/devices",
}
STEPS = ("mobo-uuid", "pci", "udev", "fstab", "platform", "drivers", "modules", "console")


def convert(src: Path, out: Path, k: DebianKernel, initrd: Path | None = None) -> Run:
    return run_cli("convert", src, "--kernel", k.vmlinuz, "--initrd", initrd or k.initrd, "-o", out,
                   "--modules", "minimal", "--json")


@dataclass(frozen=True)
class Guest:
    links: dict[str, str | None]
    files: dict[str, bytes | None]


@pytest.fixture(scope="module")
def guest(symlinks_converted: Variant) -> Guest:
    """The converted root read with a separate read-only handle."""
    import guestfs

    g = guestfs.GuestFS(python_return_dict=True)
    g.add_drive_opts(str(symlinks_converted.out), readonly=True, format="raw")
    g.launch()
    try:
        g.mount_ro(f"/dev/sda{LAYOUTS['symlinks'].root_part}", "/")
        links = {p: g.readlink(p) if g.is_symlink(p) else None for p in LINKS}
        files = {p: bytes(g.read_file(p)) if g.is_file(p) else None for p in EDITED}
    finally:
        g.close()
    return Guest(links, files)


def test_convert_applies_every_step(symlinks_converted: Variant) -> None:
    assert {s["step"]: s["status"] for s in symlinks_converted.run.doc["steps"]} == {
        **dict.fromkeys((*STEPS, "copy", "initrd", "xl"), "applied"), "bootloader": "skipped"}
    assert fingerprint(symlinks_converted.input) == symlinks_converted.input_sha_before


def test_links_are_still_links_and_their_targets_edited(guest: Guest) -> None:
    assert guest.links == LINKS
    for path, mark in EDITED.items():
        data = guest.files[path]
        assert data is not None and mark in data, path
    assert b"/proc/bus/pci/devices" not in (guest.files["/usr/lib/lefthand/hwid"] or b"")


def test_verify_and_inspect_bundle_agree(symlinks_converted: Variant, tmp_path: Path) -> None:
    v = run_cli("verify", symlinks_converted.out, "--initrd", symlinks_converted.initrd, "--json")
    assert v.code == 0, v.stderr
    assert v.doc["missing"] == []
    bundle = tmp_path / "b.tar.gz"
    i = run_cli("inspect", symlinks_converted.out, "--json", "--bundle", bundle)
    assert i.code == 0, i.stderr
    assert {e["step"]: e["status"] for e in i.doc["edits"]} == {**dict.fromkeys(STEPS, "applied"),
                                                                "bootloader": "not used"}
    with tarfile.open(bundle) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        inittab = tar.extractfile("files/etc/inittab")
        assert inittab is not None and EDITED["/etc/sysconfig/inittab"] in inittab.read()
    files = {e["path"]: e for e in manifest["files"]}
    assert files["/etc/inittab"]["status"] == "copied"
    assert files["/etc/inittab"]["resolves_to"] == "/etc/sysconfig/inittab"
    assert files["/etc/init.d/lhn_functions"]["resolves_to"] == "/etc/rc.d/init.d/lhn_functions"
    hwid = next(b for b in manifest["binaries"] if b["path"] == "/sbin/hwid")
    assert hwid["resolves_to"] == "/usr/lib/lefthand/hwid"
    assert hwid["offsets"]["/proc/bus/pci/devices"] == []


def test_second_convert_changes_nothing(symlinks_converted: Variant, debian_kernel: DebianKernel) -> None:
    out = symlinks_converted.out.parent / "again.img"
    r = convert(symlinks_converted.out, out, debian_kernel, symlinks_converted.initrd)
    assert r.code == 0, r.stderr
    assert {s["step"]: s["status"] for s in r.doc["steps"]} == {
        **dict.fromkeys((*STEPS, "initrd"), "already applied"), "copy": "applied", "xl": "applied",
        "bootloader": "skipped"}


@pytest.mark.parametrize(("layout", "words"), [
    ("dangling-link", ("/etc/securetty", "dangling", "step console", "--skip console")),
    ("link-loop", ("/etc/lefthand/brand/rc.drivers", "loop", "step drivers")),
])
def test_bad_link_stops_convert(layout: str, words: tuple[str, ...], debian_kernel: DebianKernel,
                                tmp_path: Path) -> None:
    r = convert(cached_image(layout), tmp_path / "out.img", debian_kernel)
    assert r.code == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("vsaimage: error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert r.doc["error"]["kind"] == "guest-path"
    assert list(tmp_path.iterdir()) == []

"""--boot pygrub / pvgrub: the converted disk carries the Xen kernel, the
repacked initrd and a GRUB 2 menu in its boot partition, read back here with a
separate libguestfs handle (the outputs on read-only drives); the xl config
names no file of the dom0. (The boots themselves are in test_xen_boot.py.)"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from xenharness import pygrub

from support import Converted, DebianKernel, OwnKernel, fingerprint, nobody_dir, run_cli
from vsaimage.xen import bootmenu, xlcfg
from xl_reader import parse as parse_xl

pytestmark = pytest.mark.integration

BOOT_PART, ROOT_PART = 1, 5  # the stock layout
# what the VSA's boot partition holds before any convert (fixtures/vsa-boot)
VSA_BOOT_FILES = {"/System.map-2.6.18-vsa", "/config-2.6.18-vsa", "/grub", "/grub/device.map",
                  "/grub/grub.conf", "/grub/menu.lst", "/initrd-2.6.18-vsa.img", "/vmlinuz-2.6.18-vsa"}


def read_boot(g: Any, device: str) -> dict[str, bytes | None]:
    """Every path of the boot filesystem on `device`: a regular file's bytes, else None."""
    g.mount_ro(f"{device}{BOOT_PART}", "/")
    try:
        found: dict[str, bytes | None] = {}
        for p in ("/" + name for name in g.find("/")):
            if not p.startswith("/lost+found"):
                found[p] = bytes(g.read_file(p)) if g.is_file(p) and not g.is_symlink(p) else None
        return found
    finally:
        g.umount_all()


def fill_boot(g: Any, device: str) -> None:
    """Leave 8 MiB free in the boot filesystem on `device` (writable)."""
    g.mount(f"{device}{BOOT_PART}", "/")
    try:
        free = g.statvfs("/")
        g.fallocate64("/filler", free["bavail"] * free["bsize"] - 8 * 2**20)
    finally:
        g.umount_all()


@dataclass(frozen=True)
class Appliance:
    """What this module's one appliance read and wrote."""

    boots: dict[str, dict[str, bytes | None]]  # by output: its boot partition, read back
    full_boot: Path  # a copy of the input, its /boot filled


@pytest.fixture(scope="module")
def appliance(own_kernel: OwnKernel, converted: Converted) -> Appliance:
    """One appliance launch for the module (~20 s each under TCG): the pygrub,
    direct and pvgrub outputs on read-only drives, a copy of the input on a
    writable one. The handle is shut down before any test runs, so the fill
    is on disk before the CLI reads the copy."""
    import guestfs

    full_boot = nobody_dir() / "full-boot" / "vsa.img"
    full_boot.parent.mkdir()
    subprocess.run(["cp", "--sparse=always", str(own_kernel.input), str(full_boot)], check=True)
    images = {"pygrub": own_kernel.pygrub, "direct": converted.out, "pvgrub": own_kernel.pvgrub}
    g = guestfs.GuestFS(python_return_dict=True)
    for image in images.values():
        g.add_drive_opts(str(image), readonly=True, format="raw")
    g.add_drive_opts(str(full_boot), format="raw")
    g.launch()
    try:
        *read_only, writable = g.list_devices()  # in the order added
        boots = {name: read_boot(g, device) for name, device in zip(images, read_only, strict=True)}
        fill_boot(g, writable)
    finally:
        g.shutdown()
        g.close()
    return Appliance(boots, full_boot)


@pytest.fixture(scope="module")
def pygrub_boot(appliance: Appliance) -> dict[str, bytes | None]:
    return appliance.boots["pygrub"]


def test_boot_partition_holds_kernel_initrd_and_menu(pygrub_boot: dict[str, bytes | None],
                                                      own_kernel: OwnKernel,
                                                      debian_kernel: DebianKernel) -> None:
    assert set(pygrub_boot) == VSA_BOOT_FILES | {"/grub/grub.cfg", "/vsaimage", "/vsaimage/vmlinuz",
                                                 "/vsaimage/initrd.img"}
    assert pygrub_boot["/vsaimage/vmlinuz"] == debian_kernel.vmlinuz.read_bytes()
    assert pygrub_boot["/vsaimage/initrd.img"] == own_kernel.pygrub.with_suffix(".initrd").read_bytes()


def test_menu_boots_them_with_the_direct_command_line(pygrub_boot: dict[str, bytes | None],
                                                      converted: Converted) -> None:
    """The default entry's command line is what xl gives a direct boot of
    the same image (root= then extra)."""
    menu = (pygrub_boot["/grub/grub.cfg"] or b"").decode()
    assert bootmenu.default_files(menu) == ("/vsaimage/vmlinuz", "/vsaimage/initrd.img")
    direct = parse_xl(converted.cfg.read_text())
    linux = next(line.split(None, 2) for line in menu.splitlines() if line.strip().startswith("linux "))
    assert linux[2] == f"root={direct['root']} {direct['extra']}"
    # the VSA's own entry follows, with its kernel and root= as under Xen
    vsa_entry = "menuentry 'SAN/iQ 9.5.00.1215 (2.6.18-vsa)' {\n\tlinux /vmlinuz-2.6.18-vsa ro "
    assert vsa_entry + "root=/dev/xvda5 " in menu


def test_vsa_boot_files_untouched(pygrub_boot: dict[str, bytes | None], appliance: Appliance) -> None:
    """Nothing of the VSA's own in /boot changes but what a direct convert
    changes too (grub.conf's device names)."""
    direct = appliance.boots["direct"]
    assert {p: pygrub_boot[p] for p in VSA_BOOT_FILES} == {p: direct[p] for p in VSA_BOOT_FILES}


@pytest.mark.parametrize("loader", ["pygrub", "pvgrub"])
def test_pygrub_on_the_output_picks_our_entry(own_kernel: OwnKernel, debian_kernel: DebianKernel,
                                              converted: Converted, loader: str) -> None:
    """Debian's pygrub, run on the output file as libxl runs it (but on the
    host, without Xen), boots entry 0 of the menu: our kernel and initrd,
    with the direct config's command line."""
    image = getattr(own_kernel, loader)
    choice = pygrub.choose(image)
    assert choice.config == "/grub/grub.cfg" and choice.index == 0
    assert choice.chosen.title.startswith("Xen guest (vsaimage): Linux ")
    assert (choice.chosen.kernel, choice.chosen.ramdisk) == ("/vsaimage/vmlinuz", "/vsaimage/initrd.img")
    direct = parse_xl(converted.cfg.read_text())
    assert choice.chosen.args == f"root={direct['root']} {direct['extra']}"
    assert choice.kernel_sha256 == hashlib.sha256(debian_kernel.vmlinuz.read_bytes()).hexdigest()
    assert choice.ramdisk_sha256 == hashlib.sha256(image.with_suffix(".initrd").read_bytes()).hexdigest()
    assert [e.title for e in choice.entries[1:]] == ["SAN/iQ 9.5.00.1215 (2.6.18-vsa)"]


@pytest.mark.parametrize("loader", ["pygrub", "pvgrub"])
def test_xl_config_names_no_dom0_file(own_kernel: OwnKernel, loader: str) -> None:
    image = getattr(own_kernel, loader)
    cfg = parse_xl(image.with_suffix(".cfg").read_text())
    assert not {"ramdisk", "root", "extra"} & set(cfg)
    if loader == "pygrub":
        assert cfg["bootloader"] == "pygrub" and "kernel" not in cfg
    else:
        assert cfg["kernel"] == xlcfg.PVGRUB["pv"] and "bootloader" not in cfg
    run = getattr(own_kernel, f"{loader}_run")
    assert run.doc["xl"]["boot"] == loader and run.doc["xl"]["type"] == "pv"


def test_converting_again_leaves_boot_as_it_was(own_kernel: OwnKernel, pygrub_boot: dict[str, bytes | None],
                                                appliance: Appliance) -> None:
    """The pvgrub convert ran on the pygrub output: the same menu, the same
    files (compared by sha256 in the appliance, not sent again)."""
    step = next(s for s in own_kernel.pvgrub_run.doc["steps"] if s["step"] == "bootloader")
    assert step["status"] == "already applied", step
    assert sorted(step["details"]["unchanged"]) == [bootmenu.INITRD, bootmenu.KERNEL]
    assert appliance.boots["pvgrub"] == pygrub_boot
    assert fingerprint(own_kernel.input) == own_kernel.input_sha_before


def test_verify_checks_the_boot_files(own_kernel: OwnKernel) -> None:
    r = run_cli("verify", own_kernel.pygrub, own_kernel.pvgrub, "--json")
    assert r.code == 0, r.stderr
    for image in r.doc["images"]:
        assert {e["step"]: e["status"] for e in image["edits"]}["bootloader"] == "applied", image


def test_no_room_in_boot_is_refused_before_writing(appliance: Appliance, debian_kernel: DebianKernel) -> None:
    """A VSA whose /boot is nearly full (the module's appliance filled it):
    one line naming the partition and the sizes, exit 2, no output, the
    input unchanged."""
    src = appliance.full_boot
    d = src.parent
    src.chmod(0o444)
    before = fingerprint(src)
    r = run_cli("convert", src, "--kernel", debian_kernel.vmlinuz, "--initrd", debian_kernel.initrd,
                "-o", d / "out.img", "--boot", "pygrub", "--modules", "minimal")
    assert r.code == 2, r.stderr
    said = f"partition {BOOT_PART} (/boot) has"
    assert any(said in line and "MiB free" in line for line in r.stderr.splitlines()), r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(p.name for p in d.iterdir()) == ["vsa.img"]
    assert fingerprint(src) == before

"""bootmenu.py and the bootloader edit: the GRUB 2 menu of --boot pvgrub /
pygrub, read back with pygrub's own parser (GrubConf from Debian's
xen-utils-4.17, extracted by make setup)."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fixtures.build_image import default_cache
from vsaimage.edits import EditContext, GuestFile, Snapshot, UploadFile, WriteFile
from vsaimage.edits.bootloader import BootLoader
from vsaimage.errors import EditError
from vsaimage.model import BootFiles
from vsaimage.xen import bootmenu

REPO = Path(__file__).resolve().parent.parent
LEGACY = (REPO / "fixtures/vsa-boot/grub/grub.conf").read_text()
CMDLINE = "root=/dev/xvda5 console=hvc0 net.ifnames=0 vsyscall=emulate"
BOOT = BootFiles("pygrub", "6.1.0-57-amd64", CMDLINE, "0f4c5a1e-8d2b-4a67-9e3f-2b1c0d9e8f7a", "")


@pytest.fixture(scope="module")
def grubconf() -> ModuleType:
    """pygrub's parser, as libxl runs it on the dom0."""
    where = default_cache() / "debian-root/usr/lib/xen-4.17/lib/python"
    assert (where / "grub/GrubConf.py").is_file(), f"no pygrub at {where}: run make setup"
    sys.path.insert(0, str(where))
    try:
        import grub.GrubConf
    finally:
        sys.path.remove(str(where))
    return grub.GrubConf


def pygrub_reads(grubconf: ModuleType, text: str) -> tuple[int, list[object]]:
    cfg = grubconf.Grub2ConfigFile()
    cfg.parse(text)
    return int(cfg.default), cfg.images


def test_pygrub_boots_our_entry(grubconf: ModuleType) -> None:
    default, images = pygrub_reads(grubconf, bootmenu.render(BOOT, LEGACY))
    ours = images[default]
    assert ours.title == BOOT.title
    assert ours.kernel == (None, "/vsaimage/vmlinuz") and ours.args == CMDLINE
    assert ours.initrd == (None, "/vsaimage/initrd.img")
    # the VSA's own entry is still in the menu, not default
    assert [i.title for i in images[1:]] == ["SAN/iQ 9.5.00.1215 (2.6.18-vsa)"]
    assert images[1].kernel == (None, "/vmlinuz-2.6.18-vsa")
    assert images[1].args == "ro root=LABEL=/ console=tty0 console=ttyS0,115200 quiet"
    assert images[1].initrd == (None, "/initrd-2.6.18-vsa.img")


def test_an_upgrade_that_moves_the_vsa_default_does_not_move_ours(grubconf: ModuleType) -> None:
    """After the VSA's upgrade its grub.conf boots the unconverted slot p2:
    the menu still boots the converted root until convert --in-place."""
    from test_grubconf import TWO_SLOTS

    default, images = pygrub_reads(grubconf, bootmenu.render(BOOT, TWO_SLOTS))
    assert images[default].title == BOOT.title and images[default].args == CMDLINE
    assert [i.title for i in images[1:]] == ["SAN/iQ 9.5.00.1215 (2.6.18-vsa)",
                                             "SAN/iQ 10.0.00.1896 (2.6.32-vsa)"]


def test_boot_in_the_root_filesystem(grubconf: ModuleType) -> None:
    """No boot partition: the files are under /boot of the root filesystem,
    and the menu names them so."""
    text = bootmenu.render(dataclasses.replace(BOOT, fs_prefix="/boot"), None)
    default, images = pygrub_reads(grubconf, text)
    assert len(images) == 1
    assert images[default].kernel == (None, "/boot/vsaimage/vmlinuz")
    assert bootmenu.default_files(text) == ("/boot/vsaimage/vmlinuz", "/boot/vsaimage/initrd.img")


def test_quotes_in_a_title_do_not_break_the_menu(grubconf: ModuleType) -> None:
    legacy = LEGACY.replace("title SAN/iQ", "title it's \"SAN/iQ\"")
    _, images = pygrub_reads(grubconf, bootmenu.render(BOOT, legacy))
    assert images[1].title == "its SAN/iQ 9.5.00.1215 (2.6.18-vsa)"


def test_grub2_syntax() -> None:
    """Balanced braces, one entry per menuentry line, the marker first."""
    text = bootmenu.render(BOOT, LEGACY)
    assert bootmenu.written_by_us(text)
    assert text.count("{") == text.count("}") == text.count("\nmenuentry ") == 2
    assert "search --no-floppy --fs-uuid --set=root " + BOOT.fs_uuid in text


def test_default_files_wants_our_entry_first_and_default() -> None:
    text = bootmenu.render(BOOT, LEGACY)
    assert bootmenu.default_files(text) == ("/vsaimage/vmlinuz", "/vsaimage/initrd.img")
    assert bootmenu.default_files(text.replace("set default=0", "set default=1")) is None
    entries = text.split("menuentry ")
    swapped = entries[0] + "menuentry " + entries[2] + "menuentry " + entries[1]
    assert bootmenu.default_files(swapped) is None


# --- the edit ----------------------------------------------------------------

def snapshot(*, cfg: str | None = None, files: bool = False) -> Snapshot:
    found = {"/boot/grub/grub.conf": GuestFile("/boot/grub/grub.conf", LEGACY.encode(), 0o600)}
    if cfg is not None:
        found[bootmenu.GRUB_CFG] = GuestFile(bootmenu.GRUB_CFG, cfg.encode(), 0o644)
    paths = {bootmenu.KERNEL, bootmenu.INITRD} if files else set()
    return Snapshot(found, frozenset(paths))


def test_plan_writes_the_menu_and_uploads_both_files() -> None:
    plan = BootLoader().plan(snapshot(), EditContext(boot=BOOT))
    writes = [c for c in plan.changes if isinstance(c, WriteFile)]
    assert [(w.path, w.mode) for w in writes] == [(bootmenu.GRUB_CFG, 0o644)]
    assert writes[0].data.decode() == bootmenu.render(BOOT, LEGACY)
    assert [c for c in plan.changes if isinstance(c, UploadFile)] == [
        UploadFile(bootmenu.KERNEL, "kernel"), UploadFile(bootmenu.INITRD, "initrd")]
    assert plan.details["vsa_entries"] == "1 from /boot/grub/grub.conf"


def test_repeated_entries_carry_the_xen_root_name() -> None:
    """The fstab step renames root=/dev/sda5 in grub.conf; the menu repeats
    the entry as that step leaves it, before or after it ran."""
    legacy = LEGACY.replace("root=LABEL=/", "root=/dev/sda5")
    snap = Snapshot({"/boot/grub/grub.conf": GuestFile("/boot/grub/grub.conf", legacy.encode(), 0o600)})
    menu = BootLoader().plan(snap, EditContext(boot=BOOT)).changes[0]
    assert isinstance(menu, WriteFile)
    assert b"linux /vmlinuz-2.6.18-vsa ro root=/dev/xvda5 " in menu.data


# --- the stop rule: a /boot/grub/grub.cfg vsaimage did not write ------------
# What it compares: the file's first line with vsaimage's marker, and
# whether it holds any line but blanks and comments. Refused: a file of
# commands not written by vsaimage (a GRUB 2 menu vsaimage does not edit).

OTHER_KERNEL = bootmenu.BootFiles("pygrub", "6.1.0-99-amd64", "root=/dev/xvda5 console=hvc0", "u", "/boot")
MENU_CONVERTS = {
    "none": None,
    "ours": bootmenu.render(BOOT, LEGACY),
    "ours-for-another-kernel": bootmenu.render(OTHER_KERNEL, LEGACY),
    "ours-without-the-vsa-entries": bootmenu.render(BOOT, None),
    "empty": "",
    "blank-lines": "\n\n  \n",
    "comments-only": "# GRUB 2 menu: none yet\n#\n",
    "indented-comment": "   # placeholder\n",
}


@pytest.mark.parametrize("shape", sorted(MENU_CONVERTS))
def test_menu_converts(shape: str) -> None:
    plan = BootLoader().plan(snapshot(cfg=MENU_CONVERTS[shape], files=True), EditContext(boot=BOOT))
    menu = [c for c in plan.changes if isinstance(c, WriteFile)]
    assert [w.data.decode() for w in menu] == ([] if shape == "ours" else [bootmenu.render(BOOT, LEGACY)])


MENU_REFUSED = {
    "grub2-menu": "set default=0\nmenuentry 'x' {\n}\n",
    "grub-mkconfig-output": ("#\n# DO NOT EDIT THIS FILE\n#\nset timeout=5\n"
                             "### BEGIN /etc/grub.d/10_linux ###\nmenuentry 'Debian' {\n}\n"),
    "a-setting-only": "set timeout=5\n",
    "configfile": "configfile /grub2/grub.cfg\n",
    "source": "source /boot/grub/custom.cfg\n",
    "ours-after-lines-of-another": "set timeout=1\n" + bootmenu.render(BOOT, LEGACY),
    "ours-with-crlf": bootmenu.render(BOOT, LEGACY).replace("\n", "\r\n"),
    "menuentry-only": "menuentry 'VSA' {\n\tlinux /vmlinuz root=/dev/sda5\n}\n",
}


@pytest.mark.parametrize("shape", sorted(MENU_REFUSED))
def test_menu_refused(shape: str) -> None:
    with pytest.raises(EditError) as exc:
        BootLoader().plan(snapshot(cfg=MENU_REFUSED[shape]), EditContext(boot=BOOT))
    assert "/boot/grub/grub.cfg exists and was not written by vsaimage" in exc.value.message
    assert exc.value.hint == "convert with --boot direct" and exc.value.exit_code == 2


def test_direct_boot_does_not_use_the_step() -> None:
    assert BootLoader().plan(snapshot(), EditContext()).status == "skipped"


def test_check_when_converting() -> None:
    ctx = EditContext(boot=BOOT)
    menu = bootmenu.render(BOOT, LEGACY)
    assert BootLoader().check(snapshot(cfg=menu, files=True), ctx)
    assert not BootLoader().check(snapshot(cfg=menu), ctx)  # no kernel copied
    assert not BootLoader().check(snapshot(cfg=menu.replace("quiet", ""), files=True), ctx)


def test_check_when_verifying_an_image() -> None:
    """verify knows no --boot: an image without a menu of ours boots
    directly; one with it must have the files its default entry boots."""
    menu = bootmenu.render(BOOT, LEGACY)
    assert BootLoader().check(snapshot(), EditContext())
    assert BootLoader().check(snapshot(cfg=menu, files=True), EditContext())
    assert not BootLoader().check(snapshot(cfg=menu), EditContext())
    assert not BootLoader().check(snapshot(cfg=menu.replace("set default=0", "set default=1"), files=True),
                                  EditContext())

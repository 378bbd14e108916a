"""syslinux.py: SYSLINUX, EXTLINUX and ISOLINUX configs read like grub.conf."""

from __future__ import annotations

import pytest

from vsaimage.edits import PartitionFacts
from vsaimage.vsa import syslinux
from vsaimage.vsa.grubconf import choose_slot, default_root

# A SAN/iQ 8-style boot: prompt, a verbose `vga` label, root on md200.
SANIQ8 = """\
DEFAULT linux
PROMPT 1
TIMEOUT 50
DISPLAY boot.msg
LABEL linux
  KERNEL vmlinuz
  APPEND initrd=initrd.gz root=/dev/md200 ro quiet panic=30
LABEL vga
  KERNEL vmlinuz
  APPEND initrd=initrd.gz root=/dev/md200 ro vga=791 loglevel=7
"""

CORPUS = {
    "default names a label": (SANIQ8, "linux", "vmlinuz", "initrd.gz",
                              ("root=/dev/md200", "ro", "quiet", "panic=30")),
    "lower case, LINUX and INITRD keywords, a menu": (
        "ui menu.c32\nprompt 0\ndefault vga\nlabel linux\n linux /vmlinuz\n initrd /initrd.gz\n"
        " append root=/dev/sda5\nlabel vga\n linux /vmlinuz\n initrd /initrd-vga.gz,/extra.gz\n"
        " append root=/dev/sda5 vga=791\n", "vga", "/vmlinuz", "/initrd-vga.gz",
        ("root=/dev/sda5", "vga=791")),
    "no DEFAULT: the MENU DEFAULT label": (
        "UI menu.c32\nLABEL a\n KERNEL vmlinuz\n APPEND root=/dev/sda1\nLABEL b\n MENU DEFAULT\n"
        " KERNEL vmlinuz\n APPEND root=/dev/sda2 initrd=b.gz\n", "b", "vmlinuz", "b.gz", ("root=/dev/sda2",)),
    "no DEFAULT, no MENU DEFAULT: the first label": (
        "LABEL one\n KERNEL vmlinuz\n APPEND root=/dev/md0\nLABEL two\n KERNEL bzImage\n",
        "one", "vmlinuz", "", ("root=/dev/md0",)),
    "a global APPEND for labels without one": (
        "APPEND root=/dev/md200 ro\nDEFAULT old\nLABEL old\n KERNEL vmlinuz.old\nLABEL new\n KERNEL vmlinuz\n"
        " APPEND -\n", "old", "vmlinuz.old", "", ("root=/dev/md200", "ro")),
    "DEFAULT as a command line of its own (the oldest style)": (
        "DEFAULT vmlinuz initrd=initrd.gz root=/dev/md200 ro\nPROMPT 1\n", "vmlinuz initrd=initrd.gz "
        "root=/dev/md200 ro", "vmlinuz", "initrd.gz", ("root=/dev/md200", "ro")),
    "comments and blank lines": (
        "# the installer's\n\nDEFAULT x\n\n  # LABEL y\nLABEL x\n\tKERNEL vmlinuz\n\tAPPEND root=LABEL=/\n",
        "x", "vmlinuz", "", ("root=LABEL=/",)),
}


@pytest.mark.parametrize("name", list(CORPUS))
def test_the_default_label(name: str) -> None:
    text, title, image, initrd, args = CORPUS[name]
    entry = syslinux.parse(text).default_entry()
    assert entry is not None
    assert (entry.title, entry.image, entry.initrd, entry.kernel) == (title, image, initrd, args)


def test_every_label_and_the_root_of_the_default() -> None:
    cfg = syslinux.parse(SANIQ8)
    assert [e.title for e in cfg.entries] == ["linux", "vga"]
    assert cfg.entries[1].kernel == ("root=/dev/md200", "ro", "vga=791", "loglevel=7")
    assert cfg.default_line == "DEFAULT linux"
    assert default_root(cfg) == ("/dev/md200", "DEFAULT linux: entry 'linux' boots root=/dev/md200")


def test_a_default_that_names_nothing_boots_nothing() -> None:
    assert syslinux.parse("PROMPT 1\n").default_entry() is None
    spec, why = default_root(syslinux.parse("DEFAULT linux\nLABEL linux\n KERNEL vmlinuz\n"))
    assert spec is None and "has no root=" in why


def test_which_files_are_syslinux_configs() -> None:
    assert "syslinux.cfg" in syslinux.CONFIGS and "boot/extlinux/extlinux.conf" in syslinux.CONFIGS
    assert "isolinux/isolinux.cfg" in syslinux.CONFIGS
    assert syslinux.is_config("/syslinux/SYSLINUX.CFG") and not syslinux.is_config("/grub/grub.conf")
    assert syslinux.read_config("/extlinux.conf", SANIQ8).default_line == "DEFAULT linux"
    assert syslinux.read_config("/grub/grub.conf", "default=0\ntitle x\n kernel /v root=/dev/sda5\n"
                                ).default_entry().root == "/dev/sda5"  # type: ignore[union-attr]


def test_a_syslinux_default_chooses_the_slot() -> None:
    slots = [PartitionFacts(2, "ext3", "", ""), PartitionFacts(5, "ext3", "", "")]
    text = SANIQ8.replace("/dev/md200", "/dev/sda5")
    number, why = choose_slot(slots, {"/syslinux.cfg on partition 1": syslinux.parse(text)})
    assert number == 5 and "DEFAULT linux" in why

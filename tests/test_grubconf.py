"""grubconf.py: which system slot the VSA's own grub config boots."""

from __future__ import annotations

from fixtures.build_image import ROOT_TREE
from vsaimage.edits import PartitionFacts
from vsaimage.vsa.grubconf import choose_slot, default_root, parse, pick_slot

GRUB = (ROOT_TREE.parent / "vsa-boot/grub/grub.conf").read_text()

TWO_SLOTS = """# grub.conf written by the SAN/iQ upgrade
default 1
timeout=5
title SAN/iQ 9.5.00.1215 (2.6.18-vsa)
	root (hd0,0)
	kernel /vmlinuz-2.6.18-vsa ro root=/dev/sda5 console=tty0
	initrd /initrd-2.6.18-vsa.img
title SAN/iQ 10.0.00.1896 (2.6.32-vsa)
	root (hd0,0)
	kernel /vmlinuz-2.6.32-vsa ro root=UUID=AB12cd34-0000-4000-8000-000000000002 root=/dev/sda2 quiet
	initrd /initrd-2.6.32-vsa.img
"""

SLOT2 = PartitionFacts(2, "ext3", "slot2", "")
ROOT5 = PartitionFacts(5, "ext3", "/", "ab12cd34-0000-4000-8000-000000000005")


def test_the_fixture_boots_label_slash() -> None:
    cfg = parse(GRUB)
    assert [e.title for e in cfg.entries] == ["SAN/iQ 9.5.00.1215 (2.6.18-vsa)"]
    assert cfg.default == 0 and cfg.default_line == "default=0"
    why = "default=0: entry 'SAN/iQ 9.5.00.1215 (2.6.18-vsa)' boots root=LABEL=/"
    assert default_root(GRUB) == ("LABEL=/", why)
    assert pick_slot([SLOT2, ROOT5], "LABEL=/") == ROOT5


def test_the_upgraded_slot_is_the_default() -> None:
    spec, why = default_root(TWO_SLOTS)
    assert spec == "/dev/sda2"  # the last root= on the line wins
    assert why.startswith("default 1: entry 'SAN/iQ 10.0.00.1896 (2.6.32-vsa)'")
    assert pick_slot([SLOT2, ROOT5], spec) == SLOT2
    assert pick_slot([SLOT2, ROOT5], "UUID=AB12CD34-0000-4000-8000-000000000005") == ROOT5
    assert pick_slot([SLOT2, ROOT5], "/dev/xvda5") == ROOT5


def test_ambiguous_or_missing_picks_none() -> None:
    twins = [PartitionFacts(2, "ext3", "/"), PartitionFacts(5, "ext3", "/")]
    assert pick_slot(twins, "LABEL=/") is None
    assert pick_slot([SLOT2, ROOT5], "/dev/sda9") is None and pick_slot([ROOT5], None) is None


def test_default_saved_out_of_range_and_no_root() -> None:
    assert default_root("default saved\ntitle a\nkernel /k root=/dev/sda1\n")[0] is None
    assert default_root("default=3\ntitle a\nkernel /k root=/dev/sda1\n") == (
        None, "default=3: no such entry among 1")
    assert default_root("title a\nkernel /k ro\n") == (
        None, "no default line: entry 0: entry 'a' has no root= on its kernel line")
    assert default_root("title a\n#kernel /k root=/dev/sda1\nkernel /k root=/dev/sda5\n")[0] == "/dev/sda5"


def test_choose_slot_names_every_slot_and_why() -> None:
    number, why = choose_slot([SLOT2, ROOT5], {"/grub/grub.conf on partition 1": TWO_SLOTS})
    assert number == 2
    assert why == ("the default entry of /grub/grub.conf on partition 1 boots it (default 1: entry "
                   "'SAN/iQ 10.0.00.1896 (2.6.32-vsa)' boots root=/dev/sda2); system slots: 2, 5")
    assert choose_slot([SLOT2, ROOT5], {}) == (None, "system slots: 2, 5; no grub config found")
    number, why = choose_slot([SLOT2, ROOT5], {"g": "default saved\ntitle a\nkernel /k root=/dev/sda2\n"})
    assert number is None and why.startswith("system slots: 2, 5; g: default saved: no such entry")

"""The catalog: order, names and the Edit protocol of every step."""

from __future__ import annotations

from vsaimage.edits import EditContext
from vsaimage.edits.catalog import ALL, NAMES


def test_names_in_order() -> None:
    assert NAMES == ("mobo-uuid", "pci", "udev", "fstab", "platform", "drivers", "modules", "console",
                     "bootloader")
    assert len(set(NAMES)) == len(ALL)


def test_every_edit_declares_what_it_reads() -> None:
    ctx = EditContext(kernel_version="6.1.0-18-amd64")
    for edit in ALL:
        assert edit.title
        for path in (*edit.reads(ctx), *edit.lists(ctx)):
            assert path.startswith("/")

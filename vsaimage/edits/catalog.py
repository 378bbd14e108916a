"""The edits in the order convert applies them (their docstrings name them, not
number them: this order is the one that counts); NAMES is what --skip accepts."""

from __future__ import annotations

from vsaimage.edits import Edit
from vsaimage.edits.bootloader import BootLoader
from vsaimage.edits.console import Console
from vsaimage.edits.drivers import Drivers
from vsaimage.edits.fstab import Fstab
from vsaimage.edits.mobo_uuid import MoboUuid
from vsaimage.edits.modules import Modules
from vsaimage.edits.pci import Pci
from vsaimage.edits.platform import Platform
from vsaimage.edits.udev import Udev

ALL: tuple[Edit, ...] = (
    MoboUuid(), Pci(), Udev(), Fstab(), Platform(), Drivers(), Modules(), Console(), BootLoader(),
)  # fmt: skip
NAMES: tuple[str, ...] = tuple(edit.name for edit in ALL)

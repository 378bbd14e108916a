"""The edits of the conversion, one module per family, each a pure transform
and its postcondition side by side.

Nothing here touches a disk: an edit looks at a `Snapshot` (the guest files it
asked for, read beforehand through guest.py with paths resolved as in the
running VSA) and returns a `StepPlan` holding the
changes to make. convert.py writes those changes through libguestfs; verify
re-reads the files and calls `check`. Text is handled as latin-1 so that every
byte the edit does not target is preserved exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:  # bootmenu reads grub configs with grubconf, which imports this module
    from vsaimage.xen.bootmenu import BootFiles


class PciHack(StrEnum):
    BOTH = "both"
    BIND = "bind"
    BINARY = "binary"


# --pci-hack's default, for convert and verify alike
DEFAULT_PCI_HACK = PciHack.BOTH


@dataclass(frozen=True)
class GuestFile:
    """One path of the guest root as read before planning, symlinks followed
    inside the guest."""

    path: str
    data: bytes | None  # None: missing, or not a regular file
    mode: int | None = None  # permission bits, e.g. 0o755
    real: str | None = None  # where the path leads, when a symlink took it elsewhere
    error: str | None = None  # why it leads nowhere usable (dangling symlink, loop, /proc ...)


@dataclass(frozen=True)
class Snapshot:
    """What edits may look at: the files they listed in `reads`, and every path
    found under the directories they listed in `lists`."""

    files: Mapping[str, GuestFile]
    paths: frozenset[str] = frozenset()

    def get(self, path: str) -> GuestFile:
        return self.files.get(path) or GuestFile(path, None)

    def text(self, path: str) -> str | None:
        data = self.get(path).data
        return None if data is None else data.decode("latin-1")


@dataclass(frozen=True)
class PartitionFacts:
    """What inspection found on one partition of the system disk: edits that
    rewrite device names use the filesystem's UUID and label."""

    number: int
    fstype: str = ""
    label: str = ""
    uuid: str = ""


@dataclass(frozen=True)
class EditContext:
    """The options edits depend on, and the facts of inspection they use."""

    pci_hack: PciHack = DEFAULT_PCI_HACK
    console_autologin: bool = False
    # None when only inspecting: the modules check then accepts any version.
    kernel_version: str | None = None
    # The system disk's partitions; empty when only checking postconditions.
    partitions: tuple[PartitionFacts, ...] = ()
    # --boot pvgrub|pygrub: the kernel the guest's own menu boots. None: a
    # direct boot, or only checking (which then accepts either).
    boot: BootFiles | None = None


@dataclass(frozen=True)
class WriteFile:
    path: str
    data: bytes
    mode: int  # permission bits; parents are created 0755 when missing


@dataclass(frozen=True)
class InstallModules:
    """Unpack the host's modules tree for `version` into /lib/modules/<version>.
    The payload (a tarball) is built host-side by module_payload.py while the
    appliance boots."""

    version: str


@dataclass(frozen=True)
class UploadFile:
    """Copy a host file into the guest: `source` is "kernel" (the --kernel
    file) or "initrd" (the repacked initrd, which exists only once the repack
    ends); convert.py knows both."""

    path: str
    source: Literal["kernel", "initrd"]


Change = WriteFile | InstallModules | UploadFile

# "apply" in a plan; "applied" once convert carried it out.
Status = Literal["apply", "applied", "already applied", "skipped"]


@dataclass(frozen=True)
class StepPlan:
    step: str
    status: Status
    changes: tuple[Change, ...] = ()
    # JSON-able facts for the report: replacement counts, computed UUID, ...
    details: Mapping[str, object] = field(default_factory=dict)


def decide(step: str, changes: list[Change], details: Mapping[str, object] | None = None) -> StepPlan:
    """A StepPlan that applies `changes`, or is 'already applied' when there are none."""
    return StepPlan(step, "apply" if changes else "already applied", tuple(changes), details or {})


def text_write(snap: Snapshot, path: str, new_text: str, default_mode: int = 0o644) -> list[Change]:
    """The change that makes `path` hold `new_text`, keeping its mode; none when
    the file already holds exactly that."""
    old = snap.get(path)
    data = new_text.encode("latin-1")
    if old.data == data:
        return []
    return [WriteFile(path, data, old.mode if old.mode is not None else default_mode)]


class Edit(Protocol):
    """One step of the conversion. `name` is what --skip takes."""

    name: str
    title: str

    def reads(self, ctx: EditContext) -> tuple[str, ...]:
        """Guest paths whose content plan() and check() need."""
        ...

    def lists(self, ctx: EditContext) -> tuple[str, ...]:
        """Guest directories whose full listing (recursive) plan() and check() need."""
        ...

    def plan(self, snap: Snapshot, ctx: EditContext) -> StepPlan:
        """The changes that put the edit in place; raise MissingFile / EditError
        when the guest does not look as expected."""
        ...

    def check(self, snap: Snapshot, ctx: EditContext) -> bool:
        """The postcondition: True when the edit is in place."""
        ...

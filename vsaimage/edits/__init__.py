"""The edits of the conversion, one module per family, each a pure transform
and its postcondition side by side.

Nothing here touches a disk: an edit looks at a `Snapshot` (the guest files it
asked for, read beforehand through the guest adapter with paths resolved as in the
running VSA) and returns a `StepPlan` holding the
changes to make. The convert command writes those changes through libguestfs; verify
re-reads the files and calls `check`. Text is handled as latin-1 so that every
byte the edit does not target is preserved exactly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol

from vsaimage.model import BootFiles

# The types an edit looks at come from model; they are named here too, so that
# an edit imports everything it uses of the edits' interface from this package.
from vsaimage.model import GuestFile as GuestFile
from vsaimage.model import PartitionFacts as PartitionFacts
from vsaimage.model import Snapshot as Snapshot
from vsaimage.model import Status as Status


class PciHack(StrEnum):
    BOTH = "both"
    BIND = "bind"
    BINARY = "binary"


# --pci-hack's default, for convert and verify alike
DEFAULT_PCI_HACK = PciHack.BOTH


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
    """Copy the host's modules tree for `version` into /lib/modules/<version>.
    The payload (a tarball or an ext2 image) is built host-side by
    kmod/payload.py while the appliance boots."""

    version: str


@dataclass(frozen=True)
class UploadFile:
    """Copy a host file into the guest: `source` is "kernel" (the --kernel
    file) or "initrd" (the repacked initrd, which exists only once the repack
    ends); the convert command knows both."""

    path: str
    source: Literal["kernel", "initrd"]


@dataclass(frozen=True)
class MakeLink:
    """A symlink at `path` (replacing what is there) pointing at `target`,
    as systemd enables a unit: the link is what it reads."""

    path: str
    target: str


Change = WriteFile | InstallModules | UploadFile | MakeLink

@dataclass(frozen=True)
class StepPlan:
    step: str
    status: Status
    changes: tuple[Change, ...] = ()
    # JSON-able facts for the report: replacement counts, computed UUID, ...
    details: Mapping[str, object] = field(default_factory=dict)
    # What the user must be told before the step runs; they become the
    # run's warnings (and the JSON's details["warnings"]).
    warnings: tuple[str, ...] = ()


def decide(step: str, changes: list[Change], details: Mapping[str, object] | None = None, *,
           warnings: tuple[str, ...] = ()) -> StepPlan:
    """A StepPlan that applies `changes`, or is 'already applied' when there are none."""
    return StepPlan(step, "apply" if changes else "already applied", tuple(changes), details or {}, warnings)


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

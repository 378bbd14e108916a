"""The data every layer shares, and nothing else: what was read from the
guest (GuestFile, Snapshot), what inspection found on a partition
(PartitionFacts), what the guest's own boot menu boots (BootFiles), a disk to
attach to the appliance (Drive), and the status words of a step (Status).

A leaf: it imports nothing of vsaimage, so that the adapters (guest/,
inputs/), the pure knowledge (vsa/, xen/, edits/) and the commands can all
speak of the same values without importing one another.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal

# A step's status: "apply" in a plan, "applied" once convert carried it out;
# "not applied" and "not used" are what inspect and verify find on an image
# (an edit missing, the bootloader step on a disk that boots directly).
Status = Literal["apply", "applied", "already applied", "skipped", "not applied", "not used"]


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
    """What edits may look at: the files they listed in `reads` (a pattern
    there reads every listed file it matches), and every path found under
    the directories they listed in `lists`."""

    files: Mapping[str, GuestFile]
    paths: frozenset[str] = frozenset()

    def get(self, path: str) -> GuestFile:
        return self.files.get(path) or GuestFile(path, None)

    def text(self, path: str) -> str | None:
        data = self.get(path).data
        return None if data is None else data.decode("latin-1")

    def glob(self, pattern: str) -> list[str]:
        """The listed paths a pattern of `reads` names (see expand)."""
        return expand(pattern, self.paths)


def is_pattern(path: str) -> bool:
    """Whether a path an edit reads is a pattern (`/etc/init/*.conf`,
    `/etc/lefthand/**/platform.xml.vmw`)."""
    return "/**/" in path or any(c in posixpath.basename(path) for c in "*?[")


def expand(pattern: str, paths: Iterable[str]) -> list[str]:
    """The paths of `paths` in the pattern's directory (or anywhere below
    it, after a `/**/`) whose names match its last component, sorted; a
    plain path stands for itself. Only the last component may hold
    wildcards, and they never match a `/`."""
    if not is_pattern(pattern):
        return [pattern]
    top, name = posixpath.split(pattern)
    if top.endswith("/**"):
        under = top.removesuffix("**")
        return sorted(p for p in paths if p.startswith(under) and fnmatchcase(posixpath.basename(p), name))
    return sorted(p for p in paths
                  if posixpath.dirname(p) == top and fnmatchcase(posixpath.basename(p), name))


@dataclass(frozen=True)
class PartitionFacts:
    """What inspection found on one partition of the system disk: edits that
    rewrite device names use the filesystem's UUID and label."""

    number: int
    fstype: str = ""
    label: str = ""
    uuid: str = ""
    array: str = ""  # an md array (number then only keys it), as the guest names it: /dev/md200


@dataclass(frozen=True)
class BootFiles:
    """What the guest's own GRUB 2 menu (--boot pvgrub|pygrub) boots by
    default: the Xen kernel and the repacked initrd, from its /boot."""

    loader: str  # one of xen.bootmenu.LOADERS
    kernel_version: str
    cmdline: str  # root= and the rest, as the direct xl config passes them
    fs_uuid: str  # of the filesystem holding /boot ("" when unknown)
    fs_prefix: str  # "" when /boot is a partition of its own, else "/boot"

    @property
    def title(self) -> str:
        return f"Xen guest (vsaimage): Linux {self.kernel_version}"

    def in_fs(self, guest_path: str) -> str:
        """`guest_path` as the boot loader names it inside its filesystem."""
        return self.fs_prefix + guest_path.removeprefix("/boot")


@dataclass(frozen=True)
class Drive:
    """A disk to attach to the appliance: a host path, or a network target
    with its protocol (guest/appliance.py hands `options()` to libguestfs)."""

    path: str
    readonly: bool
    format: str = "raw"
    protocol: str | None = None  # e.g. "iscsi"
    server: tuple[str, ...] = ()

    def options(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"readonly": self.readonly, "format": self.format}
        if self.protocol:
            kwargs["protocol"] = self.protocol
            kwargs["server"] = list(self.server)
        return kwargs

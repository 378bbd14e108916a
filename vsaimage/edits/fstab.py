"""Edit `fstab`: every disk the guest names must exist under Xen.

A PV domU has no /dev/sdX nor /dev/hdX: its disks are xvda (the system disk)
and xvdc..xvdi (the data disks, the table of the udev edit). An fstab entry
naming /dev/sda5 fails its fsck, and a Red Hat style rc.sysinit then stops at
a root password prompt. Such entries become `UUID=` of the filesystem that
inspection found on that partition (the name does not then depend on how the
disk is attached), else its `LABEL=` when no other partition has that label,
else the Xen device name. `UUID=`, `LABEL=`, /dev/scsi/... (made by the udev
edit) and pseudo filesystems are kept; any other /dev name is reported as a
warning naming the line. `root=` on the kernel lines of the VSA's grub config
gets the Xen device name (a kernel command line without an initrd knows no
UUID=). Only the first field of a line changes; the rest keeps its bytes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from vsaimage.edits import Change, EditContext, PartitionFacts, Snapshot, StepPlan, decide, text_write
from vsaimage.edits.textfile import require_text, split_lines
from vsaimage.vsa import grubconf

FSTAB = "/etc/fstab"
GRUB_CONFIGS = grubconf.GUEST_PATHS

_DEVICE = re.compile(r"/dev/([sh]d[a-z])(\d*)")
# The VMware VSA boots from sda (SCSI host0) and keeps its data disks on
# host1 (sdb..sdh in probe order: 7 from LeftHand OS 11.5 on); Hyper-V boots
# it from IDE (hda). Under Xen they are the disks of the xl config and of
# the udev table.
XEN_DISKS = {"sda": "xvda", "hda": "xvda", "sdb": "xvdc", "sdc": "xvdd", "sdd": "xvde",
             "sde": "xvdf", "sdf": "xvdg", "sdg": "xvdh", "sdh": "xvdi"}  # fmt: skip
SYSTEM_DISKS = frozenset({"sda", "hda"})
_KEPT_KEYS = ("UUID=", "LABEL=", "PARTUUID=", "PARTLABEL=")
# /dev names that do not depend on the disk's bus.
_KEPT_DEVICES = ("/dev/scsi/", "/dev/xvd", "/dev/md", "/dev/mapper/", "/dev/disk/by-uuid/",
                 "/dev/disk/by-label/")  # fmt: skip
_ROOT_ARG = re.compile(r"(?<=\sroot=)/dev/[sh]d[a-z]\d*(?=\s|$)")


@dataclass(frozen=True)
class Rewrite:
    file: str
    line: int
    old: str
    new: str
    why: str

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "from": self.old, "to": self.new, "why": self.why}


def xen_spec(
    spec: str, partitions: Sequence[PartitionFacts], *, by_id: bool = True
) -> tuple[str, str] | None:
    """(new spec, why) for a /dev/sdXN or /dev/hdXN name; None for any other."""
    m = _DEVICE.fullmatch(spec)
    if m is None or m.group(1) not in XEN_DISKS:
        return None
    disk, number = m.groups()
    xen = f"/dev/{XEN_DISKS[disk]}{number}"
    if disk not in SYSTEM_DISKS:
        return xen, f"data disk {disk} is {XEN_DISKS[disk]} under Xen (the udev table)"
    part = next((p for p in partitions if number and p.number == int(number)), None)
    if by_id and part is not None:
        fs = part.fstype or "a filesystem"
        if part.uuid:
            return f"UUID={part.uuid}", f"partition {number} holds {fs} UUID {part.uuid}"
        if part.label and [p.label for p in partitions].count(part.label) == 1:
            return f"LABEL={part.label}", f"partition {number} holds {fs} labelled {part.label}"
    return xen, f"the system disk {disk} is xvda under Xen"


def _kept(spec: str) -> bool:
    if spec.startswith(_KEPT_KEYS) or spec.startswith(_KEPT_DEVICES):
        return True
    # tmpfs, proc, sysfs, devpts, none, server:/export, //server/share
    return not spec.startswith("/dev/") and "=" not in spec


def _with_spec(body: str, spec: str, new: str) -> str:
    """`body` (a line without its ending) with its first field `spec` replaced
    by `new`, keeping the column of the next field when blanks allow."""
    lead = body[: len(body) - len(body.lstrip(" \t"))]
    rest = body[len(lead) + len(spec) :]
    after = rest.lstrip(" \t")
    sep = rest[: len(rest) - len(after)]
    if sep and set(sep) == {" "}:
        sep = " " * max(1, len(spec) + len(sep) - len(new))
    return lead + new + sep + after


def patch_fstab(text: str, partitions: Sequence[PartitionFacts]) -> tuple[str, list[Rewrite], list[str]]:
    """fstab with every /dev/sdXN and /dev/hdXN entry named as under Xen, the
    rewrites made, and a warning for each entry that fits no known name."""
    out: list[str] = []
    rewrites: list[Rewrite] = []
    warnings: list[str] = []
    for n, line in enumerate(split_lines(text), start=1):
        body = line.rstrip("\r\n")
        fields = body.split()
        if not fields or fields[0].startswith("#"):
            out.append(line)
            continue
        spec = fields[0]
        found = xen_spec(spec, partitions)
        if found is not None:
            new_body = _with_spec(body, spec, found[0])
            rewrites.append(Rewrite(FSTAB, n, body, new_body, found[1]))
            line = new_body + line[len(body) :]
        elif not _kept(spec) and "noauto" not in (fields[3].split(",") if len(fields) > 3 else []):
            warnings.append(f"{FSTAB}:{n} `{body.strip()}`: {spec} is not a disk name known to exist "
                            "under Xen; left as is")
        out.append(line)
    return "".join(out), rewrites, warnings


def patch_grub(text: str, path: str) -> tuple[str, list[Rewrite]]:
    """A grub (legacy) config with root=/dev/sdXN on its kernel lines named
    as under Xen."""
    out: list[str] = []
    rewrites: list[Rewrite] = []
    for n, line in enumerate(split_lines(text), start=1):
        body = line.rstrip("\r\n")
        words = body.split()
        if words and words[0] == "kernel":
            new_body, reasons = body, []
            for m in reversed(list(_ROOT_ARG.finditer(body))):
                found = xen_spec(m.group(0), (), by_id=False)
                if found is not None:
                    new_body = new_body[: m.start()] + found[0] + new_body[m.end() :]
                    reasons.append(found[1])
            if reasons:
                rewrites.append(Rewrite(path, n, body, new_body, "; ".join(reversed(reasons))))
                line = new_body + line[len(body) :]
        out.append(line)
    return "".join(out), rewrites


def _distinct(snap: Snapshot, paths: tuple[str, ...]) -> list[str]:
    """`paths` without those that lead to a file an earlier one leads to
    (menu.lst is usually a symlink to grub.conf): each file edited once."""
    seen: set[str] = set()
    out = []
    for path in paths:
        real = snap.get(path).real or path
        if real not in seen:
            seen.add(real)
            out.append(path)
    return out


class Fstab:
    name = "fstab"
    title = "Disk names that exist under Xen (fstab, grub.conf)"

    def reads(self, ctx: EditContext) -> tuple[str, ...]:
        return (FSTAB, *GRUB_CONFIGS)

    def lists(self, ctx: EditContext) -> tuple[str, ...]:
        return ()

    def plan(self, snap: Snapshot, ctx: EditContext) -> StepPlan:
        text = require_text(snap, FSTAB, self.name)
        new, rewrites, warnings = patch_fstab(text, ctx.partitions)
        changes: list[Change] = text_write(snap, FSTAB, new)
        for path in _distinct(snap, GRUB_CONFIGS):
            grub = snap.text(path)
            if grub is not None:
                new_grub, more = patch_grub(grub, path)
                changes += text_write(snap, path, new_grub)
                rewrites += more
        details: dict[str, object] = {"file": FSTAB, "rewritten": [r.as_dict() for r in rewrites]}
        return decide(self.name, changes, details, warnings=tuple(warnings))

    def check(self, snap: Snapshot, ctx: EditContext) -> bool:
        """In place when no entry and no kernel line names an sd/hd disk."""
        text = snap.text(FSTAB)
        if text is None or patch_fstab(text, ())[1]:
            return False
        return all(not patch_grub(g, p)[1] for p in GRUB_CONFIGS if (g := snap.text(p)) is not None)

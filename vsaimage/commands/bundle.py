"""What a user with a real VSA image can send back instead of the disk: the
facts inspect finds beyond the partition roles (md RAID and LVM members),
and `inspect --bundle OUT.tar.gz`, a small deterministic tarball
holding a manifest and copies of exactly the text files the edits read.

Of the binaries the PCI edit patches only the size, the mode and where the
PCI path sits in them are recorded; their bytes never leave the guest, and
nothing else from the guest goes into the bundle.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from vsaimage.edits import GuestFile, Snapshot, console, drivers, mobo_uuid, pci, platform, systemd, upstart
from vsaimage.outputs.staging import Staging, check_destination, write_bytes
from vsaimage.vsa.release import VERSION_FILE

if TYPE_CHECKING:
    from vsaimage.guest.appliance import Guest, Partition

FORMAT = 1
UDEV_RULES = "/etc/udev/rules.d"
# The text files the edits read, copied as they are.
TEXT_FILES: tuple[str, ...] = (
    mobo_uuid.PATH,
    platform.PATH,
    drivers.PATH,
    console.INITTAB,
    console.SECURETTY,
    "/etc/fstab",
    VERSION_FILE,
)
# What the console step reads of an upstart or systemd guest, where present.
CONSOLE_FILES: tuple[str, ...] = (*upstart.READS, *systemd.READS)
BINARIES: tuple[str, ...] = pci.BINARIES

MD_TYPE = "linux_raid_member"
LVM_TYPE = "LVM2_member"


# --- facts from the partition table and the root (pure) ----------------------


def md_arrays(parts: Iterable[Partition]) -> list[dict[str, Any]]:
    """md RAID members grouped by array: blkid gives each member the array's
    UUID and the set name as its label."""
    arrays: dict[str, dict[str, Any]] = {}
    for p in parts:
        if p.fstype != MD_TYPE:
            continue
        key = p.uuid or f"unknown-{p.number}"
        a = arrays.setdefault(key, {"uuid": p.uuid or None, "name": p.label or None, "members": []})
        a["members"].append(p.number)
    return sorted(arrays.values(), key=lambda a: a["members"][0])


def lvm_members(parts: Iterable[Partition]) -> list[dict[str, Any]]:
    """LVM physical volumes (blkid gives the PV UUID)."""
    return [{"partition": p.number, "uuid": p.uuid or None} for p in parts if p.fstype == LVM_TYPE]


def offsets(data: bytes, needle: bytes) -> list[int]:
    """Every offset of `needle` in `data` (overlaps included)."""
    found, i = [], data.find(needle)
    while i >= 0:
        found.append(i)
        i = data.find(needle, i + 1)
    return found


# --- reading the root (inside the launched appliance) ------------------------


@dataclass(frozen=True)
class Gathered:
    """What the bundle needs from the guest."""

    files: dict[str, GuestFile]  # text files to copy (data None: missing)
    rules_dir: bool  # /etc/udev/rules.d exists (it may be empty)
    binaries: dict[str, GuestFile]


def gather(guest: Guest, snap: Snapshot) -> Gathered:
    """Read the bundle's text files (paths resolved as in the running VSA;
    a pattern of the console step's, every listed file it matches). Files
    the snapshot already holds are not read again."""
    rules = sorted(p for p in guest.list(UDEV_RULES) if PurePosixPath(p).parent == PurePosixPath(UDEV_RULES))

    def read(path: str) -> GuestFile:
        return snap.files[path] if path in snap.files else guest.read(path)

    console_files = [p for pattern in CONSOLE_FILES for p in snap.glob(pattern)]
    have = {p: read(p) for p in (*TEXT_FILES, *rules)}
    have |= {p: f for p in console_files if (f := read(p)).data is not None or f.error is not None}
    binaries = {p: read(p) for p in BINARIES}
    rules_dir = bool(rules) or guest.read(UDEV_RULES).mode is not None
    return Gathered(have, rules_dir, binaries)


# --- the manifest and the tarball (pure) ------------------------------------


def member_name(path: str) -> str:
    return "files/" + path.lstrip("/")


def _file_entry(f: GuestFile) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": f.path}
    if f.real is not None:
        entry["resolves_to"] = f.real
    if f.data is not None:
        entry.update(status="copied", member=member_name(f.path), size=len(f.data),
                     mode=_mode(f.mode), sha256=hashlib.sha256(f.data).hexdigest())
    elif f.error is not None:
        entry.update(status="unusable", error=f.error)
    elif f.mode is not None:
        entry.update(status="not a regular file", mode=_mode(f.mode))
    else:
        entry.update(status="missing")
    return entry


def _binary_entry(f: GuestFile) -> dict[str, Any]:
    if f.data is None:
        return _file_entry(f)
    entry: dict[str, Any] = {"path": f.path}
    if f.real is not None:
        entry["resolves_to"] = f.real
    entry.update(status="present", size=len(f.data), mode=_mode(f.mode),
                 offsets={pci.REAL_PATH: offsets(f.data, pci.REAL_PATH.encode()),
                          pci.FAKE_PATH: offsets(f.data, pci.FAKE_PATH.encode())})
    return entry


def _mode(mode: int | None) -> str | None:
    return None if mode is None else f"{mode:04o}"


# Keys of the inspect document that go into the manifest as they are.
_FROM_INSPECT = ("partitions", "root", "boot", "vsa_version", "init_system", "md_arrays", "lvm",
                 "edits", "glibc", "recorded_macs", "findings")


def manifest(doc: Mapping[str, Any], gathered: Gathered, image_name: str) -> dict[str, Any]:
    """The bundle's manifest.json, from the inspect document and the files read."""
    files = [_file_entry(gathered.files[p]) for p in sorted(gathered.files)]
    rules = sum(1 for p in gathered.files if p.startswith(UDEV_RULES + "/"))
    files.append({"path": UDEV_RULES + "/", "status": "directory", "entries": rules}
                 if gathered.rules_dir else {"path": UDEV_RULES + "/", "status": "missing"})
    return {
        "bundle_format": FORMAT,
        "tool": "vsaimage",
        "tool_version": doc["tool_version"],
        "image": image_name,
        **{k: doc.get(k) for k in _FROM_INSPECT},
        "kernels": {"modules": doc.get("kernel_versions", []), "boot": doc.get("boot_kernels", [])},
        "files": sorted(files, key=lambda e: e["path"]),
        "binaries": [_binary_entry(gathered.binaries[p]) for p in sorted(gathered.binaries)],
    }


def tarball(manifest_doc: Mapping[str, Any], files: Mapping[str, GuestFile]) -> bytes:
    """manifest.json and the copied files: sorted members, mtime 0, owner
    root, mode 0644, gzip without name or timestamp. Same input, same bytes."""
    members = {"manifest.json": (json.dumps(manifest_doc, indent=2) + "\n").encode()}
    for f in files.values():
        if f.data is not None:
            members[member_name(f.path)] = f.data
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(members[name]), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(members[name]))
    return gzip.compress(raw.getvalue(), compresslevel=9, mtime=0)


# --- the output file ---------------------------------------------------------


def check_output(path: Path, *, force: bool, inputs: Sequence[Path]) -> None:
    """Before any launch: refuse an existing bundle without --force, a missing
    directory, or the input itself."""
    check_destination([path], force=force, inputs=inputs)


def write(path: Path, data: bytes) -> None:
    """Write under a temporary name beside `path`, renamed at the end."""
    with Staging([path]) as staging:
        write_bytes(staging.temp(path), data, label=path)
        staging.commit()

"""The only importer of guestfs: opening disks read-only or read-write,
launching the appliance once (falling back from KVM to TCG), counting launches,
and the few file operations the rest of vsaimage needs.

Once the root is known it is mounted at / (the boot partition where the
root's fstab puts it), and every path read, listed or written is resolved as
the running VSA would, symlinks included (paths.py), before libguestfs
touches it. glob() is the exception: its pattern goes to libguestfs's own
glob as it is (the bundle looks for systemd with it, and only its matches'
names are used).
Guest content reaches the host only as bytes returned to Python; guest paths,
symlinks and device nodes are never followed on the host.

Longer than 400 lines on purpose: it is the whole of vsaimage's surface on
libguestfs, kept in the one module that imports guestfs, so that every call
into the appliance (and its error handling) is in one place.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import shlex
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import guestfs

from vsaimage import cancel
from vsaimage.errors import ApplianceError, GuestPathError
from vsaimage.guest import paths as guestpath
from vsaimage.guest.paths import Entry, Resolved, kind_of_mode
from vsaimage.model import Drive, GuestFile
from vsaimage.progress import Progress

# read_file/write travel in one protocol message, which libguestfs caps at 4 MB;
# larger files go through download/upload with a private temporary file.
_MESSAGE_LIMIT = 2 * 2**20
# Where probe() mounts each candidate filesystem for the time of one glob.
_PROBE_TOP = "/vsaimage-p{}"
# udev's link to each labelled drive and partition in the appliance
_BY_LABEL = "/dev/disk/guestfs"

# A KVM appliance writes on its console within a second or two of qemu
# starting and keeps writing until it is up; a broken (often nested) KVM may
# instead hang silently forever. A KVM launch whose console stays silent this
# many seconds while qemu runs is abandoned and retried under TCG. Building
# the appliance before qemu starts (supermin, first run) is not counted.
KVM_SILENCE = float(os.environ.get("VSAIMAGE_KVM_TIMEOUT", "10"))

# Appliance launches in this process (the event API counts them); tests and the
# report use it to prove that a convert launches exactly once.
launch_count = 0
_count_lock = threading.Lock()


def _on_launch_done(*_args: Any) -> None:
    global launch_count
    with _count_lock:
        launch_count += 1


@dataclass(frozen=True)
class Probe:
    """What `Guest.probe` saw: the partitions it could mount, and for each
    pattern the names matching it on each partition (by number)."""

    mounted: tuple[int, ...]
    hits: dict[str, dict[int, list[str]]]


def _tcg_forced() -> bool:
    return "force_tcg" in os.environ.get("LIBGUESTFS_BACKEND_SETTINGS", "")


def _new_handle(drives: Sequence[Drive], tcg: bool) -> Any:
    g = guestfs.GuestFS(python_return_dict=True, close_on_exit=False)
    g.set_event_callback(_on_launch_done, guestfs.EVENT_LAUNCH_DONE)
    if tcg and not _tcg_forced():
        g.set_backend_settings(["force_tcg"])
    for n, d in enumerate(drives):
        try:
            g.add_drive_opts(d.path, label=_label(n), **d.options())
        except RuntimeError as e:  # e.g. a network drive that does not answer
            g.close()
            raise ApplianceError(f"cannot attach {d.path}: {_first_line(e)}",
                                 hint="run with LIBGUESTFS_DEBUG=1 to see why") from e
    return g


def _label(n: int) -> str:
    """The `n`-th drive's libguestfs label (letters only, all of one length,
    so that no label is another's partition): udev names it in the
    appliance, /dev/disk/guestfs/LABEL, whatever name its kernel gave it."""
    return "vsa" + chr(ord("a") + n // 26) + chr(ord("a") + n % 26)


def _launch(g: Any, *, watch: bool) -> None:
    """g.launch(), in this thread: libguestfs keeps its error handler per
    thread, and only the creating thread has the Python binding's silent one.
    With `watch`, a watchdog kills qemu once the appliance console has been
    silent for KVM_SILENCE seconds (a hung KVM guest)."""
    if not watch:
        g.launch()
        return
    spoke = threading.Event()
    done = threading.Event()
    # A callback replaces libguestfs's own printing of these messages, which
    # LIBGUESTFS_DEBUG=1 asks for.
    verbose = g.get_verbose()

    def on_console(_event: int, _handle: int, buf: str, _array: Any) -> None:
        spoke.set()
        if verbose:
            sys.stderr.write(buf)

    def watchdog() -> None:
        quiet_since = time.monotonic()
        while not done.wait(0.5):
            if spoke.is_set() or not cancel.qemu_children():
                spoke.clear()
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KVM_SILENCE:
                cancel.kill_qemu_children()
                return

    handle = g.set_event_callback(on_console, guestfs.EVENT_APPLIANCE)
    threading.Thread(target=watchdog, daemon=True).start()
    try:
        g.launch()
    finally:
        done.set()
        g.delete_event_callback(handle)


def launch(drives: Sequence[Drive], progress: Progress) -> Guest:
    """Start the appliance with `drives` attached. Uses KVM when it works and
    falls back to TCG (software emulation) when a KVM launch fails or hangs."""
    tcg = _tcg_forced() or not os.access("/dev/kvm", os.R_OK | os.W_OK)
    for d in drives:
        access = "read-only" if d.readonly else "read-write"
        progress.debug(f"appliance drive: {d.path} ({d.format}, {access})")
    if tcg:
        why = "LIBGUESTFS_BACKEND_SETTINGS asks for it" if _tcg_forced() else "no usable /dev/kvm"
        progress.debug(f"appliance: TCG, software emulation ({why})")
    else:
        progress.debug(f"appliance: KVM, TCG if its launch fails or is silent for {KVM_SILENCE:.0f} s")
    g = _new_handle(drives, tcg)
    try:
        _launch(g, watch=not tcg)
    except RuntimeError as e:
        g.close()
        if tcg:
            raise ApplianceError(f"appliance launch failed: {_first_line(e)}",
                                 hint="run with LIBGUESTFS_DEBUG=1 to see the appliance's log") from e
        progress.warn(f"KVM appliance launch failed ({_first_line(e)}); retrying with TCG")
        g = _new_handle(drives, True)
        try:
            g.launch()
        except RuntimeError as e2:
            g.close()
            raise ApplianceError(f"appliance launch failed under TCG too: {_first_line(e2)}",
                                 hint="run with LIBGUESTFS_DEBUG=1 to see the appliance's log") from e2
    return Guest(g)


def _stop_inactive(members: Sequence[str]) -> str:
    """Shell lines stopping every array md holds inactive (not running) with
    one of `members` among its devices."""
    names = " ".join(m.removeprefix("/dev/") for m in members)
    return (f"for m in {names}; do for h in /sys/class/block/$m/holders/md*; do "
            '[ -e "$h/md/array_state" ] && [ "$(cat "$h/md/array_state")" = inactive ] && '
            'mdadm --stop "/dev/${h##*/}"; '
            "done; done")


def _qemu_reads(pids: Sequence[int]) -> int:
    """The bytes the qemu processes `pids` have read (rchar)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                if line.startswith("rchar:"):
                    total += int(line.split()[1])
    return total


@contextlib.contextmanager
def _reads_reported(total: int, progress: Callable[[int], None]) -> Iterator[None]:
    """While the body runs, report to `progress` what qemu has read since
    it began, below `total` (reads are an estimate: the body's end says
    when all is done)."""
    pids = cancel.qemu_children()  # the appliance's: found once, not at each look
    start = _qemu_reads(pids)
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.5):
            progress(max(0, min(_qemu_reads(pids) - start, total * 99 // 100)))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@dataclass(frozen=True)
class Room:
    """A guest filesystem's free room (statvfs), and where it is mounted."""

    free: int  # bytes an unprivileged writer may still use
    block: int  # bytes
    inodes: int  # free inodes
    size: int  # bytes, the whole filesystem
    mountpoint: str  # in the guest's tree
    partition: Partition | None


@dataclass(frozen=True)
class Partition:
    number: int
    device: str  # appliance device, e.g. /dev/sda5
    start: int  # bytes
    size: int  # bytes
    mbr_id: int | None  # partition type byte on MBR disks
    fstype: str  # "" when no filesystem was recognised
    label: str
    uuid: str
    array: str = ""  # an md array, as the guest names it (/dev/md200): `number` then only keys it
    # A lone member of that array standing for it (--degraded): mounted with
    # its filesystem type given, since blkid sees only the md superblock.
    member: bool = False

    def as_dict(self) -> dict[str, object]:
        if self.array:
            return {"array": self.array, "size": self.size, "fstype": self.fstype or None,
                    "label": self.label or None, "uuid": self.uuid or None}
        return {
            "number": self.number,
            "start": self.start,
            "size": self.size,
            "mbr_id": None if self.mbr_id is None else f"0x{self.mbr_id:02x}",
            "fstype": self.fstype or None,
            "label": self.label or None,
            "uuid": self.uuid or None,
        }


class Guest:
    """A launched appliance. Use as a context manager: leaving it shuts the
    appliance down cleanly (which flushes writes) and closes the handle."""

    def __init__(self, g: Any) -> None:
        self.g = g
        self._fenced: tuple[str, ...] = ()
        # lstat results by symlink-free path; writes and mounts clear it
        self._entries: dict[str, Entry | None] = {}
        # mount point -> (partition, mounted read-write), in mount order
        self._mounts: dict[str, tuple[Partition, bool]] = {}
        # partition devices the appliance's kernel keeps read-only (protect)
        self._protected: set[str] = set()
        # the appliance kernel's names of the drives and partitions -> the
        # API's (kernel_names)
        self._kernel: dict[str, str] | None = None
        self._labels: dict[str, str] | None = None  # _labelled()

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(clean=exc[0] is None)

    def close(self, *, clean: bool = True) -> None:
        try:
            if clean:
                self.g.umount_all()
                self.g.shutdown()
        except RuntimeError as e:
            raise ApplianceError(f"appliance shutdown failed: {_first_line(e)}") from e
        finally:
            self.g.close()

    # --- partitions ---------------------------------------------------------

    def _labelled(self) -> dict[str, str]:
        """Label -> API device of every drive (its launch order: _label) and
        of each partition its kernel found (the drive's label and the
        number), as udev linked them before the launch ended. One call
        without a program run, where list_devices and list_partitions each
        run udevadm settle (0.2 s under TCG)."""
        if self._labels is None:
            self._labels = dict(self.g.list_disk_labels())
        return self._labels

    def devices(self) -> list[str]:
        """The drives, in the order they were attached."""
        drive = len(_label(0))
        return [d for label, d in sorted(self._labelled().items()) if len(label) == drive]

    def _label_of(self, device: str) -> str:
        return next(k for k, d in self._labelled().items() if d == device)

    def _partition_devices(self, device: str) -> list[str]:
        """The partitions of the drive `device`, by number."""
        labelled = self._labelled()
        label = self._label_of(device)
        numbers = [k[len(label):] for k in labelled if k.startswith(label)]
        return [labelled[label + n] for n in sorted((n for n in numbers if n.isdigit()), key=int)]

    def partitions(self, device: str) -> list[Partition]:
        """The partitions the appliance's kernel found on `device`, by
        number. blkid's low-level probe gives position, size, MBR type byte,
        filesystem type, label and UUID; list_filesystems() would probe far
        more, and parted (part_list) prints its own errors on stderr for
        damaged tables."""
        devices = self._partition_devices(device)
        probed = self._blkid(devices)
        parts = []
        for dev in devices:
            info = probed.get(dev, {})
            mbr = info.get("PART_ENTRY_TYPE", "")
            parts.append(Partition(
                int(dev[len(device):]), dev,
                int(info.get("PART_ENTRY_OFFSET", 0)) * 512, int(info.get("PART_ENTRY_SIZE", 0)) * 512,
                int(mbr, 16) if mbr.startswith("0x") else None,
                info.get("TYPE", ""), info.get("LABEL", ""), info.get("UUID", ""),
            ))
        return parts

    def _blkid(self, devices: Sequence[str]) -> dict[str, dict[str, str]]:
        """What the API's blkid says of each of `devices` (`blkid -p`), from
        one run of blkid in the appliance's shell: each API call runs a
        blkid of its own, 0.13-0.23 s under TCG (1 s for a VSA's seven
        partitions, against 0.25 s for one run). A device blkid cannot
        probe (damaged, ambivalent) is left out, as the API's error was
        taken for no information."""
        if not devices:
            return {}
        # Named by their labels' links: the shell's programs see the
        # kernel's names, which may not be the API's (kernel_names).
        api = {f"{_BY_LABEL}/{self._label_of(d)}": d for d in devices}
        listed = self._shell("blkid -c /dev/null -p -o export " + " ".join(shlex.quote(k) for k in api))
        found: dict[str, dict[str, str]] = {}
        for block in listed.split("\n\n"):
            info = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
            if info.get("DEVNAME") in api:
                found[api[info["DEVNAME"]]] = info
        return found

    # --- md arrays (md.py makes sense of them) ------------------------------

    def md_devices(self) -> list[str]:
        """The md arrays the appliance assembled at launch."""
        return list(self.g.list_md_devices())

    def md_detail(self, device: str) -> dict[str, str]:
        """mdadm --detail --export of an array: level, devices (how many it
        should have), metadata, uuid, name."""
        return dict(self.g.md_detail(device))

    def md_members(self, device: str) -> list[tuple[str, str]]:
        """(member device, md's flags: F faulty, S spare, ...) of an array.
        md_stat names the members as the kernel does (kernel_names)."""
        api = self.kernel_names()
        return [(api.get(m["mdstat_device"], m["mdstat_device"]), m["mdstat_flags"])
                for m in self.g.md_stat(device)]

    def kernel_names(self) -> dict[str, str]:
        """The appliance kernel's device names of the drives and their
        partitions -> the names the API calls them by. They differ: on a
        busy machine the kernel was seen naming the first drive /dev/sdc and
        the appliance's own disk /dev/sdb, while the API's /dev/sda stays
        the first drive. Calls that pass text to the kernel's programs
        (the debug shell, mdadm's lists) need the kernel's names."""
        if self._kernel is None:
            # udev's links are relative, ../../sdc1: one find, no readlink each
            listed = self._shell(f"find {_BY_LABEL} -mindepth 1 -maxdepth 1 -type l -printf '%f %l\\n'")
            labels = self._labelled()
            self._kernel = {}
            for line in listed.splitlines():
                label, _, target = line.partition(" ")
                if label in labels and target.startswith("../../"):
                    self._kernel["/dev/" + target.removeprefix("../../")] = labels[label]
        return self._kernel

    def kernel_device(self, device: str) -> str:
        """The appliance kernel's name for the API's `device` (kernel_names)."""
        return next((k for k, api in self.kernel_names().items() if api == device), device)

    def device_size(self, device: str) -> int:
        return int(self.g.blockdev_getsize64(device))

    def read_device(self, device: str, offset: int, size: int) -> bytes:
        """Bytes of a block device (an md member's superblock)."""
        return bytes(self.g.pread_device(device, size, offset))

    def write_device(self, device: str, offset: int, data: bytes) -> None:
        """Bytes written to a block device (an md member's superblock)."""
        done = 0
        while done < len(data):
            done += int(self.g.pwrite_device(device, data[done:], offset + done))

    def release(self, members: Sequence[str]) -> None:
        """Stop the arrays md holds inactive with any of `members`: udev's
        incremental assembly claims a member whose other members it has not
        seen without running the array, and the member can be neither
        mounted alone (--degraded) nor assembled with the others until
        then. Running arrays are left alone; a member still held fails its
        mount, with the mount's error."""
        self._shell(_stop_inactive([self.kernel_device(m) for m in members]))

    def assemble(self, members: Sequence[str]) -> str:
        """Assemble the array of `members` (every one of its members, in no
        running array) as udev does, and return what mdadm said. The
        inactive arrays holding any of them are stopped, udev is let finish
        what that set off (it may claim a member again), then each member
        goes to `mdadm --incremental`: it joins the array of its set, made
        by udev or by the first member, and the last one starts it."""
        kernel = [self.kernel_device(m) for m in members]
        return self._shell(f"udevadm settle; {_stop_inactive(kernel)}; udevadm settle; "
                           f"for m in {' '.join(kernel)}; do mdadm --incremental \"$m\"; done")

    def _shell(self, script: str) -> str:
        """What a script run by the appliance's shell printed, both streams.
        libguestfs has no call for mdadm's assembly; its debug shell runs
        mdadm. The exit status is no error: callers check the arrays."""
        try:
            return str(self.g.debug("sh", [f"{{ {script}; }} 2>&1; true"]))
        except RuntimeError as e:
            return _first_line(e)

    def md_stop(self, device: str) -> None:
        """Stop an array: md writes every member's superblock, clean."""
        self.g.md_stop(device)

    def volume(self, device: str, number: int, name: str, *, member_fs: str | None = None) -> Partition:
        """An md array as the roles see a partition: `number` (no partition
        has it) keys it, `name` is how the guest calls it (/dev/md200).
        `member_fs`: `device` is a lone member holding the array's data at
        its start, with this filesystem (--degraded)."""
        try:
            info = self.g.blkid(device)
        except RuntimeError:
            info = {}
        if member_fs is not None:
            return Partition(number, device, 0, self.device_size(device), None, member_fs, "",
                             "", array=name, member=True)
        return Partition(number, device, 0, self.device_size(device), None, info.get("TYPE", ""),
                         info.get("LABEL", ""), info.get("UUID", ""), array=name)

    # --- finding the roles, then mounting as the running VSA does ------------

    def probe(self, parts: Sequence[Partition], patterns: Sequence[str]) -> Probe:
        """Which of `parts` hold something matching each pattern (a glob
        relative to the filesystem's top), all looked at in one glob per
        pattern: each filesystem is mounted read-only at /vsaimage-p<N> for
        the time of the probe. Symlinks are not followed here (an absolute
        one would point into the appliance): a match says a name is there,
        and the caller confirms with the partition mounted at /. Nothing
        else may be mounted: the probe's mounts go with one umount_all
        (0.2 s for a VSA's five filesystems, 0.9 s one by one)."""
        assert not self._mounts, "probe() with filesystems mounted"
        mounted: list[Partition] = []
        try:
            for p in parts:
                where = _PROBE_TOP.format(p.number)
                self.g.mkmountpoint(where)
                try:
                    self._mount(p, where, writable=False)
                    mounted.append(p)
                except RuntimeError:  # damaged or foreign: simply not a candidate
                    self.g.rmmountpoint(where)
            hits: dict[str, dict[int, list[str]]] = {}
            for pattern in patterns:
                found = hits.setdefault(pattern, {})
                for h in self.g.glob_expand(_PROBE_TOP.format("*") + "/" + pattern):
                    top, _, rest = h.lstrip("/").partition("/")
                    found.setdefault(int(top.removeprefix("vsaimage-p")), []).append(rest.rstrip("/"))
        finally:
            self.g.umount_all()
            for p in mounted:
                self.g.rmmountpoint(_PROBE_TOP.format(p.number))
        return Probe(tuple(m.number for m in mounted), hits)

    def protect(self, device: str) -> None:
        """Keep every partition of `device` read-only in the appliance's
        kernel until a read-write mount asks for one: a disk converted in
        place is the user's, and a partition no edit writes (the other
        system slot, the logs, the configuration) must keep its bytes. A
        filesystem on a read-only device replays no journal and cleans up
        no orphan, which a read-only mount alone may do."""
        for dev in self._partition_devices(device):
            self.g.blockdev_setro(dev)
            self._protected.add(dev)

    def mount(self, part: Partition, where: str = "/", *, writable: bool = False) -> None:
        """Mount `part` at `where` in the guest's tree (the root first, at /)."""
        target = where if where == "/" else self.resolve(where).real
        try:
            if writable and part.device in self._protected:
                self.g.blockdev_setrw(part.device)
                self._protected.discard(part.device)
            self._mount(part, target, writable=writable)
        except RuntimeError as e:
            raise ApplianceError(f"cannot mount partition {part.number} ({part.device}) on {where}: "
                                 f"{_first_line(e)}") from e
        self._mounts[target] = (part, writable)
        self._entries.clear()

    def _mount(self, part: Partition, target: str, *, writable: bool) -> None:
        if part.member:
            self.g.mount_vfs("" if writable else "ro", part.fstype, part.device, target)
        elif writable:
            self.g.mount(part.device, target)
        else:
            self.g.mount_ro(part.device, target)

    def make_writable(self, paths: Sequence[str]) -> None:
        """Remount read-write each filesystem mounted read-only that one of
        `paths` leads into (the filesystem holding it: the deepest mount
        point above it). Only those: a read-write mount alone rewrites a
        filesystem's superblock. The root is mounted again with the
        filesystems below it, as they were."""
        wanted = set()
        for p in paths:
            real = self.resolve(p).real
            holder = max((t for t in self._mounts if guestpath.under(real, t)), key=len, default=None)
            if holder is not None and not self._mounts[holder][1]:
                wanted.add(holder)
        if "/" in wanted:
            mounts = list(self._mounts.items())
            self.unmount_all()
            for target, (part, writable) in mounts:
                self.mount(part, target, writable=writable or target in wanted)
            return
        for target in sorted(wanted):
            part, _ = self._mounts.pop(target)
            self.g.umount(target)
            self.mount(part, target, writable=True)

    def unmount_all(self) -> None:
        self.g.umount_all()
        self._mounts.clear()
        self._entries.clear()

    def fence(self, mountpoints: Sequence[str]) -> None:
        """Mount points of the guest's other filesystems: paths leading there
        are refused (the edits only touch the root filesystem)."""
        self._fenced = tuple(mountpoints)

    # --- paths as the guest sees them ---------------------------------------

    def _lookup(self, path: str) -> Entry | None:
        if path not in self._entries:
            self._entries[path] = self._lookup_many([path])[0]
        return self._entries[path]

    def _lookup_many(self, paths: list[str]) -> list[Entry | None]:
        """lstat of symlink-free paths, one call per directory (lstatnslist
        takes names in one directory and reports absent ones, silently)."""
        by_dir: dict[str, list[str]] = {}
        for p in paths:
            by_dir.setdefault(posixpath.dirname(p), []).append(posixpath.basename(p))
        found: dict[str, Entry | None] = {}
        for directory, names in by_dir.items():
            stats = self.g.lstatnslist(directory, names)
            links = [n for n, st in zip(names, stats, strict=True)
                     if st["st_ino"] != -1 and kind_of_mode(st["st_mode"]) == "link"]
            targets = dict(zip(links, self.g.readlinklist(directory, links), strict=True)) if links else {}
            for n, st in zip(names, stats, strict=True):
                path = posixpath.join(directory, n)
                if st["st_ino"] == -1:
                    found[path] = None
                else:
                    mode = int(st["st_mode"])
                    found[path] = Entry(kind_of_mode(mode), mode & 0o7777, int(st["st_size"]), targets.get(n))
        return [found[p] for p in paths]

    def resolve(self, path: str) -> Resolved:
        """Where `path` leads inside the guest; GuestPathError when it is a
        dangling symlink, a loop or a place the edits must not touch."""
        return guestpath.resolve(path, self._lookup, fenced=self._fenced)

    def glob(self, pattern: str) -> list[str]:
        """Guest paths matching `pattern`, by libguestfs's glob inside the guest:
        the pattern is not resolved as the VSA would (see the docstring)."""
        return list(self.g.glob_expand(pattern))

    def list(self, directory: str) -> set[str]:
        """Every path under `directory`, symlinked directories followed."""
        def find(real: str) -> list[str]:
            return [n.lstrip("/") for n in self.g.find(real)]

        return guestpath.tree(directory, self._lookup, find, self._lookup_many, fenced=self._fenced)

    def read(self, path: str) -> GuestFile:
        """The file at `path` (symlinks followed inside the guest) with its
        mode; data None when it is missing or not a regular file, and the
        reason when the path leads nowhere usable."""
        return guestpath.read(path, self.resolve, self._fetch)

    def _fetch(self, real: str) -> bytes:
        """A file's bytes. pread is one daemon call; read_file goes through
        libguestfs's file-transfer protocol, which under TCG costs 0.2 to
        0.7 s per file whatever its size (measured: 18 small files read for
        a plan took 7 s that way, 0.1 s by pread)."""
        entry = self._lookup(real)
        if entry is not None and entry.size <= _MESSAGE_LIMIT:
            if entry.size == 0:
                return b""
            data = bytes(self.g.pread(real, entry.size, 0))
            # one pread of a regular file returns it whole, unless it changed
            # since its lstat: then the transfer protocol reads what is there
            return data if len(data) == entry.size else bytes(self.g.read_file(real))
        with tempfile.NamedTemporaryFile(prefix="vsaimage-") as tmp:
            self.g.download(real, tmp.name)
            return Path(tmp.name).read_bytes()

    # --- writing ------------------------------------------------------------

    def write(self, path: str, data: bytes, mode: int) -> None:
        """Write `path` where it leads (a symlink stays a symlink, its target
        gets the data), creating parents 0755. An existing file keeps its
        owner; a new one belongs to root, as everything the edits touch."""
        r = self.resolve(path)
        if r.kind not in (None, "file"):
            raise GuestPathError(f"{path}: not a regular file ({r.real})")
        self.g.mkdir_p(posixpath.dirname(r.real))
        if len(data) <= _MESSAGE_LIMIT:
            self.g.write(r.real, data)
        else:
            with tempfile.NamedTemporaryFile(prefix="vsaimage-") as tmp:
                tmp.write(data)
                tmp.flush()
                self.g.upload(tmp.name, r.real)
        self.g.chmod(mode, r.real)
        self._entries.clear()

    def symlink(self, path: str, target: str) -> None:
        """Make `path` a symlink to `target` (stored as given), replacing a
        link or file there, its directory resolved as the VSA would and
        created 0755."""
        parent = self.resolve(posixpath.dirname(path))
        real = posixpath.join(parent.real, posixpath.basename(path))
        entry = self._lookup(real) if parent.kind == "dir" else None
        if entry is not None and entry.kind not in ("file", "link"):
            raise GuestPathError(f"{path}: not a regular file or symlink ({real})")
        self.g.mkdir_p(parent.real)
        self.g.ln_sf(target, real)
        self._entries.clear()

    def holds(self, source: Path, path: str) -> bool:
        """Whether `path` is a file with the bytes of the host file `source`
        (sha256 in the appliance; read-only)."""
        r = self.resolve(path)
        if r.kind not in (None, "file"):
            raise GuestPathError(f"{path}: not a regular file ({r.real})")
        if r.kind != "file" or self.file_size(path) != source.stat().st_size:
            return False
        digest = hashlib.sha256()
        with source.open("rb") as f:
            while chunk := f.read(2**20):
                digest.update(chunk)
        return bool(self.g.checksum("sha256", r.real) == digest.hexdigest())

    def upload(self, source: Path, path: str) -> None:
        """Copy the host file `source` to `path` (mode 0644, parents 0755)."""
        r = self.resolve(path)
        if r.kind not in (None, "file"):
            raise GuestPathError(f"{path}: not a regular file ({r.real})")
        self.g.mkdir_p(posixpath.dirname(r.real))
        self.g.upload(str(source), r.real)
        self.g.chmod(0o644, r.real)
        self._entries.clear()

    def file_size(self, path: str) -> int:
        """The size of the file `path` leads to; 0 when there is none."""
        r = self.resolve(path)
        entry = self._lookup(r.real) if r.kind == "file" else None
        return entry.size if entry is not None else 0

    def room(self, path: str) -> Room:
        """Room left to an unprivileged writer on the filesystem that holds
        `path` (or would: its nearest existing parent), and which that is."""
        real = self.resolve(path).real
        # from the top down: a missing directory's children cannot be listed
        here = "/"
        for name in (n for n in real.split("/") if n):
            below = posixpath.join(here, name)
            if self._lookup(below) is None:
                break
            here = below
        real = here
        st = self.g.statvfs(real)
        top = max((t for t in self._mounts if guestpath.under(real, t)), key=len, default="/")
        part = self._mounts[top][0] if top in self._mounts else None
        return Room(int(st["bavail"]) * int(st["bsize"]), int(st["bsize"]), int(st["favail"]),
                    int(st["blocks"]) * int(st["frsize"]), top, part)

    def tar_in(self, tarball: Path, directory: str,
               progress: Callable[[int], None] | None = None) -> None:
        """Unpack an uncompressed tarball into `directory`. libguestfs sends
        no progress events for tar_in, so the tarball is fed to it through a
        pipe and `progress` gets the bytes sent so far."""
        where = self.resolve(directory).real
        self.g.mkdir_p(where)
        self._entries.clear()
        if progress is None:
            self.g.tar_in(str(tarball), where)
            return
        rfd, wfd = os.pipe()

        def feed() -> None:
            sent = 0
            try:
                with open(tarball, "rb") as f, os.fdopen(wfd, "wb") as out:
                    while chunk := f.read(2**20):
                        out.write(chunk)
                        sent += len(chunk)
                        progress(sent)
            except BrokenPipeError:  # tar_in failed and stopped reading
                pass

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            self.g.tar_in(f"/dev/fd/{rfd}", where)
        finally:
            os.close(rfd)
            feeder.join()

    def copy_tree(self, device: str, directory: str, total: int, progress: Callable[[int], None]) -> None:
        """Copy the tree on the filesystem of the appliance's `device` (an
        image attached read-only) into `directory` as `cp -a` does: modes,
        owners, mtimes, hard links and symlinks kept, files already there
        overwritten (as tar_in does). It happens inside the appliance: none
        of its bytes cross the libguestfs channel.

        One cp for the whole tree: each call runs a cp of its own, and the
        153 pieces the Debian tree was once cut into for progress cost 6 s
        of a 26 s copy. `progress` gets an estimate of the bytes copied of
        `total` instead: what qemu has read since the copy began, which is
        mostly the image's blocks, polled twice a second (libguestfs sends
        no progress for cp_a). The filesystem is mounted read-only at a
        hidden directory made beside `directory`, removed after (libguestfs
        mounts only inside the guest's tree once its root is mounted). The
        image was filled on the host while the appliance booted: what its
        kernel read of the device before is dropped first."""
        where = self.resolve(directory).real
        parent = posixpath.dirname(where)
        self.g.mkdir_p(where)
        mount = posixpath.join(parent, f".vsaimage-payload-{os.getpid()}")
        self._entries.clear()
        self.g.blockdev_flushbufs(device)
        self.g.mkdir(mount)
        try:
            self.g.mount_ro(device, mount)
            try:
                with _reads_reported(total, progress):
                    self.g.cp_a(f"{mount}/.", where)
            finally:
                self.g.umount(mount)
        finally:
            self.g.rmdir(mount)
            self._entries.clear()
        progress(total)

    def sync(self) -> None:
        self.g.sync()

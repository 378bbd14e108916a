"""The only importer of guestfs: opening disks read-only or read-write,
launching the appliance once (falling back from KVM to TCG), counting launches,
and the few file operations the rest of vsaimage needs.

Guest content reaches the host only as bytes returned to Python; guest paths,
symlinks and device nodes are never followed on the host.
"""

from __future__ import annotations

import contextlib
import os
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
from vsaimage.edits import GuestFile
from vsaimage.errors import ApplianceError

# read_file/write travel in one protocol message, which libguestfs caps at 4 MB;
# larger files go through download/upload with a private temporary file.
_MESSAGE_LIMIT = 2 * 2**20

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
class Drive:
    """A disk to attach: a host path, or a network target with its protocol."""

    path: str
    readonly: bool
    format: str = "raw"
    protocol: str | None = None  # e.g. "iscsi"
    server: tuple[str, ...] = ()

    def add_to(self, g: Any) -> None:
        kwargs: dict[str, Any] = {"readonly": self.readonly, "format": self.format}
        if self.protocol:
            kwargs["protocol"] = self.protocol
            kwargs["server"] = list(self.server)
        g.add_drive_opts(self.path, **kwargs)


def _tcg_forced() -> bool:
    return "force_tcg" in os.environ.get("LIBGUESTFS_BACKEND_SETTINGS", "")


def _new_handle(drives: Sequence[Drive], tcg: bool) -> Any:
    g = guestfs.GuestFS(python_return_dict=True, close_on_exit=False)
    g.set_event_callback(_on_launch_done, guestfs.EVENT_LAUNCH_DONE)
    if tcg and not _tcg_forced():
        g.set_backend_settings(["force_tcg"])
    for d in drives:
        try:
            d.add_to(g)
        except RuntimeError as e:  # e.g. a network drive that does not answer
            g.close()
            raise ApplianceError(f"cannot attach {d.path}: {_first_line(e)}",
                                 hint="run with LIBGUESTFS_DEBUG=1 to see why") from e
    return g


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


def launch(drives: Sequence[Drive], *, warn: Callable[[str], None]) -> Guest:
    """Start the appliance with `drives` attached. Uses KVM when it works and
    falls back to TCG (software emulation) when a KVM launch fails or hangs."""
    tcg = _tcg_forced() or not os.access("/dev/kvm", os.R_OK | os.W_OK)
    g = _new_handle(drives, tcg)
    try:
        _launch(g, watch=not tcg)
    except RuntimeError as e:
        g.close()
        if tcg:
            raise ApplianceError(f"appliance launch failed: {_first_line(e)}",
                                 hint="run with LIBGUESTFS_DEBUG=1 to see the appliance's log") from e
        warn(f"KVM appliance launch failed ({_first_line(e)}); retrying with TCG")
        g = _new_handle(drives, True)
        try:
            g.launch()
        except RuntimeError as e2:
            g.close()
            raise ApplianceError(f"appliance launch failed under TCG too: {_first_line(e2)}",
                                 hint="run with LIBGUESTFS_DEBUG=1 to see the appliance's log") from e2
    return Guest(g)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


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

    def as_dict(self) -> dict[str, object]:
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
        self._mountpoints: set[str] = set()

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

    def devices(self) -> list[str]:
        return list(self.g.list_devices())

    def partitions(self, device: str) -> list[Partition]:
        """The partitions the appliance's kernel found on `device`. One blkid
        per partition gives position, size, MBR type byte, filesystem type,
        label and UUID; list_filesystems() would probe far more, and parted
        (part_list) prints its own errors on stderr for damaged tables."""
        parts = []
        for dev in self.g.list_partitions():
            if not dev.startswith(device) or not dev[len(device):].isdigit():
                continue
            try:
                info = self.g.blkid(dev)
            except RuntimeError:
                info = {}
            mbr = info.get("PART_ENTRY_TYPE", "")
            parts.append(Partition(
                int(dev[len(device):]), dev,
                int(info.get("PART_ENTRY_OFFSET", 0)) * 512, int(info.get("PART_ENTRY_SIZE", 0)) * 512,
                int(mbr, 16) if mbr.startswith("0x") else None,
                info.get("TYPE", ""), info.get("LABEL", ""), info.get("UUID", ""),
            ))
        return sorted(parts, key=lambda p: p.number)

    # --- mounting -----------------------------------------------------------
    # Filesystems are mounted at /vsaimage/p<N> inside the appliance, several
    # at once, so that a single glob can look into all of them. `root` is the
    # prefix every guest path below is resolved under.

    root = ""

    def mountpoint(self, part: Partition) -> str:
        return f"/vsaimage-p{part.number}"

    def mount(self, part: Partition, *, readonly: bool) -> str:
        where = self.mountpoint(part)
        try:
            if where not in self._mountpoints:
                self.g.mkmountpoint(where)
                self._mountpoints.add(where)
            if readonly:
                self.g.mount_ro(part.device, where)
            else:
                self.g.mount(part.device, where)
        except RuntimeError as e:
            raise ApplianceError(f"cannot mount partition {part.number} ({part.device}): "
                                 f"{_first_line(e)}") from e
        return where

    def umount(self, part: Partition) -> None:
        self.g.umount(self.mountpoint(part))

    def glob(self, pattern: str) -> list[str]:
        return list(self.g.glob_expand(pattern))

    def use_root(self, part: Partition) -> None:
        """Resolve guest paths under this (mounted) partition from now on."""
        self.root = self.mountpoint(part)

    # --- reading ------------------------------------------------------------

    def find(self, directory: str) -> list[str]:
        """Every path under `directory` (absolute, in guest terms), or []."""
        where = self.root + directory
        if not self.g.is_dir(where, followsymlinks=False):
            return []
        base = directory.rstrip("/")
        # find returns names relative to the directory, each with a leading /
        return [base + p for p in self.g.find(where)]

    def read(self, path: str) -> GuestFile:
        """The file at `path` as bytes with its mode; data None when it is
        missing or not a regular file (symlinks are reported, not followed)."""
        where = self.root + path
        try:
            st = self.g.lstatns(where)
        except RuntimeError:
            return GuestFile(path, None)
        mode = int(st["st_mode"])
        kind = mode & 0o170000
        if kind == 0o120000:
            return GuestFile(path, None, mode & 0o7777, self.g.readlink(where))
        if kind != 0o100000:
            return GuestFile(path, None, mode & 0o7777)
        if int(st["st_size"]) <= _MESSAGE_LIMIT:
            data = self.g.read_file(where)
        else:
            with tempfile.NamedTemporaryFile(prefix="vsaimage-") as tmp:
                self.g.download(where, tmp.name)
                data = Path(tmp.name).read_bytes()
        return GuestFile(path, bytes(data), mode & 0o7777)

    def read_many(self, paths: Sequence[str], existing: set[str]) -> dict[str, GuestFile]:
        """Read `paths`; those not in `existing` (a listing of their
        directories) are missing and cost no call, nor an error line from
        libguestfs on stderr."""
        return {p: self.read(p) if p in existing else GuestFile(p, None) for p in paths}

    # --- writing ------------------------------------------------------------

    def write(self, path: str, data: bytes, mode: int) -> None:
        """Write `path`, creating parents 0755. An existing file keeps its
        owner; a new one belongs to root, as everything the edits touch."""
        where = self.root + path
        self.g.mkdir_p(where.rsplit("/", 1)[0])
        if len(data) <= _MESSAGE_LIMIT:
            self.g.write(where, data)
        else:
            with tempfile.NamedTemporaryFile(prefix="vsaimage-") as tmp:
                tmp.write(data)
                tmp.flush()
                self.g.upload(tmp.name, where)
        self.g.chmod(mode, where)

    def tar_in(self, tarball: Path, directory: str,
               progress: Callable[[int], None] | None = None) -> None:
        """Unpack an uncompressed tarball into `directory`. libguestfs sends
        no progress events for tar_in, so the tarball is fed to it through a
        pipe and `progress` gets the bytes sent so far."""
        where = self.root + directory
        self.g.mkdir_p(where)
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

    def sync(self) -> None:
        self.g.sync()


@contextlib.contextmanager
def session(drives: Sequence[Drive], *, warn: Callable[[str], None]) -> Iterator[Guest]:
    guest = launch(drives, warn=warn)
    with guest:
        yield guest

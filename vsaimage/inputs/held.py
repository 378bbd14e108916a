"""Who else writes a disk: `convert --in-place` must not edit the
filesystems of a VSA that is running (its domain would see them change
under it, and overwrite the edits with its own cached blocks).

A running Xen domain holds its disk in one of three ways, each visible
without root: blkback on a loop device set up by the `block` hotplug script
(the loop device's backing file, in sysfs), QEMU's qdisk backend (QEMU's
image lock, which `qemu-img info` meets), or blkback on a block device
itself (an exclusive open of the device fails). A process that opened it
for writing shows in /proc/PID/fdinfo, for the processes this user may see.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from vsaimage import tools

# What qemu-io says when it cannot open the image for writing because
# another QEMU holds it (its image lock; qemu-io writes nothing to open).
_QEMU_LOCKED = 'Failed to get "write" lock'


def holders(path: Path, fmt: str) -> list[str]:
    """What holds the disk at `path` (a file or block device in `fmt`) open
    for writing, one phrase each; empty when nothing does."""
    st = path.stat()
    found = _loop_devices(path, st) + _processes(st) + _qemu_lock(path, fmt)
    if stat.S_ISBLK(st.st_mode) and not found and _busy(path):
        found.append("the kernel (it is mounted, or attached to a running domain)")
    return found


def _same(st: os.stat_result, other: os.stat_result) -> bool:
    if stat.S_ISBLK(st.st_mode):
        return stat.S_ISBLK(other.st_mode) and st.st_rdev == other.st_rdev
    return (st.st_dev, st.st_ino) == (other.st_dev, other.st_ino)


def _loop_devices(path: Path, st: os.stat_result) -> list[str]:
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        with contextlib.suppress(OSError):
            name = backing.read_text().strip().removesuffix(" (deleted)")
            if _same(st, os.stat(name)):
                found.append(f"loop device /dev/{backing.parent.parent.name} (a running domain's disk?)")
    return found


def _processes(st: os.stat_result) -> list[str]:
    """Open file descriptions with write access on the disk, among the
    processes whose fds this user may read."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if not _same(st, os.stat(fd)):
                        continue
                    flags = next(int(line.split()[1], 8) for line in (proc / "fdinfo" / fd.name).read_text()
                                 .splitlines() if line.startswith("flags:"))
                    if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                        comm = (proc / "comm").read_text().strip()
                        found.append(f"process {proc.name} ({comm})")
                        break
    return found


def _qemu_lock(path: Path, fmt: str) -> list[str]:
    r = tools.run(["qemu-io", "-f", fmt, "-c", "quit", str(path)], "qemu-utils")
    return ["a QEMU process (it holds the image's write lock)"] if _QEMU_LOCKED in r.stderr else []


def _busy(device: Path) -> bool:
    """Whether an exclusive open of the block device fails: mounted, in a
    RAID or a device-mapper target, or held by blkback."""
    try:
        fd = os.open(device, os.O_RDONLY | os.O_EXCL)
    except OSError as e:
        return e.errno == errno.EBUSY
    os.close(fd)
    return False

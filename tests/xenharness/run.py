"""One QEMU run of the harness: Xen, the dom0, then the domUs of a plan.

The test hands over xl configs as vsaimage wrote them; only what names a
file on the dom0 changes (`used_config`): `kernel`, `ramdisk` and each disk
`target`, since the dom0 sees kernels and initrds in its initramfs
(`/plan/files/N`) and each disk image as a virtio disk (`/dev/vda`,
`/dev/vdb`, ... in the order they are first named). QEMU attaches every disk
with `snapshot=on`: the images are never written, unless a domU asks for
`writable` disks (give it copies made for the test, never a shared output):
its guest's writes then reach the files, to be read, or booted by a later
run.

A domU that boots from its own disk (`bootloader = "pygrub"`, or pvgrub2 as
`kernel = "/usr/lib/grub-xen/grub-x86_64-xen.bin"`, the path it has in the
dom0 too) is given no kernel nor ramdisk, and its config is used as written
but for the disk targets. Its `absent` files (the guest kernel and initrd) are
what the dom0 must not hold when it creates it: the dom0 deletes its copies
of them and says whether any is left (see dom0-init.sh). A copy deleted for
one domU is gone for the domUs after it: those boot in name order, so name
the ones booted from their own disk last.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from xenharness import dom0

QEMU = "qemu-system-x86_64"
# Memory for Xen, the dom0's 1 GiB and a domU of vsaimage's default 3 GiB.
MACHINE_MEMORY = "4608"
# bootscrub=0: scrubbing 4.5 GiB of RAM under TCG would cost tens of seconds
# for nothing.
XEN_ARGS = ("console=com1 console_timestamps=boot dom0_mem=1024M,max:1024M bootscrub=0 "
            "loglvl=all guest_loglvl=all")
DOM0_ARGS = "console=hvc0"
# -cpu max crashes the PV dom0 at its first instruction; qemu64 with SVM is
# what Xen's own CI uses under QEMU. NPT gives Xen HAP, without which it
# cannot run a PVH guest (Debian's Xen has no shadow paging).
CPU = "qemu64,+svm,+npt,+rdrand"
# QEMU's multi-threaded TCG (a thread per emulated CPU). `tcg,thread=single`
# would hold one host CPU instead of up to two, but in the one run tried
# with it (load 7) the PVH guest's kernel died on a stack guard page: not
# taken until it has booted every guest of the suite.
ACCEL = "tcg"
# What the dom0 writes on a domU's console before creating it again.
RETRY_MARK = "harness: xl create again\n"
# The niceness QEMU runs at, when set and allowed (the test run's own:
# tests/conftest.py lowers its workers' priority below it).
PRIORITY_ENV = "XENHARNESS_PRIORITY"


@dataclass(frozen=True)
class DomU:
    name: str  # the plan's directory and the console's file: runs in name order
    config: str  # the xl config as vsaimage wrote it
    kernel: Path | None  # the host files its kernel, ramdisk and disk targets name
    ramdisk: Path | None  # (no kernel nor ramdisk: it boots from its own disk)
    disks: tuple[Path, ...]
    wait_for: str  # shut the domU down once its console shows this...
    linger: int = 2  # ...and this many seconds more have passed
    absent: tuple[Path, ...] = ()  # files the dom0 must hold no copy of when it creates it
    writable: bool = False  # its disks attached without snapshot=on: the files get the writes
    crash_retry: bool = False  # created again when its guest triple-faults (dom0-init.sh)


@dataclass
class Run:
    directory: Path
    used_configs: dict[str, str]
    returncode: int | None  # None: killed at the timeout
    seconds: float
    consoles: dict[str, Path] = field(default_factory=dict)

    @property
    def serial(self) -> Path:
        return self.directory / "xen-dom0.log"

    def text(self, path: Path) -> str:
        # Consoles end lines with \r\n, or \r\r\n where two layers add one.
        return re.sub(r"\r+\n", "\n", path.read_bytes().decode("utf-8", "replace"))

    def harness(self) -> list[str]:
        """What the dom0's init reported, in order."""
        return re.findall(r"^harness: (.*)$", self.text(self.serial), re.M)

    def console(self, name: str) -> str:
        """What the last attempt at creating the domU printed."""
        return self.text(self.consoles[name]).rsplit(RETRY_MARK, 1)[-1]


def used_config(text: str, kernel: str | None, ramdisk: str | None, disks: dict[Path, str]) -> str:
    """`text` with the kernel, the ramdisk (unless None: left as written) and
    each disk target at their dom0-side paths; every other byte unchanged."""
    if kernel is not None:
        text = re.sub(r'^kernel = ".*"$', f'kernel = "{kernel}"', text, count=1, flags=re.M)
    if ramdisk is not None:
        text = re.sub(r'^ramdisk = ".*"$', f'ramdisk = "{ramdisk}"', text, count=1, flags=re.M)
    for host, device in disks.items():
        text = text.replace(f"target={host}'", f"target={device}'")
    return text


def fingerprint(path: Path) -> str:
    """`SIZE SHA256` of a file, the line by which the dom0 knows its copies."""
    with path.open("rb") as f:
        return f"{path.stat().st_size} {hashlib.file_digest(f, 'sha256').hexdigest()}\n"


def load_factor() -> float:
    """How much slower than on an idle machine the emulation may run now:
    the host's load per CPU (at least 1). The harness's waits are stretched
    by it, so that a boot on a busy machine is given the time it needs."""
    return max(1.0, os.getloadavg()[0] / (os.cpu_count() or 1))


def _priority() -> None:
    """In QEMU's process: the niceness of PRIORITY_ENV, where allowed (a
    lower one needs privilege; without it QEMU keeps the caller's)."""
    wanted = os.environ.get(PRIORITY_ENV)
    if wanted is not None:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, int(wanted))


def slots() -> int:
    """How many Xen QEMU runs may go at once on this machine: one per two
    CPUs. Each emulates two CPUs, and its dom0 has deadlines of its own
    (libxl gives a hotplug script 40 s): runs that share a CPU with another
    run overran them (a domU with eight disks lost a hotplug script in
    every one of five attempts)."""
    return max(1, (os.cpu_count() or 1) // 2)


@contextlib.contextmanager
def cpu_slot() -> Iterator[None]:
    """Hold one of the machine's `slots()` until the block ends, waiting for
    one to be free: a lock file per slot, shared by every process of the
    user (the workers of a test run, and any other run)."""
    tmp = Path(tempfile.gettempdir())
    paths = [tmp / f"vsaimage-xen-{os.getuid()}-slot-{n}.lock" for n in range(slots())]
    held = None
    while held is None:
        for path in paths:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            held = fd
            break
        else:
            time.sleep(1)
    try:
        yield
    finally:
        os.close(held)  # closing the file releases its lock


def run(domus: list[DomU], parse: dict[str, str], work: Path, silence: int = 240,
        prompt_cap: int = 900, timeout: float = 2700, accel: str = ACCEL) -> Run:
    """Boot the harness once: parse every config of `parse` (name -> text,
    used as is), then boot `domus` one after the other. A domU that has not
    shown its `wait_for` is given up on after `silence` seconds without
    console output or `prompt_cap` seconds in all; `timeout` bounds the run.
    All three are stretched by the load at the start (`load_factor`); a
    domU whose creation loses a hotplug script to libxl's fixed 40 s is
    created again, more times on a busier machine, and so is one with
    `crash_retry` whose guest triple-faulted; its console (`Run.console`)
    is then what the last attempt printed. The run waits for a free
    `cpu_slot` first."""
    with cpu_slot():
        return _run(domus, parse, work, silence, prompt_cap, timeout, accel)


def _run(domus: list[DomU], parse: dict[str, str], work: Path, silence: int,
         prompt_cap: int, timeout: float, accel: str) -> Run:
    factor = load_factor()
    silence, prompt_cap, timeout = round(silence * factor), round(prompt_cap * factor), timeout * factor
    retries = 2 + math.ceil(factor)
    version = dom0.kernel_version()
    xen, base = dom0.hypervisor(), dom0.dom0_initramfs(version)
    if not (xen.is_file() and base.is_file()):
        raise FileNotFoundError(f"no Xen harness at {xen.parent}: run make setup")
    if shutil.which(QEMU) is None:
        raise FileNotFoundError(f"{QEMU} is missing: run make setup")
    work.mkdir(parents=True, exist_ok=True)
    devices: dict[Path, str] = {}
    files: dict[Path, str] = {}
    plan = work / "overlay" / "plan"
    (plan / "parse").mkdir(parents=True)
    (plan / "files").mkdir()
    for domu in domus:
        for disk in domu.disks:
            devices.setdefault(disk, f"/dev/vd{chr(ord('a') + len(devices))}")
        for f in (domu.kernel, domu.ramdisk):
            if f is not None and f not in files:
                files[f] = f"/plan/files/{len(files)}"
                shutil.copyfile(f, work / "overlay" / files[f].lstrip("/"))
    (plan / "timeout").write_text(f"{silence} {prompt_cap} {retries} {round(5 * factor)}\n")
    for name, text in parse.items():
        (plan / "parse" / f"{name}.cfg").write_text(text)
    used: dict[str, str] = {}

    def in_dom0(f: Path | None) -> str | None:
        return None if f is None else files[f]

    for domu in domus:
        d = plan / "domu" / domu.name
        d.mkdir(parents=True)
        used[domu.name] = used_config(domu.config, in_dom0(domu.kernel), in_dom0(domu.ramdisk),
                                      {h: devices[h] for h in domu.disks})
        (d / "cfg").write_text(used[domu.name])
        (d / "wait_for").write_text(domu.wait_for)
        (d / "linger").write_text(f"{domu.linger}\n")
        if domu.crash_retry:
            (d / "crash_retry").touch()
        if domu.absent:
            (d / "absent").write_text("".join(fingerprint(f) for f in domu.absent))
    initramfs = work / "dom0+plan.cpio"
    dom0.write_cpio(work / "overlay", work / "plan.cpio")
    with initramfs.open("wb") as out:
        for part in (base, work / "plan.cpio"):
            with part.open("rb") as src:
                shutil.copyfileobj(src, out)
    result = Run(work, used, None, 0.0)
    cmd = [
        QEMU, "-accel", accel, "-cpu", CPU, "-m", MACHINE_MEMORY, "-smp", "2",
        "-nodefaults", "-display", "none", "-no-reboot", "-serial", f"file:{result.serial}",
        "-kernel", str(xen), "-append", XEN_ARGS,
        "-initrd", f"/boot/vmlinuz-{version} {DOM0_ARGS},{initramfs}",
        "-device", "virtio-serial-pci,id=ports",
    ]  # fmt: skip
    written = {disk for domu in domus if domu.writable for disk in domu.disks}
    for host in devices:
        snapshot = "" if host in written else ",snapshot=on"
        cmd += ["-drive", f"file={host},format=raw,if=virtio{snapshot}"]
    for i, domu in enumerate(domus):
        result.consoles[domu.name] = work / f"{domu.name}.console.log"
        cmd += ["-chardev", f"file,id=c{i},path={result.consoles[domu.name]}",
                "-device", f"virtserialport,bus=ports.0,chardev=c{i},name={domu.name}"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=(work / "qemu.stderr").open("wb"), preexec_fn=_priority)
    try:
        result.returncode = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    result.seconds = time.monotonic() - started
    return result

"""Helpers shared by the tests: running the installed CLI (optionally as an
unprivileged user), hashing, a scratch directory every user can write, and
values computed once per test run however many pytest-xdist workers ask
for them (`shared`)."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import pickle
import stat
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from fixtures.build_image import EPOCH
from vsaimage.edits import pcihack
from vsaimage.initrd import repack as initrd

REPO = Path(__file__).resolve().parent.parent
VSAIMAGE = REPO / ".venv" / "bin" / "vsaimage"
NOBODY = 65534

def data_extents(path: Path) -> list[tuple[int, int]]:
    """(start, end) of the data regions of a sparse file (SEEK_DATA/SEEK_HOLE):
    the tests' own walk, independent of vsaimage's."""
    extents = []
    with open(path, "rb") as f:
        fd, size, pos = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # only a hole up to the end
                    break
                raise
            pos = os.lseek(fd, start, os.SEEK_HOLE)
            extents.append((start, pos))
    return extents


def fingerprint(path: Path) -> str:
    """sha256 of a sparse file's size, mtime and data regions with their
    offsets: changes with any write, and takes a fraction of a second where
    hashing every byte of the 6 GiB example, zeros included, takes half a
    minute on a busy machine."""
    h = hashlib.sha256()
    st = path.stat()
    h.update(f"{st.st_size} {st.st_mtime_ns}".encode())
    with open(path, "rb") as f:
        for start, end in data_extents(path):
            h.update(f"@{start}".encode())
            f.seek(start)
            while f.tell() < end:
                h.update(f.read(min(2**20, end - f.tell())))
    return h.hexdigest()


def head(path: Path, size: int = 2**20) -> bytes:
    """The first bytes of a (possibly huge, sparse) image."""
    with open(path, "rb") as f:
        return f.read(size)


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def doc(self) -> dict[str, Any]:
        return json.loads(self.stdout)  # type: ignore[no-any-return]


def run_cli(*args: str | Path, user: int | None = None, env: dict[str, str] | None = None,
            timeout: float = 900) -> Run:
    """Run the installed `vsaimage` as a user types it (optionally as another
    user, through setpriv)."""
    cmd = [str(VSAIMAGE), *map(str, args)]
    e = dict(os.environ)
    if user is not None:
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
        e.update(HOME=str(nobody_dir()), TMPDIR=str(nobody_dir()))
    e.update(env or {})
    r = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout, stdin=subprocess.DEVNULL)
    return Run(r.returncode, r.stdout, r.stderr)


# The scratch directory of the run: made by the first pytest process (the
# xdist controller, or the only process), handed to the workers it starts
# through the environment, removed by its maker at the end.
SCRATCH_ENV = "VSAIMAGE_TEST_SCRATCH"
scratch: Path | None = None
made_scratch = False


def nobody_dir() -> Path:
    """A scratch directory every user can write (pytest's own tmp is 0700),
    one for the whole run: every worker of a parallel run sees the same."""
    global scratch, made_scratch
    if scratch is None:
        given = os.environ.get(SCRATCH_ENV)
        if given:
            scratch = Path(given)
        else:
            scratch = Path(tempfile.mkdtemp(prefix="vsaimage-test-", dir="/var/tmp"))
            scratch.chmod(0o1777)
            made_scratch = True
            os.environ[SCRATCH_ENV] = str(scratch)
    return scratch


T = TypeVar("T")


def shared(name: str, compute: Callable[[], T]) -> T:
    """`compute()`, run once per test run by whichever process asks first;
    the others (pytest-xdist workers each have their own session fixtures)
    wait for it and read its pickled value. A failure is shared as well:
    every test that needs the value then fails with its message, as tests
    sharing a session fixture in one process do."""
    d = nobody_dir() / ".shared"
    d.mkdir(exist_ok=True)
    result = d / f"{name}.pickle"
    with (d / f"{name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            try:
                value = compute()
            except Exception as exc:
                result.write_bytes(pickle.dumps(("failed", f"{type(exc).__name__}: {exc}")))
                raise
            result.write_bytes(pickle.dumps(("ok", value)))
            return value
    outcome, value = pickle.loads(result.read_bytes())
    if outcome == "failed":
        raise AssertionError(f"{name}, computed by another worker of this run, failed: {value}")
    return value  # type: ignore[no-any-return]


@dataclass(frozen=True)
class DebianKernel:
    version: str
    vmlinuz: Path
    initrd: Path
    modules: Path


@dataclass(frozen=True)
class Converted:
    input: Path
    input_sha_before: str
    out: Path
    initrd: Path
    cfg: Path
    run: Run  # the full convert, whose output the tests read
    minimal_run: Run  # the same input converted before with --modules minimal
    minimal_cfg: bytes  # the xl config that run wrote


@dataclass(frozen=True)
class Variant:
    """A fixture variant converted once (`--modules minimal`)."""

    input: Path
    input_sha_before: str
    out: Path
    initrd: Path
    run: Run


LHOS12_MEMBER = "KVM-VSA-12.7.00.0226_01.img"
# What the LeftHand OS 12 tests read back from its converted root.
LHOS12_READ = ("/etc/init/vsaimage-hvc0.conf", "/etc/inittab", "/etc/sysconfig/init", "/etc/securetty",
               "/etc/udev/scripts/xvd-hack.sh", "/etc/udev/rules.d/10-console.rules", "/etc/init/tty.conf")


@dataclass(frozen=True)
class Lhos12:
    """The lhos12 variant converted once from its .img.tgz, seven data disks."""

    archive: Path
    sha_before: str
    raw: Path  # the variant's image, as packed
    out: Path
    data_disks: tuple[Path, ...]
    run: Run
    cfg: dict[str, Any]
    files: dict[str, bytes | None]


@dataclass(frozen=True)
class Readback:
    """Files of the converted root, read with a separate read-only handle."""

    files: dict[str, bytes | None]
    modes: dict[str, int | None]
    links: dict[str, str | None]  # build and source under /lib/modules/<v>
    modules_dep: bytes | None
    paths: set[str]
    changed: set[str]  # regular files whose mtime is no longer the fixture's


READBACK_FILES = (
    "/etc/init.d/lhn_functions",
    "/hack/bus/pci/devices",
    "/etc/lefthand/brand/common/fst",
    "/etc/lefthand/system/lib/hal/libhal.so",
    "/etc/lefthand/system/liblhnsys.so",
    "/sbin/hwid",
    "/etc/udev/rules.d/53-devfs-hack.rules",
    "/etc/udev/scripts/xvd-hack.sh",
    "/etc/lefthand/brand/brand.init",
    "/etc/lefthand/brand/rc.drivers",
    "/etc/inittab",
    "/etc/securetty",
    "/etc/fstab",
    "/boot/grub/grub.conf",
)


def read_back(image: Path, root_part: int, boot_part: int, kernel_version: str) -> Readback:
    import guestfs

    g = guestfs.GuestFS(python_return_dict=True)
    g.add_drive_opts(str(image), readonly=True, format="raw")
    g.launch()
    try:
        g.mount_ro(f"/dev/sda{root_part}", "/")
        g.mount_ro(f"/dev/sda{boot_part}", "/boot")
        files: dict[str, bytes | None] = {}
        modes: dict[str, int | None] = {}
        for p in READBACK_FILES:
            ok = g.is_file(p)
            files[p] = bytes(g.read_file(p)) if ok else None
            modes[p] = (g.statns(p)["st_mode"] & 0o7777) if ok else None
        dep = f"/lib/modules/{kernel_version}/modules.dep"
        modules_dep = bytes(g.read_file(dep)) if g.is_file(dep) else None
        paths = {"/" + p for p in g.find("/")}
        links = {name: g.readlink(p) if g.is_symlink(p) else None
                 for name in ("build", "source")
                 for p in [f"/lib/modules/{kernel_version}/{name}"]}
        changed = set()
        for p in sorted(paths):
            if p.startswith(f"/lib/modules/{kernel_version}/"):
                continue  # all new: the directory itself stands for them
            st = g.lstatns(p)
            if stat.S_ISREG(st["st_mode"]) and st["st_mtime_sec"] != EPOCH:
                changed.add(p)
    finally:
        g.close()
    return Readback(files, modes, links, modules_dep, paths, changed)


def repack_bytes(data: bytes, **kw: Any) -> tuple[bytes, initrd.RepackResult]:
    """initrd.repack from bytes to bytes."""
    out = io.BytesIO()
    result = initrd.repack(io.BytesIO(data), out, **kw)
    return out.getvalue(), result


def prepare_bytes(data: bytes, **kw: Any) -> initrd.Prepared:
    return initrd.prepare(io.BytesIO(data), **kw)


def finish_bytes(prepared: initrd.Prepared, **kw: Any) -> tuple[bytes, initrd.RepackResult]:
    out = io.BytesIO()
    result = initrd.finish(prepared, out, **kw)
    return out.getvalue(), result


def check_bytes(data: bytes, action: pcihack.Action = "add") -> bool:
    return initrd.check(io.BytesIO(data), action)


@dataclass(frozen=True)
class OwnKernel:
    """The example converted with --boot pygrub, and that output converted
    again with --boot pvgrub (`--modules minimal` both times)."""

    input: Path
    input_sha_before: str
    pygrub: Path  # its .initrd and .cfg beside it
    pvgrub: Path
    pygrub_run: Run
    pvgrub_run: Run


@dataclass(frozen=True)
class Saniq8:
    """The SAN/iQ 8 example (two system disks, the root on md RAID1)
    converted once with both disks and --modules auto."""

    inputs: tuple[Path, Path]
    inputs_sha_before: tuple[str, str]
    outs: tuple[Path, Path]
    initrd: Path
    cfg: Path
    run: Run

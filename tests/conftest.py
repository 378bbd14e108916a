"""Shared test fixtures, and how the suite is spread over pytest-xdist workers
(tests/README.md). Appliance launches cost ~20 s each under TCG, so the
example image is converted once per test run and every integration test
reads that one result (through its own read-only libguestfs handle, not
vsaimage's): the session fixtures below compute through `support.shared`,
once for all workers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from xenharness import run as harness

# Nested KVM hangs or aborts on many build hosts; TCG is what a Xen dom0 gets.
os.environ.setdefault("LIBGUESTFS_BACKEND_SETTINGS", "force_tcg")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for `fixtures`

import support
from support import (
    LHOS12_MEMBER,
    LHOS12_READ,
    Converted,
    DebianKernel,
    Lhos12,
    OwnKernel,
    Readback,
    Saniq8,
    Variant,
    fingerprint,
    nobody_dir,
    read_back,
    run_cli,
    shared,
)

# The niceness of pytest-xdist workers (see pytest_configure).
WORKER_NICE = 5


def pytest_configure(config: pytest.Config) -> None:
    # Made before xdist starts its workers, which find it in the environment.
    nobody_dir()
    # Workers run at a lower priority than the Xen harness's QEMU, which
    # takes the run's own priority back where it may (xenharness/run.py): a
    # Xen run is the longest chain of the suite, and its dom0 has timeouts
    # of its own that a starved emulation overruns.
    os.environ.setdefault(harness.PRIORITY_ENV, str(os.getpriority(os.PRIO_PROCESS, 0)))
    if hasattr(config, "workerinput"):
        os.nice(WORKER_NICE)


def pytest_unconfigure(config: pytest.Config) -> None:
    if support.made_scratch and support.scratch is not None:
        shutil.rmtree(support.scratch, ignore_errors=True)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, but with every Xen module (test_xen_*.py) in one
    unit, run one after the other on one worker: their runs take the
    machine's Xen slot in turn anyway, and spread over the workers they held
    two of three waiting for it (the CPUs idle a fifth of the run)."""
    from xdist.scheduler import LoadFileScheduling

    class XenOnOneWorker(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = super()._split_scope(nodeid)
            return "xen" if Path(module).name.startswith("test_xen_") else module

    return XenOnOneWorker(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The order in which pytest-xdist hands out the modules (`--dist
    loadfile`: each module runs whole on one worker, its module fixtures
    made once): the longest chains first, the Xen runs (test_xen_*.py),
    then the modules with the most integration tests, the others last, to
    fill the workers in at the end."""
    weight: dict[str, int] = {}
    for item in items:
        weight.setdefault(item.path.name, 0)
        if item.get_closest_marker("integration") is not None:
            weight[item.path.name] += 1

    def rank(pair: tuple[int, pytest.Item]) -> tuple[int, int, int]:
        index, item = pair
        return (0 if item.path.name.startswith("test_xen_") else 1, -weight[item.path.name], index)

    items[:] = [item for _, item in sorted(enumerate(items), key=rank)]


def _complete(vmlinuz: Path) -> bool:
    version = vmlinuz.name.removeprefix("vmlinuz-")
    return (Path("/boot") / f"initrd.img-{version}").is_file() and (
        Path("/lib/modules") / version / "modules.dep").is_file()


@pytest.fixture(scope="session")
def debian_kernel() -> DebianKernel:
    return shared("debian-kernel", _debian_kernel)


def _debian_kernel() -> DebianKernel:
    """The machine's linux-image-amd64 kernel: the newest /boot/vmlinuz-* with
    its initrd and modules (a machine may keep other, partly removed ones). The
    initrd is copied because package installs regenerate it at any time."""
    # In version order: 6.1.0-10 after 6.1.0-9.
    kernels = sorted((k for k in Path("/boot").glob("vmlinuz-*") if _complete(k)),
                     key=lambda k: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", k.name)])
    assert kernels, "linux-image-amd64 is not installed (make setup installs it)"
    vmlinuz = kernels[-1]
    version = vmlinuz.name.removeprefix("vmlinuz-")
    d = nobody_dir() / "kernel"
    d.mkdir(exist_ok=True)
    initrd = d / f"initrd.img-{version}"
    shutil.copyfile(Path("/boot") / f"initrd.img-{version}", initrd)
    initrd.chmod(0o644)
    return DebianKernel(version, vmlinuz, initrd, Path("/lib/modules") / version)


def fixture_image(layout: str) -> Path:
    """The cached image of a fixture layout, built by one worker."""
    from fixtures.build_image import cached_image

    return shared(f"image-{layout}", lambda: cached_image(layout))


@pytest.fixture(scope="session")
def example_image() -> Path:
    return fixture_image("stock")


@pytest.fixture(scope="session")
def alt_image() -> Path:
    return fixture_image("alt")


def read_only_copy(image: Path, directory: Path, name: str = "vsa.img") -> Path:
    """A sparse copy of a cached image as `directory`/`name`, read-only."""
    src = directory / name
    subprocess.run(["cp", "--sparse=always", str(image), str(src)], check=True)
    src.chmod(0o444)
    return src


def data_disk(directory: Path) -> Path:
    """An empty 64 MiB data disk, for the configs the Xen boots use."""
    data = directory / "data.img"
    with data.open("wb") as f:
        f.truncate(64 * 2**20)
    return data


@pytest.fixture(scope="session")
def converted(example_image: Path, debian_kernel: DebianKernel) -> Converted:
    """The example image converted as a user would, with the real kernel and
    one data disk: first with --modules minimal (and -v), then in full over the same
    output (--force), so tests can compare the two runs; the full output is
    what they read."""
    return shared("converted", lambda: _converted(example_image, debian_kernel))


def _converted(example_image: Path, debian_kernel: DebianKernel) -> Converted:
    d = nobody_dir() / "converted"
    d.mkdir()
    d.chmod(0o777)
    src = read_only_copy(example_image, d)
    before = fingerprint(src)
    out = d / "vsa-xen.img"
    # A data disk (xvdc), so that the Xen boot test sees one in the guest.
    data = data_disk(d)
    args = ("convert", src, "--kernel", debian_kernel.vmlinuz, "--initrd", debian_kernel.initrd,
            "-o", out, "--data-disk", data, "--json")
    minimal = run_cli(*args, "--modules", "minimal", "-v")
    assert minimal.code == 0, minimal.stderr
    minimal_cfg = (d / "vsa-xen.cfg").read_bytes()
    full = run_cli(*args, "--force")
    assert full.code == 0, full.stderr
    return Converted(src, before, out, d / "vsa-xen.initrd", d / "vsa-xen.cfg", full, minimal,
                     minimal_cfg)


@pytest.fixture(scope="session")
def readback(converted: Converted, debian_kernel: DebianKernel) -> Readback:
    return shared("readback", lambda: _readback(converted, debian_kernel))


def _readback(converted: Converted, debian_kernel: DebianKernel) -> Readback:
    doc = converted.run.doc
    return read_back(converted.out, doc["root_partition"], doc["boot_partition"], debian_kernel.version)


def convert_variant(layout: str, debian_kernel: DebianKernel, *, data: bool = False) -> Variant:
    """A fixture variant converted as a user would (`--modules minimal`),
    with a data disk beside it when `data`, once per test run."""
    return shared(f"{layout}-converted", lambda: _convert_variant(layout, debian_kernel, data))


def _convert_variant(layout: str, debian_kernel: DebianKernel, data: bool) -> Variant:
    d = nobody_dir() / layout
    d.mkdir()
    src = read_only_copy(fixture_image(layout), d)
    before = fingerprint(src)
    out = d / "vsa-xen.img"
    disks = ("--data-disk", data_disk(d)) if data else ()
    r = run_cli("convert", src, "--kernel", debian_kernel.vmlinuz, "--initrd", debian_kernel.initrd,
                "-o", out, "--modules", "minimal", *disks, "--json")
    assert r.code == 0, r.stderr
    return Variant(src, before, out, d / "vsa-xen.initrd", r)


@pytest.fixture(scope="session")
def symlinks_converted(debian_kernel: DebianKernel) -> Variant:
    """The `symlinks` variant (the edited files reached through symlinks)
    converted once, for its own tests and the boot test."""
    return convert_variant("symlinks", debian_kernel)


@pytest.fixture(scope="session")
def runtime_platform_converted(debian_kernel: DebianKernel) -> Variant:
    """The `runtime-platform` variant (base_init keeps a run-time link to
    the platform file in another directory) converted once, for its own
    tests and the boot test (with a data disk: every console check applies)."""
    return convert_variant("runtime-platform", debian_kernel, data=True)


@pytest.fixture(scope="session")
def own_kernel(example_image: Path, debian_kernel: DebianKernel) -> OwnKernel:
    """--boot pygrub, then its output converted again with --boot pvgrub:
    both boot loaders read the same menu, so the second convert must find
    /boot as the first left it. A data disk each, as the boot test wants."""
    return shared("own-kernel", lambda: _own_kernel(example_image, debian_kernel))


def _own_kernel(example_image: Path, debian_kernel: DebianKernel) -> OwnKernel:
    d = nobody_dir() / "own-kernel"
    d.mkdir()
    src = read_only_copy(example_image, d)
    before = fingerprint(src)
    data = data_disk(d)
    common = ("--kernel", debian_kernel.vmlinuz, "--initrd", debian_kernel.initrd, "--modules", "minimal",
              "--data-disk", data, "--json")
    pygrub = run_cli("convert", src, "-o", d / "vsa-pygrub.img", "--boot", "pygrub", *common)
    assert pygrub.code == 0, pygrub.stderr
    pvgrub = run_cli("convert", d / "vsa-pygrub.img", "-o", d / "vsa-pvgrub.img", "--boot", "pvgrub", *common)
    assert pvgrub.code == 0, pvgrub.stderr
    return OwnKernel(src, before, d / "vsa-pygrub.img", d / "vsa-pvgrub.img", pygrub, pvgrub)


@pytest.fixture(scope="session")
def pvh_converted(example_image: Path, debian_kernel: DebianKernel) -> Variant:
    """The example converted with --type pvh (a direct boot), a data disk
    beside it, for the boot test; one vCPU (see tests/test_xen_boot.py)."""
    return shared("pvh-converted", lambda: _pvh_converted(example_image, debian_kernel))


def _pvh_converted(example_image: Path, debian_kernel: DebianKernel) -> Variant:
    d = nobody_dir() / "pvh"
    d.mkdir()
    src = read_only_copy(example_image, d)
    data = data_disk(d)
    out = d / "vsa-xen.img"
    r = run_cli("convert", src, "--kernel", debian_kernel.vmlinuz, "--initrd", debian_kernel.initrd,
                "-o", out, "--type", "pvh", "--vcpus", "1", "--modules", "minimal", "--data-disk", data,
                "--json")
    assert r.code == 0, r.stderr
    return Variant(src, fingerprint(src), out, d / "vsa-xen.initrd", r)


@pytest.fixture(scope="session")
def hvc0(readback: Readback) -> tuple[str | None, str]:
    """(what the converted inittab runs on hvc0, the prompt a Xen boot
    waits for there)."""
    from xenboot import PROMPTS, REPORT_END, hvc0_program

    program = hvc0_program((readback.files["/etc/inittab"] or b"").decode())
    # Without a known program on hvc0 there is no prompt to wait for: the
    # prompt check fails, and says why.
    return program, PROMPTS.get(program or "", REPORT_END)


@pytest.fixture(scope="session")
def saniq8_converted(debian_kernel: DebianKernel) -> Saniq8:
    """The `saniq8` example (fixtures/saniq8.py) converted once as a user
    would: both system disks, the default --modules auto."""
    return shared("saniq8-converted", lambda: _saniq8_converted(debian_kernel))


def _saniq8_converted(debian_kernel: DebianKernel) -> Saniq8:
    from fixtures import saniq8

    d = nobody_dir() / "saniq8"
    d.mkdir()
    built = shared("image-saniq8", saniq8.cached)
    srcs = (read_only_copy(built[0], d, "vsa-1.img"), read_only_copy(built[1], d, "vsa-2.img"))
    before = (fingerprint(srcs[0]), fingerprint(srcs[1]))
    out = d / "vsa-xen.img"
    r = run_cli("convert", srcs[0], "--system-disk", srcs[1], "--kernel", debian_kernel.vmlinuz,
                "--initrd", debian_kernel.initrd, "-o", out, "--json")
    assert r.code == 0, r.stderr
    return Saniq8(srcs, before, (out, d / "vsa-xen-2.img"), d / "vsa-xen.initrd", d / "vsa-xen.cfg", r)


@pytest.fixture(scope="session")
def lhos12(debian_kernel: DebianKernel) -> Lhos12:
    """LeftHand OS 12 as the KVM download ships it (a GNU sparse tar,
    gzip'd), converted once with seven small sparse data disks and --extra;
    its root read back with a separate read-only handle."""
    return shared("lhos12-converted", lambda: _lhos12(debian_kernel))


def _lhos12(debian_kernel: DebianKernel) -> Lhos12:
    import guestfs

    from xl_reader import parse as parse_xl

    where = nobody_dir() / "lhos12"
    where.mkdir(exist_ok=True)
    raw = fixture_image("lhos12")
    member = where / LHOS12_MEMBER
    subprocess.run(["cp", "--sparse=always", str(raw), str(member)], check=True)
    archive = where / f"{LHOS12_MEMBER}.tgz"
    subprocess.run(["tar", "-S", "-czf", str(archive), "-C", str(where), LHOS12_MEMBER], check=True)
    member.unlink()
    disks = tuple(where / f"data{n}.img" for n in range(7))
    for d in disks:
        with open(d, "wb") as f:
            f.truncate(16 * 2**20)
    sha = fingerprint(archive)
    out = where / "lhos12-xen.img"
    r = run_cli("convert", archive, "--kernel", debian_kernel.vmlinuz, "--initrd", debian_kernel.initrd,
                "-o", out, "--force", "--modules", "minimal", *(a for d in disks for a in ("--data-disk", d)),
                "--extra", "loglevel=7", "--json")
    assert r.code == 0, r.stderr
    g = guestfs.GuestFS(python_return_dict=True)
    g.add_drive_opts(str(out), readonly=True, format="raw")
    g.launch()
    try:
        g.mount_ro("/dev/sda1", "/")
        files = {p: bytes(g.read_file(p)) if g.is_file(p) else None for p in LHOS12_READ}
    finally:
        g.close()
    cfg = parse_xl(out.with_suffix(".cfg").read_text())
    return Lhos12(archive, sha, raw, out, disks, r, cfg, files)

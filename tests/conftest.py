"""Shared test fixtures. Appliance launches cost ~20 s each under TCG, so the
example image is converted once per session and every integration test reads
that one result (through its own read-only libguestfs handle, not vsaimage's)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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
    Variant,
    fingerprint,
    nobody_dir,
    read_back,
    run_cli,
)


@pytest.fixture(scope="session", autouse=True)
def _cleanup_nobody_dir() -> Iterator[None]:
    yield
    if support.scratch is not None:
        shutil.rmtree(support.scratch, ignore_errors=True)


def _complete(vmlinuz: Path) -> bool:
    version = vmlinuz.name.removeprefix("vmlinuz-")
    return (Path("/boot") / f"initrd.img-{version}").is_file() and (
        Path("/lib/modules") / version / "modules.dep").is_file()


@pytest.fixture(scope="session")
def debian_kernel(tmp_path_factory: pytest.TempPathFactory) -> DebianKernel:
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


@pytest.fixture(scope="session")
def example_image() -> Path:
    from fixtures.build_image import cached_image

    return cached_image("stock")


@pytest.fixture(scope="session")
def alt_image() -> Path:
    from fixtures.build_image import cached_image

    return cached_image("alt")


@pytest.fixture(scope="session")
def converted(example_image: Path, debian_kernel: DebianKernel) -> Converted:
    """The example image converted as a user would, with the real kernel and
    one data disk: first with --modules minimal (and -v), then in full over the same
    output (--force), so tests can compare the two runs; the full output is
    what they read."""
    d = nobody_dir() / "converted"
    d.mkdir()
    d.chmod(0o777)
    src = d / "vsa.img"
    subprocess.run(["cp", "--sparse=always", str(example_image), str(src)], check=True)
    src.chmod(0o444)
    before = fingerprint(src)
    out = d / "vsa-xen.img"
    # A data disk (xvdc), so that the Xen boot test sees one in the guest.
    data = d / "data.img"
    with data.open("wb") as f:
        f.truncate(64 * 2**20)
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
    doc = converted.run.doc
    return read_back(converted.out, doc["root_partition"], doc["boot_partition"], debian_kernel.version)


@pytest.fixture(scope="session")
def symlinks_converted(debian_kernel: DebianKernel) -> Variant:
    """The `symlinks` variant (the edited files reached through symlinks)
    converted once, for its own tests and the boot test."""
    from fixtures.build_image import cached_image

    d = nobody_dir() / "symlinks"
    d.mkdir()
    src = d / "vsa.img"
    subprocess.run(["cp", "--sparse=always", str(cached_image("symlinks")), str(src)], check=True)
    src.chmod(0o444)
    before = fingerprint(src)
    out = d / "vsa-xen.img"
    r = run_cli("convert", src, "--kernel", debian_kernel.vmlinuz, "--initrd", debian_kernel.initrd,
                "-o", out, "--modules", "minimal", "--json")
    assert r.code == 0, r.stderr
    return Variant(src, before, out, d / "vsa-xen.initrd", r)


@pytest.fixture(scope="session")
def own_kernel(example_image: Path, debian_kernel: DebianKernel) -> OwnKernel:
    """--boot pygrub, then its output converted again with --boot pvgrub:
    both boot loaders read the same menu, so the second convert must find
    /boot as the first left it. A data disk each, as the boot test wants."""
    d = nobody_dir() / "own-kernel"
    d.mkdir()
    src = d / "vsa.img"
    subprocess.run(["cp", "--sparse=always", str(example_image), str(src)], check=True)
    src.chmod(0o444)
    before = fingerprint(src)
    data = d / "data.img"
    with data.open("wb") as f:
        f.truncate(64 * 2**20)
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
    d = nobody_dir() / "pvh"
    d.mkdir()
    src = d / "vsa.img"
    subprocess.run(["cp", "--sparse=always", str(example_image), str(src)], check=True)
    src.chmod(0o444)
    data = d / "data.img"
    with data.open("wb") as f:
        f.truncate(64 * 2**20)
    out = d / "vsa-xen.img"
    r = run_cli("convert", src, "--kernel", debian_kernel.vmlinuz, "--initrd", debian_kernel.initrd,
                "-o", out, "--type", "pvh", "--vcpus", "1", "--modules", "minimal", "--data-disk", data,
                "--json")
    assert r.code == 0, r.stderr
    return Variant(src, fingerprint(src), out, d / "vsa-xen.initrd", r)


@pytest.fixture(scope="session")
def lhos12(debian_kernel: DebianKernel) -> Lhos12:
    """LeftHand OS 12 as the KVM download ships it (a GNU sparse tar,
    gzip'd), converted once with seven small sparse data disks and --extra;
    its root read back with a separate read-only handle."""
    import guestfs

    from fixtures.build_image import cached_image
    from xl_reader import parse as parse_xl

    where = nobody_dir() / "lhos12"
    where.mkdir(exist_ok=True)
    raw = cached_image("lhos12")
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

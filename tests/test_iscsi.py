"""An iSCSI LUN as input, read by libguestfs's own iSCSI client: a userspace
target (Debian's tgt) serves a copy of the example image on 127.0.0.1, and
`inspect` and `convert` read it by URI, with no kernel initiator."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import DebianKernel, Run, data_extents, nobody_dir, run_cli

pytestmark = pytest.mark.integration

IQN = "iqn.2024-01.test.vsaimage:vsa"
TGT_RUN = Path("/var/run/tgtd")


@dataclass(frozen=True)
class Target:
    uri: str
    backing: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _control_port() -> int:
    """A tgtd management port (≤ 32767) whose socket no tgtd holds."""
    for i in range(1000):
        n = 20000 + (os.getpid() + i) % 12000
        if not list(TGT_RUN.glob(f"socket.{n}*")):
            return n
    raise AssertionError(f"no free tgtd control port: {TGT_RUN} is full of sockets")


def _tgtadm(control: int, *args: str, check: bool = True) -> str:
    r = subprocess.run(["tgtadm", "-C", str(control), "--lld", "iscsi", *args],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    if check:
        assert r.returncode == 0, f"tgtadm {' '.join(args)}: {r.stderr.strip()}"
    return r.stdout


class Tgtd:
    """One tgtd serving 127.0.0.1:port, stopped and cleaned up by stop()."""

    def __init__(self, log: Path) -> None:
        self.control = _control_port()
        self.port = _free_port()
        self.log = open(log, "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            ["tgtd", "-f", "-C", str(self.control), "--iscsi", f"portal=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.target = False

    def wait_ready(self, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while True:
            r = subprocess.run(["tgtadm", "-C", str(self.control), "--lld", "iscsi", "--mode", "portal",
                                "--op", "show"], capture_output=True, text=True, timeout=30)
            if r.returncode == 0:
                return r.stdout
            assert self.proc.poll() is None, f"tgtd exited with {self.proc.returncode}"
            assert time.monotonic() < deadline, f"tgtd not answering on -C {self.control}: {r.stderr}"
            time.sleep(0.2)

    def serve(self, image: Path) -> None:
        c = self.control
        _tgtadm(c, "--mode", "target", "--op", "new", "--tid", "1", "--targetname", IQN)
        self.target = True
        _tgtadm(c, "--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "1",
                "--backing-store", str(image))
        # The input must never be written: the target refuses writes outright.
        _tgtadm(c, "--mode", "logicalunit", "--op", "update", "--tid", "1", "--lun", "1",
                "--params", "readonly=1")
        _tgtadm(c, "--mode", "target", "--op", "bind", "--tid", "1", "--initiator-address", "127.0.0.1")

    def stop(self) -> None:
        # SIGTERM does not stop tgtd: delete the target, then the system.
        if self.proc.poll() is None:
            if self.target:
                _tgtadm(self.control, "--mode", "target", "--op", "delete", "--force", "--tid", "1",
                        check=False)
            _tgtadm(self.control, "--mode", "system", "--op", "delete", check=False)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self.log.close()
        for leftover in TGT_RUN.glob(f"socket.{self.control}*"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


@pytest.fixture(scope="module")
def target(example_image: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    if os.geteuid() != 0:
        pytest.skip("tgtd needs root (it creates its control socket in /var/run/tgtd)")
    assert shutil.which("tgtd") and shutil.which("tgtadm"), "tgt is not installed (make setup installs it)"
    d = tmp_path_factory.mktemp("iscsi")
    backing = d / "lun.img"
    subprocess.run(["cp", "--sparse=always", str(example_image), str(backing)], check=True)
    tgtd = None
    try:
        # The free port can be taken between the check and tgtd's bind; tgtd
        # then silently listens on 0.0.0.0:3260 instead: check, and try again.
        for _ in range(3):
            tgtd = Tgtd(d / "tgtd.log")
            portals = tgtd.wait_ready().split()
            if portals == ["Portal:", f"127.0.0.1:{tgtd.port},1"]:
                break
            tgtd.stop()
            tgtd = None
        assert tgtd is not None, f"tgtd would not listen on 127.0.0.1 only: {portals}"
        tgtd.serve(backing)
        yield Target(f"iscsi://127.0.0.1:{tgtd.port}/{IQN}/1", backing)
    finally:
        if tgtd is not None:
            tgtd.stop()


@pytest.fixture(scope="module")
def inspected(target: Target) -> Run:
    return run_cli("inspect", target.uri, "--json")


@pytest.fixture(scope="module")
def lun_converted(target: Target, debian_kernel: DebianKernel) -> tuple[Run, Path]:
    d = nobody_dir() / "iscsi"
    d.mkdir()
    out = d / "vsa-xen.img"
    r = run_cli("convert", target.uri, "--kernel", debian_kernel.vmlinuz, "--initrd", debian_kernel.initrd,
                "-o", out, "--modules", "minimal", "--json")
    return r, out


def test_inspect_over_iscsi(inspected: Run, target: Target) -> None:
    assert inspected.code == 0, inspected.stderr
    doc = inspected.doc
    assert doc["image"] == target.uri
    assert doc["root"]["partition"] == 5 and doc["boot"]["partition"] == 1
    assert {e["status"] for e in doc["edits"] if e["step"] != "bootloader"} == {"not applied"}


def test_convert_over_iscsi(lun_converted: tuple[Run, Path], target: Target) -> None:
    r, out = lun_converted
    assert r.code == 0, r.stderr
    doc = r.doc
    assert doc["input"] == target.uri
    assert {s["step"]: s["status"] for s in doc["steps"]} == {**dict.fromkeys(
        ("copy", "mobo-uuid", "pci", "udev", "fstab", "platform", "drivers", "modules", "console",
         "initrd", "xl"),
        "applied"), "bootloader": "skipped"}
    assert doc["appliance_launches"] == 1
    assert "copy (iSCSI)" in doc["timings"]
    assert doc["root_partition"] == 5 and doc["boot_partition"] == 1
    st = out.stat()
    assert st.st_size == target.backing.stat().st_size
    assert st.st_blocks * 512 < st.st_size / 4  # copied sparse: zeros not written
    assert not list(out.parent.glob(".*.partial"))


def test_convert_copied_the_lun_faithfully(lun_converted: tuple[Run, Path], inspected: Run,
                                           target: Target) -> None:
    """Outside the root and boot partitions (the only ones the edits write)
    the output holds the LUN's bytes. Compared wherever either file has
    data: both read as zeros everywhere else."""
    r, out = lun_converted
    assert r.code == 0, r.stderr
    written = sorted((p["start"], p["start"] + p["size"]) for p in inspected.doc["partitions"]
                     if p["number"] in (r.doc["root_partition"], r.doc["boot_partition"]))
    with open(target.backing, "rb") as a, open(out, "rb") as b:
        for start, end in data_extents(target.backing) + data_extents(out):
            for s, e in _outside(start, end, written):
                a.seek(s)
                b.seek(s)
                assert a.read(e - s) == b.read(e - s), f"bytes {s}..{e} differ"


def _outside(start: int, end: int, holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of [start, end) outside the sorted, disjoint `holes`."""
    parts = []
    for lo, hi in holes:
        if start < min(end, lo):
            parts.append((start, min(end, lo)))
        start = max(start, hi)
    return parts + ([(start, end)] if start < end else [])


def test_converted_image_verifies(lun_converted: tuple[Run, Path]) -> None:
    r, out = lun_converted
    assert r.code == 0, r.stderr
    v = run_cli("verify", out, "--json")
    assert v.code == 0, v.stderr
    assert {e["status"] for e in v.doc["edits"] if e["step"] != "bootloader"} == {"applied"}

"""glibc.py: the guest's glibc version from its files, and vsyscall=emulate."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from test_edit_fixture import read_tree

from fixtures.build_image import ROOT_TREE
from fixtures.make_binaries import VSYSCALL_OK
from vsaimage.edits import GuestFile, Snapshot
from vsaimage.vsa.glibc import detect, version_from_library, version_from_name


def test_names() -> None:
    assert version_from_name("libc-2.5.so") == (2, 5)
    assert version_from_name("libc-2.12.so") == (2, 12)
    assert version_from_name("libc-2.3.4.so") == (2, 3)
    assert version_from_name("libc.so.6") is None and version_from_name("libcrypt-2.5.so") is None


@pytest.mark.parametrize(
    ("data", "version"),
    [
        (b"\0GNU C Library stable release version 2.5, by Roland McGrath et al.\n", (2, 5)),
        (b"\0GNU C Library (Debian GLIBC 2.36-9+deb12u4) stable release version 2.36.\n", (2, 36)),
        (b"\0GLIBC_2.2.5\0GLIBC_2.17\0GLIBC_2.9\0GLIBC_PRIVATE\0", (2, 17)),
        (b"\x7fELF nothing here", None),
    ],
)
def test_library_contents(data: bytes, version: tuple[int, int] | None) -> None:
    assert version_from_library(data) == version


def test_the_fixture_is_centos5_glibc_from_the_symlink() -> None:
    found = detect(read_tree(ROOT_TREE))
    assert found.version == (2, 5) and found.source == "/lib64/libc.so.6 -> /lib64/libc-2.5.so"
    assert found.vsyscall_emulate and "older than 2.14" in found.why


def test_library_itself() -> None:
    modern = GuestFile("/lib64/libc.so.6", b"GNU C Library (GNU libc) stable release version 2.39.")
    found = detect(Snapshot({"/lib64/libc.so.6": modern}))
    assert found.version == (2, 39) and not found.vsyscall_emulate
    assert found.as_dict() == {"version": "2.39", "source": "version string in /lib64/libc.so.6",
                               "vsyscall_emulate": False, "why": "glibc 2.39 does not call the vsyscall page"}
    linked = GuestFile("/lib/libc.so.6", b"\x7fELF", real="/lib/libc-2.12.so")
    found = detect(Snapshot({"/lib/libc.so.6": linked}))
    assert found.version == (2, 12) and found.source == "/lib/libc.so.6 -> /lib/libc-2.12.so"


def test_unknown_means_emulate() -> None:
    found = detect(Snapshot({}))
    assert found.version is None and found.vsyscall_emulate
    assert found.as_dict()["version"] is None and "unknown" in found.why


def test_fixture_vsyscall_probe_runs_as_the_host_kernel_allows() -> None:
    """Where the host maps the vsyscall page (emulate or xonly) the probe
    prints its line; where it does not (vsyscall=none) the call segfaults,
    as old glibc does on Debian's kernel."""
    probe = ROOT_TREE / "sbin/vsyscall-probe"
    assert os.access(probe, os.X_OK)
    mapped = "[vsyscall]" in Path("/proc/self/maps").read_text()
    done = subprocess.run([probe], capture_output=True)
    if mapped:
        assert (done.returncode, done.stdout) == (0, VSYSCALL_OK)
    else:
        assert done.returncode == -signal.SIGSEGV and done.stdout == b""


def test_a_32bit_userland_needs_no_emulation_whatever_its_glibc() -> None:
    old = GuestFile("/lib/libc.so.6", b"\x7fELF", real="/lib/libc-2.5.so")
    found = detect(Snapshot({"/lib/libc.so.6": old}), userland_32bit=True)
    assert found.version == (2, 5) and not found.vsyscall_emulate
    assert "32-bit vDSO" in found.why and found.as_dict()["vsyscall_emulate"] is False

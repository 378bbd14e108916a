"""The converted SAN/iQ 8 example boots under real Xen (tests/xenharness),
in a QEMU run of its own: one domU from the xl config vsaimage wrote, its
two system disks (copies made for this test, attached writable so that
the guest's writes reach them):

- the repacked initrd assembles the root's md RAID1 as /dev/md200 from
  both members ([UU] in /proc/mdstat) and mounts it as the root;
- rc.sysinit mounts /proc again, as CentOS 5's does; the PCI list it and
  the appliance's programs then read is still the fake one (the bind done
  again after that mount);
- the running init and shell are i386 programs (ELF class 1) on the
  x86_64 kernel;
- after `xl shutdown` and a clean halt, both disk files hold the same
  array data, with clean superblocks of the same event count, later than
  the convert's.

On failure the logs are kept in build/xen-logs/ and their tails printed.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_saniq8 import member
from xenharness import run as harness

from support import DebianKernel, Saniq8
from vsaimage.guest import md
from xenboot import FAKE_PCI_LINE, REPORT_END, Boot, XenRun, boot_all, clean_halt

pytestmark = pytest.mark.integration

NAME = "saniq8"


@dataclass(frozen=True)
class Booted:
    run: XenRun
    boot: Boot
    disks: tuple[Path, Path]  # the copies the domU wrote to


@pytest.fixture(scope="module")
def booted(saniq8_converted: Saniq8, debian_kernel: DebianKernel,
           tmp_path_factory: pytest.TempPathFactory) -> Booted:
    c = saniq8_converted
    work = tmp_path_factory.mktemp("xen-saniq8")
    disks = (work / "vsa-1.img", work / "vsa-2.img")
    config = c.cfg.read_text()
    for out, copy in zip(c.outs, disks, strict=True):
        subprocess.run(["cp", "--sparse=always", str(out), str(copy)], check=True)
        config = config.replace(f"target={out}'", f"target={copy}'")
    domu = harness.DomU(NAME, config, debian_kernel.vmlinuz, c.initrd, disks, REPORT_END, writable=True)
    run = boot_all([domu], {}, work / "run", config, (None, REPORT_END))
    boot = run.boots[NAME]
    return Booted(run, Boot(NAME, boot.console, boot.config, "/dev/md200"), disks)


def test_root_on_md200_with_both_members(booted: Booted) -> None:
    with booted.run.logs_kept():
        boot = booted.boot
        cmdline = boot.section("/proc/cmdline")
        assert "root=/dev/md200 " in cmdline
        assert " ro vga=791 quiet console=hvc0 " in cmdline  # the SYSLINUX label's arguments
        assert boot.mounts()["/"][2] == "/dev/md200"
        mdstat = boot.section("/proc/mdstat")
        both = r"^md200 : active (\(auto-read-only\) )?raid1 (xvd[ab]2\[[01]\] ?){2}$"
        assert re.search(both, mdstat, re.M), mdstat
        assert "[2/2] [UU]" in mdstat, mdstat


def test_fake_pci_list_after_rc_sysinit_mounts_proc_again(booted: Booted) -> None:
    with booted.run.logs_kept():
        boot = booted.boot
        assert "rc.sysinit: pci devices after the proc mount: 1" in boot.console
        assert boot.section("/proc/bus/pci/devices") == FAKE_PCI_LINE + "\n"


def test_i386_programs_run(booted: Booted) -> None:
    """init (pid 1) and the shell running boot-report are ELF32 on an x86_64
    kernel."""
    with booted.run.logs_kept():
        console = booted.boot.console
        assert re.search(r"^boot-report: begin kernel \S+ machine x86_64$", console, re.M)
        classes = re.findall(r"^boot-report: elf (/proc/\S+/exe) (\d)$", console, re.M)
        assert [c for _, c in classes] == ["1", "1"], classes


def test_clean_halt_leaves_both_members_the_same(booted: Booted, saniq8_converted: Saniq8) -> None:
    with booted.run.logs_kept():
        clean_halt(booted.boot)
    (data1, sb1), (data2, sb2) = (member(d) for d in booted.disks)
    converted = md.parse(member(saniq8_converted.outs[0])[1], "0.90")
    blocks = [md.parse(sb, "0.90") for sb in (sb1, sb2)]
    assert converted is not None and all(b is not None for b in blocks)
    assert all(b.clean and b.events > converted.events for b in blocks if b), blocks
    assert blocks[0].events == blocks[1].events  # type: ignore[union-attr]
    assert data1 == data2, "the members' data differ after the guest's shutdown"
    assert data1 != member(saniq8_converted.outs[0])[0], "the guest wrote nothing to its root"

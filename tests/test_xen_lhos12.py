"""LeftHand OS 12 boots under Xen: the lhos12 variant converted straight
from its `.img.tgz` (tests/conftest.py), in a QEMU run of its own.

Its /sbin/init is the fixture's upstart stand-in: it reads /etc/init/*.conf,
runs rc.sysinit and `rc 3` through the rcS and rc jobs (the last rc script,
/sbin/boot-report, prints what is checked here), and starts the job
vsaimage wrote, which must put the VSA's console program on hvc0: the
inittab, which upstart reads only for the runlevel, was not changed. Seven
small data disks are attached; the VSA must see each under /dev/scsi.
"""

from __future__ import annotations

import pytest
from xenharness import run as harness

from support import DebianKernel, Lhos12
from xenboot import REPORT_END, Boot, XenRun, targets

pytestmark = pytest.mark.integration

NAME = "lhos12"
PROMPT = " login: "  # mingetty's, on hvc0
KEPT = ("ro", "ramdisk_size=32768", "elevator=deadline", "ipv6.disable=1", "scsi_mod.scan=sync", "loglevel=7")
DROPPED = ("root=LABEL=/", "console=ttyS0,9600", "crashkernel=128M@33M")


@pytest.fixture(scope="module")
def xen12(lhos12: Lhos12, debian_kernel: DebianKernel, tmp_path_factory: pytest.TempPathFactory) -> XenRun:
    config = lhos12.out.with_suffix(".cfg").read_text()
    disks = targets(config)
    assert disks == (lhos12.out, *lhos12.data_disks)
    domu = harness.DomU(NAME, config, debian_kernel.vmlinuz, lhos12.out.with_suffix(".initrd"), disks, PROMPT)
    result = harness.run([domu], {NAME: config}, tmp_path_factory.mktemp("xen-lhos12"))
    print("\n".join(result.harness()), f"\nQEMU ran {result.seconds:.0f} s")
    boot = Boot(NAME, result.console(NAME), lhos12.cfg, "/dev/xvda1")
    return XenRun(result, {NAME: boot}, config, [NAME], "mingetty", PROMPT, {NAME: config})


def test_root_and_command_line(xen12: XenRun) -> None:
    with xen12.logs_kept():
        boot = xen12.boots[NAME]
        assert boot.mounts()["/"][2] == "/dev/xvda1"
        words = boot.section("/proc/cmdline").split()
        assert words[0] == "root=/dev/xvda1"
        for arg in KEPT:
            assert arg in words, arg
        for arg in DROPPED:
            assert arg not in words, arg


def test_upstart_started_the_console_job_on_hvc0(xen12: XenRun) -> None:
    with xen12.logs_kept():
        console = xen12.boots[NAME].console
        assert "init: upstart 0.6.5 stand-in" in console
        assert "vsaimage-hvc0" in console
        after = xen12.boots[NAME].after_report()
        assert PROMPT in after, "no login prompt on hvc0 after the report"
        assert REPORT_END in console


def test_seven_data_disks_under_dev_scsi(xen12: XenRun) -> None:
    with xen12.logs_kept():
        links = xen12.boots[NAME].section("/dev/scsi").split("\n")
        discs = sorted(line.split()[0] for line in links if line.endswith(("/disc",)) or "/disc " in line)
        assert [d for d in discs if "host1" in d] == [
            f"/dev/scsi/host1/bus0/target{t}/lun0/disc" for t in range(7)], links


def test_fake_pci_list(xen12: XenRun) -> None:
    with xen12.logs_kept():
        pci = xen12.boots[NAME].section("/proc/bus/pci/devices")
        assert pci.startswith("0000\t58530001"), pci

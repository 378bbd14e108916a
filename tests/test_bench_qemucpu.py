"""bench/qemucpu.py: the CPU of the suite's QEMUs, sampled from /proc (a
real QEMU with no machine to run, for the sampling itself)."""

from __future__ import annotations

import os
import subprocess
import time

from bench import qemucpu


def test_stat_times_count_fields_after_the_command() -> None:
    # a command with spaces and a ')' of its own; utime 250 and stime 50 ticks
    fields = ["S", "1", *["0"] * 9, "250", "50", *["0"] * 6, "123456", *["0"] * 30]
    start, cpu = qemucpu.stat_times("4242 (qemu) x (y) " + " ".join(fields))
    assert start == 123456
    assert cpu == 300 / os.sysconf("SC_CLK_TCK")


def test_kind_by_the_kernel_booted() -> None:
    qemu = "qemu-system-x86_64"
    assert qemucpu.kind([qemu, "-kernel", "/r/.cache/xen/xen-4.17-amd64", "-append", "x"]) == "xen"
    assert qemucpu.kind([qemu, "-kernel", "/var/tmp/.guestfs-0/appliance.d/kernel"]) == "appliance"


def test_a_running_qemu_is_sampled_with_its_test() -> None:
    env = {**os.environ, "PYTEST_CURRENT_TEST": "tests/test_x.py::test_y (call)"}
    qemu = subprocess.Popen(["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
                             "-S"], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        with qemucpu.sampled(interval=0.05) as seen:
            deadline = time.monotonic() + 10
            while not seen.machines and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        qemu.kill()
        qemu.wait()
    machines = [m for (pid, _), m in seen.machines.items() if pid == qemu.pid]
    assert [(m.kind, m.test) for m in machines] == [("appliance", "tests/test_x.py::test_y (call)")]
    assert seen.totals()["appliance"]["machines"] >= 1
    assert "tests/test_x.py" in seen.by_module()

"""Issue 6: the converted disk boots, with the real Debian kernel and the
repacked initrd, under QEMU (TCG).

Three boots run side by side, each with init=/sbin/boot-probe (a busybox
script in the example root, see fixtures/README.md) that prints files on the
serial console between two marker lines and powers the machine off:

- the converted disk: the initrd's pcihack bind-mounts the fake PCI list,
  and after switch_root /proc/bus/pci/devices holds only the Xen platform
  device, on the converted root;
- the converted `symlinks` variant, whose edited files sit behind symlinks,
  checked the same way;
- the *unconverted* input disk with the same initrd (the negative control):
  there is no /hack on that root, pcihack says so and the boot goes on, with
  the real PCI list in /proc/bus/pci.

The shared images are never written: QEMU runs with -snapshot. On failure
the assertion message names the serial log (copied to build/boot-logs/) and
shows its tail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from support import Converted, DebianKernel, Readback, Variant

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
BUSYBOX = REPO / ".cache" / "busybox-static" / "bin" / "busybox"
FAILED_LOGS = REPO / "build" / "boot-logs"  # serial logs of failed boots (gitignored)
QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 420  # s; a TCG boot takes ~60 s alone, more on a busy machine
PROBE = "/sbin/boot-probe"
FAKE_PCI_LINE = "0000\t58530001" + "\t0" * 15
RULE = ('KERNEL=="xvd*", PROGRAM="/etc/udev/scripts/xvd-hack.sh %k", '
        'SYMLINK+="scsi/%c", MODE="0600"')
PCIHACK_BOUND = "pcihack: bind-mounted /root/hack/bus/pci on /proc/bus/pci"
PCIHACK_NO_SOURCE = "pcihack: /root/hack/bus/pci missing, not mounting"


@dataclass
class Boot:
    name: str
    log: Path
    returncode: int | None  # None: killed at the timeout
    seconds: float

    @property
    def text(self) -> str:
        return self.log.read_bytes().decode("utf-8", "replace").replace("\r\n", "\n")

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.text.splitlines()[-lines:])

    def why(self, message: str) -> str:
        """An assertion message: what failed, where the log is, its tail.
        Only evaluated on failure: keeps a copy of the log out of pytest's
        basetemp rotation too."""
        state = ("killed after the timeout" if self.returncode is None
                 else f"QEMU exited {self.returncode}")
        kept = FAILED_LOGS / f"{self.name}-{os.getpid()}.serial.log"
        try:
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.log, kept)
        except OSError:
            kept = self.log
        return (f"{self.name} boot: {message} ({state} after {self.seconds:.0f} s; "
                f"serial log kept at {kept})\n--- last lines ---\n{self.tail()}")

    def pcihack_lines(self) -> list[str]:
        # The initramfs prints "Begin: Running /scripts/init-bottom ... " with
        # no newline before running the scripts: search, not match.
        return [m.group(0) for m in re.finditer(r"pcihack: [^\n]*", self.text)]

    def report(self) -> dict[str, str | None]:
        """The probe's sections: path -> content (None: missing on the guest).
        Asserts that the probe started and reached its end marker."""
        text = self.text
        start = re.search(r"^boot-probe: start pid 1 kernel (\S+)$", text, re.M)
        assert start, self.why("the probe never started (no root, or no init)")
        end = text.find("\nboot-probe: end\n", start.end())
        assert end >= 0, self.why("the probe did not reach its end marker")
        sections: dict[str, str | None] = {"kernel": start.group(1)}
        current: str | None = None
        for line in text[start.end() + 1:end + 1].splitlines():
            m = re.fullmatch(r"boot-probe: (file|missing) (\S+)", line)
            if m:
                current = m.group(2)
                sections[current] = "" if m.group(1) == "file" else None
            elif current is not None and sections[current] is not None:
                sections[current] = f"{sections[current]}{line}\n"
        return sections


def qemu_command(disk: Path, kernel: Path, initrd: Path, root_part: int, log: Path,
                 extra: str = "") -> list[str]:
    append = (f"root=/dev/vda{root_part} console=ttyS0 panic=-1 init={PROBE} {extra}").strip()
    return [
        QEMU, "-accel", "tcg", "-m", "1024", "-nodefaults", "-display", "none",
        "-no-reboot", "-snapshot", "-serial", f"file:{log}",
        "-drive", f"file={disk},format=raw,if=virtio",
        "-kernel", str(kernel), "-initrd", str(initrd), "-append", append,
    ]  # fmt: skip


def boot_all(runs: dict[str, list[str]], logs: dict[str, Path],
             timeout: float = BOOT_TIMEOUT) -> dict[str, Boot]:
    """Start every QEMU at once (TCG uses one core each) and wait for all."""
    started = time.monotonic()
    procs = {name: subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.STDOUT)
             for name, cmd in runs.items()}
    boots: dict[str, Boot] = {}
    try:
        for name, proc in procs.items():
            left = max(1.0, timeout - (time.monotonic() - started))
            try:
                code: int | None = proc.wait(left)
            except subprocess.TimeoutExpired:
                code = None
            boots[name] = Boot(name, logs[name], code, time.monotonic() - started)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return boots


@pytest.fixture(scope="module")
def boots(converted: Converted, symlinks_converted: Variant, debian_kernel: DebianKernel,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Boot]]:
    assert shutil.which(QEMU), f"{QEMU} is not installed (make setup installs qemu-system-x86)"
    d = tmp_path_factory.mktemp("boot")
    # name -> (disk, initrd, root partition)
    disks = {"converted": (converted.out, converted.initrd, converted.run.doc["root_partition"]),
             "unconverted": (converted.input, converted.initrd, converted.run.doc["root_partition"]),
             "symlinks": (symlinks_converted.out, symlinks_converted.initrd,
                          symlinks_converted.run.doc["root_partition"])}
    logs = {name: d / f"{name}.serial.log" for name in disks}
    runs = {name: qemu_command(disk, debian_kernel.vmlinuz, initrd, root, logs[name])
            for name, (disk, initrd, root) in disks.items()}
    yield boot_all(runs, logs)


@pytest.mark.parametrize("name", ["converted", "symlinks"])
def test_converted_disk_boots_with_the_fake_pci_list(boots: dict[str, Boot], name: str, converted: Converted,
                                                     symlinks_converted: Variant,
                                                     debian_kernel: DebianKernel) -> None:
    """The example, and the variant whose edited files sit behind symlinks."""
    boot = boots[name]
    doc = (converted if name == "converted" else symlinks_converted).run.doc
    assert boot.pcihack_lines() == [PCIHACK_BOUND], boot.why("pcihack did not bind-mount")
    report = boot.report()
    assert report["kernel"] == debian_kernel.version, boot.why("another kernel booted")
    pci = report["/proc/bus/pci/devices"]
    assert pci == FAKE_PCI_LINE + "\n", boot.why(
        f"/proc/bus/pci/devices after switch_root is {pci!r}, not only the Xen platform device")
    # The root is the converted one: the bind mount comes from it, and the
    # files only the conversion writes are there.
    mounts = [line.split() for line in (report["/proc/self/mountinfo"] or "").splitlines()]
    by_point = {f[4]: f for f in mounts if len(f) > 9}
    assert "/" in by_point and "/proc/bus/pci" in by_point, boot.why("mountinfo lacks / or the bind")
    rootfs, bind = by_point["/"], by_point["/proc/bus/pci"]
    root = f"/dev/vda{doc['root_partition']}"
    assert rootfs[-2] == root, boot.why(f"the root is {rootfs[-2]}, not {root}")
    assert (bind[2], bind[3]) == (rootfs[2], "/hack/bus/pci"), boot.why(
        "/proc/bus/pci is not a bind of the root's /hack/bus/pci")
    assert report["/hack/bus/pci/devices"] == FAKE_PCI_LINE + "\n", boot.why("no fake list")
    assert RULE in (report["/etc/udev/rules.d/53-devfs-hack.rules"] or ""), boot.why(
        "the root has no 53-devfs-hack.rules: not the converted disk")
    assert boot.returncode == 0, boot.why("the probe did not power the machine off")


def test_without_a_fake_list_pcihack_explains_and_the_boot_goes_on(
        boots: dict[str, Boot]) -> None:
    """The negative control: same kernel and initrd, unconverted root."""
    boot = boots["unconverted"]
    assert boot.pcihack_lines() == [PCIHACK_NO_SOURCE], boot.why("pcihack's explanation missing")
    report = boot.report()
    assert report["/hack/bus/pci/devices"] is None
    assert report["/etc/udev/rules.d/53-devfs-hack.rules"] is None
    pci = (report["/proc/bus/pci/devices"] or "").splitlines()
    vendors = {line.split("\t")[1] for line in pci if "\t" in line}
    # QEMU's i440FX host bridge and the virtio disk, and no Xen platform device.
    assert {"80861237", "1af41001"} <= vendors and "58530001" not in vendors, boot.why(
        f"expected the real PCI list, got {pci}")
    mounts = [line.split() for line in (report["/proc/self/mountinfo"] or "").splitlines()]
    assert not [f for f in mounts if len(f) > 4 and f[4] == "/proc/bus/pci"], boot.why(
        "something is mounted on /proc/bus/pci")
    assert boot.returncode == 0, boot.why("the probe did not power the machine off")


# --- edit 3: xvd-hack.sh as written into the converted image ----------------

# DESIGN.md, edit 3: disk -> (host, target).
TABLE = {"xvda": (0, 0), "xvdb": (0, 2), "xvdc": (1, 0), "xvdd": (1, 1), "xvde": (1, 2),
         "xvdf": (1, 3), "xvdg": (1, 4)}
PARTITIONS = ("1", "2", "5", "9", "12", "15")
OUTSIDE = ("xvdh", "xvdh1", "xvdz", "xvdaa", "xvdab1", "xvd", "xvda0", "xvda01", "xvda1a",
           "sda", "sda1", "hda", "vda5", "XVDA", "xvda/1", "")


def expected_name(name: str) -> str | None:
    m = re.fullmatch(r"(xvd[a-g])([1-9][0-9]*)?", name)
    if not m:
        return None
    host, target = TABLE[m.group(1)]
    tail = "disc" if m.group(2) is None else f"part{m.group(2)}"
    return f"host{host}/bus0/target{target}/lun0/{tail}"


@pytest.mark.parametrize("shell", [["sh"], [str(BUSYBOX), "sh"]], ids=["sh", "busybox"])
def test_converted_xvd_hack_script(readback: Readback, tmp_path: Path, shell: list[str]) -> None:
    data = readback.files["/etc/udev/scripts/xvd-hack.sh"]
    assert data is not None and readback.modes["/etc/udev/scripts/xvd-hack.sh"] == 0o755
    script = tmp_path / "xvd-hack.sh"
    script.write_bytes(data)
    names = [*TABLE, *(d + p for d in TABLE for p in PARTITIONS), *OUTSIDE]
    assert expected_name("xvdc12") == "host1/bus0/target0/lun0/part12"
    for name in names:
        done = subprocess.run([*shell, str(script), name], capture_output=True, text=True,
                              timeout=30)
        want = expected_name(name)
        if want is None:
            assert (done.returncode, done.stdout) == (1, ""), name
        else:
            assert (done.returncode, done.stdout) == (0, want + "\n"), name

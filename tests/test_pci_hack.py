"""--pci-hack and --skip pci mean what they say, initrd included: `bind`
patches no binary, `binary` gives an initrd without pcihack, and `--skip pci`
leaves the initrd byte for byte as given; verify, given the same choice,
agrees. (`both`, the default, is the session's converted example:
tests/test_convert.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from support import DebianKernel, run_cli

pytestmark = pytest.mark.integration

SCRIPT = "scripts/init-bottom/pcihack"
FAKE = "/hack/bus/pci/devices"


def listing(initrd: Path) -> list[str]:
    out = subprocess.run(["lsinitramfs", str(initrd)], capture_output=True, text=True, check=True).stdout
    return [line.removeprefix("usr/") for line in out.splitlines()]


@pytest.mark.parametrize(("args", "pci_status", "writes", "initrd_status", "has_pcihack"), [
    (("--pci-hack", "bind"), "applied", [FAKE], "applied", True),
    (("--pci-hack", "binary"), "applied", [FAKE, "/etc/lefthand/brand/common/fst",
                                           "/etc/lefthand/system/lib/hal/libhal.so",
                                           "/etc/lefthand/system/liblhnsys.so", "/sbin/hwid"],
     "already applied", False),
    (("--skip", "pci"), "skipped", [], "skipped", False),
], ids=["bind", "binary", "skip-pci"])
def test_pci_choice(args: tuple[str, ...], pci_status: str, writes: list[str], initrd_status: str,
                    has_pcihack: bool, example_image: Path, debian_kernel: DebianKernel,
                    tmp_path: Path) -> None:
    out = tmp_path / "out.img"
    r = run_cli("convert", example_image, "--kernel", debian_kernel.vmlinuz, "--initrd",
                debian_kernel.initrd, "-o", out, "--skip", "modules", "--json", *args)
    assert r.code == 0, r.stderr
    steps = {s["step"]: s for s in r.doc["steps"]}
    assert steps["pci"]["status"] == pci_status
    assert [c["write"] for c in steps["pci"]["changes"]] == writes
    assert steps["initrd"]["status"] == initrd_status
    initrd = tmp_path / "out.initrd"
    assert (SCRIPT in listing(initrd)) is has_pcihack
    if "--skip" in args:
        assert initrd.read_bytes() == debian_kernel.initrd.read_bytes()
    # verify, given the same choice, finds every edit (and the initrd) as convert left them
    v = run_cli("verify", out, "--initrd", initrd, "--skip", "modules", "--json", *args)
    assert v.code == 0, v.stdout + v.stderr
    assert ("initrd" in {e["step"] for e in v.doc["edits"]}) is ("--skip" not in args)

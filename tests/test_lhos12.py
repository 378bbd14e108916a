"""LeftHand OS 12 (the `lhos12` variant) converted straight from its KVM
download form, a GNU sparse `.img.tgz`, with seven data disks and --extra:
the output stays sparse, verify passes, and a separate read-only handle
finds the upstart console job, the inittab untouched, /dev/scsi names for
seven slots and the vendor's kernel arguments in the xl config."""

from __future__ import annotations

from pathlib import Path

import pytest

from support import LHOS12_MEMBER as MEMBER
from support import Lhos12, fingerprint, run_cli
from xl_reader import parse_spec

pytestmark = pytest.mark.integration

MiB = 2**20


def test_output_is_the_whole_disk_and_sparse(lhos12: Lhos12) -> None:
    st = lhos12.out.stat()
    assert st.st_size == 32 * 2**30
    # about the variant's data plus the modules: never the 32 GiB
    assert st.st_blocks * 512 < lhos12.raw.stat().st_blocks * 512 + 64 * MiB
    assert fingerprint(lhos12.archive) == lhos12.sha_before
    facts = lhos12.run.doc["input_facts"]
    assert facts["format"] == "tar" and facts["tar"] == {"compression": ["gzip"], "disks": [MEMBER],
                                                         "disk": MEMBER}


def test_verify_passes(lhos12: Lhos12) -> None:
    r = run_cli("verify", lhos12.out, "--initrd", lhos12.out.with_suffix(".initrd"))
    assert r.code == 0, r.stderr


def test_xl_config(lhos12: Lhos12) -> None:
    cfg = lhos12.cfg
    assert cfg["root"] == "/dev/xvda1"  # never LABEL=/: slot B carries the same label
    assert cfg["extra"] == ("ro ramdisk_size=32768 elevator=deadline ipv6.disable=1 scsi_mod.scan=sync "
                            "console=hvc0 net.ifnames=0 vsyscall=emulate loglevel=7")
    disks = [parse_spec(d)["vdev"] for d in cfg["disk"]]  # type: ignore[union-attr]
    assert disks == ["xvda", *(f"xvd{c}" for c in "cdefghi")]
    steps = {s["step"]: s for s in lhos12.run.doc["steps"]}
    args = steps["xl"]["details"]["kernel_args"]
    dropped = [d["arg"] for d in args["dropped"]]
    assert dropped == ["root=LABEL=/", "console=ttyS0,9600", "crashkernel=128M@33M"]
    assert args["extra"] == ["loglevel=7"]


def test_console_is_an_upstart_job(lhos12: Lhos12) -> None:
    f = lhos12.files
    job = (f["/etc/init/vsaimage-hvc0.conf"] or b"").decode()
    assert "exec /sbin/mingetty --loginprog=/sbin/lhn_login /dev/hvc0\n" in job
    assert "\nrespawn\n" in job
    original = (Path(__file__).parent.parent / "fixtures/lhos12-root/etc/inittab").read_bytes()
    assert f["/etc/inittab"] == original  # upstart reads only its runlevel
    assert f["/etc/init/tty.conf"] == (Path(__file__).parent.parent / "fixtures/lhos12-root/etc/init/tty.conf"
                                       ).read_bytes()
    assert b"\nACTIVE_CONSOLES=  # vsaimage:" in (f["/etc/sysconfig/init"] or b"")
    assert b"hvc0" in (f["/etc/securetty"] or b"").split()
    assert b'#KERNEL=="hvc*"' in (f["/etc/udev/rules.d/10-console.rules"] or b"")


def test_seven_scsi_slots(lhos12: Lhos12) -> None:
    script = (lhos12.files["/etc/udev/scripts/xvd-hack.sh"] or b"").decode()
    for n, c in enumerate("cdefghi"):
        assert f"xvd{c}*) host=1 bus=0 target={n} lun=0 ;;" in script


def test_root_holds_boot(lhos12: Lhos12) -> None:
    doc = lhos12.run.doc
    assert (doc["root_partition"], doc["boot_partition"], doc["boot_in_root"]) == (1, None, True)

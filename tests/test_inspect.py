"""inspect on the example images and on bad input."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fixtures.build_image import LAYOUTS, VSA_VERSION
from support import NOBODY, head, nobody_dir, run_cli

pytestmark = pytest.mark.integration


def assert_one_line_error(r_code: int, stderr: str, *needles: str) -> None:
    assert r_code == 2, stderr
    # progress lines may precede it (logs); the error itself is one line
    lines = [line for line in stderr.splitlines() if line.startswith("vsaimage: error: ")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(scope="module")
def stock_doc(example_image: Path) -> dict[str, Any]:
    """`inspect --json` of the example, run once and read by two tests."""
    r = run_cli("inspect", example_image, "--json")
    assert r.code == 0, r.stderr
    return r.doc


def test_inspect_stock_json(stock_doc: dict[str, Any]) -> None:
    doc = stock_doc
    layout = LAYOUTS["stock"]
    assert doc["root"]["partition"] == layout.root_part == 5
    assert doc["boot"]["partition"] == layout.boot_part == 1
    assert doc["vsa_version"] == VSA_VERSION
    assert doc["glibc"]["version"] == "2.5" and doc["glibc"]["vsyscall_emulate"] is True
    assert [p["number"] for p in doc["partitions"]] == [p.number for p in layout.partitions]
    assert "2.6.18-vsa" in doc["kernel_versions"]
    assert doc["boot_kernels"] and all(k.startswith("vmlinuz") for k in doc["boot_kernels"])
    assert {e["step"]: e["status"] for e in doc["edits"]} == {**dict.fromkeys(
        ("mobo-uuid", "pci", "udev", "fstab", "platform", "drivers", "modules", "console"), "not applied"),
        "bootloader": "not used"}


def test_inspect_other_layout_unprivileged(alt_image: Path) -> None:
    """Root on another logical partition, /boot by label or UUID, other offsets;
    run as nobody on a copy that user can read."""
    copy = nobody_dir() / "alt.img"
    subprocess.run(["cp", "--sparse=always", str(alt_image), str(copy)], check=True)
    copy.chmod(0o444)
    r = run_cli("inspect", copy, "--json", user=NOBODY)
    assert r.code == 0, r.stderr
    layout = LAYOUTS["alt"]
    assert r.doc["root"]["partition"] == layout.root_part != 5
    assert r.doc["boot"]["partition"] == layout.boot_part
    assert "fstab" in r.doc["boot"]["reason"]


def test_inspect_human_output_without_forced_tcg(example_image: Path) -> None:
    """Without the TCG setting the tool tries KVM first; where a KVM launch
    fails (nested KVM, as on the machines this runs on) it must retry under
    TCG by itself. A hung one costs its 10 s of silence (test_guest_launch)."""
    r = run_cli("inspect", example_image, env={"LIBGUESTFS_BACKEND_SETTINGS": ""})
    assert r.code == 0, r.stderr
    if "KVM" in r.stderr:
        assert "retrying with TCG" in r.stderr
    assert "Partitions of" in r.stdout and "root" in r.stdout and "not applied" in r.stdout
    # not a terminal: plain timestamped progress lines on stderr
    assert "appliance launch: done" in r.stderr


def test_no_vsa_root(tmp_path: Path) -> None:
    img = tmp_path / "plain.img"
    subprocess.run(["truncate", "-s", "64M", str(img)], check=True)
    subprocess.run(["sfdisk", "-q", str(img)], input="start=2048, size=61440, type=83\n", text=True,
                   check=True)
    empty = tmp_path / "tree"
    (empty / "etc").mkdir(parents=True)
    subprocess.run(["mke2fs", "-q", "-F", "-t", "ext3", "-d", str(empty), "-E", f"offset={2048 * 512}",
                    str(img), "30M"], check=True)
    r = run_cli("inspect", img)
    assert_one_line_error(r.code, r.stderr, str(img), "no partition holds a VSA root")


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "random", "zeros"])
def test_bad_image_files(tmp_path: Path, case: str) -> None:
    p = tmp_path / f"{case}.img"
    if case == "directory":
        p.mkdir()
    elif case == "empty":
        p.touch()
    elif case == "random":
        p.write_bytes(os.urandom(2**20))
    elif case == "zeros":
        p.write_bytes(bytes(2**20))
    r = run_cli("inspect", p)
    expected = {"missing": "no such file", "directory": "is a directory", "empty": "empty file",
                "random": "no partition table", "zeros": "no partition table"}[case]
    assert_one_line_error(r.code, r.stderr, str(p), expected)


def test_unreadable_image(example_image: Path) -> None:
    p = nobody_dir() / "secret.img"
    p.write_bytes(head(example_image))
    p.chmod(0o600)
    r = run_cli("inspect", p, user=NOBODY)
    assert_one_line_error(r.code, r.stderr, str(p), "permission denied")


def test_inspect_shows_findings_before_converting(stock_doc: dict[str, Any]) -> None:
    doc = stock_doc
    tty1 = "1:2345:respawn:/sbin/mingetty --loginprog=/sbin/lhn_login tty1"
    assert doc["findings"]["console"]["tty1"] == tty1
    # PLATFORM_DIR is assigned before brand.init sources lhn_functions, which may assign it again
    [note] = doc["findings"]["platform"]["notes"]
    assert "`ln -sf platform.xml.$platform $PLATFORM_DIR/platform.xml`" in note and "`$PLATFORM_DIR`" in note
    assert [(r["file"], r["line"]) for r in doc["findings"]["fstab"]["rewritten"]] == [
        *(("/etc/fstab", n) for n in (1, 2, 3, 8)), ("/boot/grub/grub.conf", 15)]
    assert doc["recorded_macs"] == [
        {"mac": "00:50:56:9a:3c:11", "source": "/etc/sysconfig/network-scripts/ifcfg-eth0 HWADDR"}]


def test_inspect_lhos12_before_converting() -> None:
    """LeftHand OS 12 (RHEL 6): upstart found from /sbin/init and its jobs,
    the console planned as an upstart job, the grub entry's arguments kept
    and dropped, 7 data-disk slots, /boot inside the root."""
    from fixtures.build_image import cached_image
    from vsaimage.cli.render import Screen, show_inspect

    r = run_cli("inspect", cached_image("lhos12"), "--json")
    assert r.code == 0, r.stderr
    doc = r.doc
    assert doc["root"]["partition"] == 1 and doc["boot"] is None and doc["boot_in_root"] is True
    assert doc["init_system"]["name"] == "upstart"
    assert doc["init_system"]["evidence"][0] == "/sbin/init: file naming 'upstart 0.6.5'"
    console = doc["findings"]["console"]
    assert console["file"] == "/etc/init/vsaimage-hvc0.conf"
    assert console["hvc0"] == "exec /sbin/mingetty --loginprog=/sbin/lhn_login /dev/hvc0"
    assert "started by /etc/init/start-ttys.conf" in console["tty1"]
    args = doc["kernel_args"]
    assert args["kept"] == ["ro", "ramdisk_size=32768", "elevator=deadline", "ipv6.disable=1",
                            "scsi_mod.scan=sync"]
    dropped = [d["arg"] for d in args["dropped"]]
    assert dropped == ["root=LABEL=/", "console=ttyS0,9600", "crashkernel=128M@33M"]
    assert args["added"] == ["console=hvc0", "net.ifnames=0", "vsyscall=emulate"]
    slots = doc["data_disks"]
    assert slots["count"] == 7 and [s["xen"] for s in slots["slots"]] == [f"xvd{c}" for c in "cdefghi"]
    # the human lines are drawn from this document (the CLI's human path: the stock inspect above)
    out = io.StringIO()
    show_inspect(Screen(out), doc)
    human = out.getvalue()
    for said in ("init system", "hvc0 will run", "kernel args dropped", "7 (xvdc..xvdi)"):
        assert said in human, said

"""convert on the example image, read back independently (a separate read-only
libguestfs handle, lsinitramfs, an xl-config reader of the tests' own)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fixtures.build_image import LAYOUTS
from support import NOBODY, Converted, DebianKernel, Readback, Run, fingerprint, nobody_dir, run_cli
from vsaimage.edits.console import AUTOLOGIN_WARNING
from xl_reader import parse as parse_xl

pytestmark = pytest.mark.integration

SOURCE = Path(__file__).resolve().parent.parent / "fixtures" / "vsa-root"
PCI_LINE = b"0000\t58530001" + b"\t0" * 15 + b"\n"
PATCHED_BINARIES = (
    "/etc/lefthand/brand/common/fst",
    "/etc/lefthand/system/lib/hal/libhal.so",
    "/etc/lefthand/system/liblhnsys.so",
    "/sbin/hwid",
)


def test_every_step_applied_in_one_launch(converted: Converted) -> None:
    doc = converted.run.doc
    assert doc["success"] is True
    assert {s["step"]: s["status"] for s in doc["steps"]} == {
        "copy": "applied", "mobo-uuid": "applied", "pci": "applied", "udev": "applied",
        "fstab": "applied", "platform": "applied", "drivers": "applied", "modules": "applied",
        "console": "applied", "initrd": "applied", "xl": "applied", "bootloader": "skipped",
    }
    assert doc["appliance_launches"] == 1
    assert doc["root_partition"] == 5 and doc["boot_partition"] == 1


def test_verbose_says_where_each_change_goes(converted: Converted) -> None:
    """-v: the roles found and why, the appliance's drive, every file
    written with its size and mode, and the renames; none of it without."""
    verbose, plain = converted.minimal_run.stderr, converted.run.stderr
    for line in ("root: partition 5 (holds /etc/lefthand and /etc/inittab)", "appliance: TCG",
                 "write /etc/fstab (", "install the modules into /lib/modules/", "renamed into place: "):
        assert line in verbose, verbose
        assert line not in plain, plain


def test_input_untouched_and_nothing_partial(converted: Converted) -> None:
    assert fingerprint(converted.input) == converted.input_sha_before
    assert not list(converted.out.parent.glob("*.partial")) and not list(
        converted.out.parent.glob(".*.partial"))
    for p in (converted.out, converted.initrd, converted.cfg):
        assert p.is_file()


def test_output_is_sparse(converted: Converted) -> None:
    st = converted.out.stat()
    assert st.st_size == converted.input.stat().st_size
    # The example holds tens of MB plus the modules tree; far below 6 GiB.
    assert st.st_blocks * 512 < st.st_size / 4


def test_motherboard_uuid_fallback(readback: Readback) -> None:
    text = readback.files["/etc/init.d/lhn_functions"]
    assert text is not None
    body = text.decode("latin-1")
    start = body.index("didMotherboardChange")
    assert "dmidecode" in body[start:]
    assert "/sys/hypervisor/uuid" in body[start:]
    assert "160d007e-0f9e-11e1-b59f-" in body[start:]
    subprocess.run(["sh", "-n"], input=text, check=True)


def test_fake_pci_list(readback: Readback) -> None:
    assert readback.files["/hack/bus/pci/devices"] == PCI_LINE
    assert readback.modes["/hack/bus/pci/devices"] == 0o644


def test_binaries_point_at_hack(readback: Readback) -> None:
    for path in PATCHED_BINARIES:
        data = readback.files[path]
        assert data is not None, path
        assert b"/proc/bus/pci/devices" not in data
        original = (SOURCE / path.lstrip("/")).read_bytes()
        assert len(data) == len(original)
        assert data.count(b"/hack/bus/pci/devices") == original.count(b"/proc/bus/pci/devices") > 0
        assert readback.modes[path] == (SOURCE / path.lstrip("/")).stat().st_mode & 0o7777


def test_udev_rule_and_script(readback: Readback) -> None:
    rule = readback.files["/etc/udev/rules.d/53-devfs-hack.rules"]
    assert rule is not None and b'KERNEL=="xvd*", PROGRAM="/etc/udev/scripts/xvd-hack.sh %k"' in rule
    assert readback.modes["/etc/udev/scripts/xvd-hack.sh"] == 0o755


def test_platform_and_drivers(readback: Readback) -> None:
    brand = readback.files["/etc/lefthand/brand/brand.init"]
    assert brand is not None and b"platform.xml.vmw" in brand
    drivers = readback.files["/etc/lefthand/brand/rc.drivers"]
    assert drivers is not None
    for mod in (b"xen_blkfront", b"xen_netfront", b"raid1", b"rd_size=32768"):
        assert mod in drivers
    subprocess.run(["sh", "-n"], input=drivers, check=True)


def test_fstab_names_filesystems_by_uuid(readback: Readback, converted: Converted) -> None:
    fstab = readback.files["/etc/fstab"]
    assert fstab is not None and b"/dev/sd" not in fstab
    specs = {line.split()[1]: line.split()[0] for line in fstab.decode().splitlines() if line.strip()}
    stock = LAYOUTS["stock"]
    for mount, number in (("/", 5), ("/boot", 1), ("/var/log", 6), ("swap", 3)):
        assert specs[mount] == f"UUID={stock.partition(number).uuid}", mount
    fstab_step = next(s for s in converted.run.doc["steps"] if s["step"] == "fstab")
    assert [(r["file"], r["line"]) for r in fstab_step["details"]["rewritten"]] == [
        *(("/etc/fstab", n) for n in (1, 2, 3, 8)), ("/boot/grub/grub.conf", 15)]
    # the boot loader's kernel line names the root as Xen does (the VSA's
    # grub.conf is read on the boot partition, where its fstab mounts it)
    grub = (readback.files["/boot/grub/grub.conf"] or b"").decode()
    kernel_lines = [line.split() for line in grub.splitlines() if line.strip().startswith("kernel ")]
    assert [k for k in kernel_lines if "root=/dev/xvda5" in k] == kernel_lines != []


def test_console(readback: Readback) -> None:
    inittab = readback.files["/etc/inittab"]
    assert inittab is not None
    lines = inittab.decode().splitlines()
    for ident in ("1:", "2:", "3:", "4:", "5:", "6:", "s0:"):
        assert not any(line.startswith(ident) for line in lines), ident
        assert any(line.startswith("#" + ident) for line in lines), ident
    # tty1 ran the VSA's configuration interface: hvc0 runs it, with only the device changed
    assert "#1:2345:respawn:/sbin/mingetty --loginprog=/sbin/lhn_login tty1" in lines
    assert "hvc:2345:respawn:/sbin/mingetty --loginprog=/sbin/lhn_login hvc0" in lines
    securetty = readback.files["/etc/securetty"]
    assert securetty is not None and securetty.decode().splitlines().count("hvc0") == 1


def test_modules_copied(readback: Readback, debian_kernel: DebianKernel) -> None:
    assert readback.modules_dep is not None and b"xen-blkfront" in readback.modules_dep
    assert readback.links == {"build": None, "source": None}
    ko = [p for p in readback.paths if p.startswith(f"/lib/modules/{debian_kernel.version}/")
          and ".ko" in p]
    host = list(debian_kernel.modules.rglob("*.ko*"))
    assert len(ko) == len(host)


def test_initrd_can_mount_the_root_under_xen(converted: Converted, debian_kernel: DebianKernel) -> None:
    """Debian's initrd (MODULES=most) has both: nothing to add."""
    step = next(s for s in converted.run.doc["steps"] if s["step"] == "initrd")
    assert step["details"]["drivers"] == {
        "needed": ["xen_blkfront", "ext4|ext3"], "missing": [], "added": [], "files": [],
        "unavailable": [], "source": str(debian_kernel.modules),
        "why": "each is in the initrd or built into the kernel"}


def test_initrd_repack_starts_during_the_launch(converted: Converted) -> None:
    """The repack for the likely root's drivers starts while the appliance
    boots, and the plan, finding that root, takes it: one repack, no
    second after the plan."""
    for run in (converted.minimal_run, converted.run):
        lines = run.stderr.splitlines()
        started = [n for n, line in enumerate(lines) if line.endswith("initrd repack: started")]
        launched = next(n for n, line in enumerate(lines) if "appliance launch: done" in line)
        assert len(started) == 1 and started[0] < launched, run.stderr


def test_initrd_has_pcihack(converted: Converted) -> None:
    listing = subprocess.run(["lsinitramfs", str(converted.initrd)], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    assert "usr/scripts/init-bottom/pcihack" in listing or "scripts/init-bottom/pcihack" in listing


def test_xl_config(converted: Converted) -> None:
    cfg = parse_xl(converted.cfg.read_text())
    assert cfg["type"] == "pv"
    assert cfg["root"] == "/dev/xvda5"
    # the example VSA has CentOS 5's glibc 2.5, which calls the vsyscall page
    # the VSA's own arguments but root=LABEL=/ and its VGA/serial consoles
    assert cfg["extra"] == "ro quiet console=hvc0 net.ifnames=0 vsyscall=emulate"
    assert converted.run.doc["glibc"]["version"] == "2.5"
    assert converted.run.doc["glibc"]["source"] == "/lib64/libc.so.6 -> /lib64/libc-2.5.so"
    assert cfg["ramdisk"] == str(converted.initrd)
    vif = cfg["vif"]
    # the VSA's own MAC (its serial id), as its ifcfg-eth0 records it
    assert isinstance(vif, list) and "mac=00:50:56:9a:3c:11," in vif[0]
    assert converted.run.doc["xl"]["mac_source"] == "/etc/sysconfig/network-scripts/ifcfg-eth0 HWADDR"
    assert str(converted.out) in cfg["disk"][0]


def test_same_input_gives_same_config(converted: Converted) -> None:
    """Two converts of the same input (one --modules minimal, one full) wrote
    the same xl config: identity does not change between runs."""
    assert converted.cfg.read_bytes() == converted.minimal_cfg


def test_minimal_modules(converted: Converted) -> None:
    def modules(doc: dict[str, object]) -> dict[str, object]:
        steps = doc["steps"]
        assert isinstance(steps, list)
        return next(s["details"] for s in steps if s["step"] == "modules")

    full, minimal = modules(converted.run.doc), modules(converted.minimal_run.doc)
    assert minimal["minimal"] is True and full["minimal"] is False
    # the full run asked nothing (--modules auto): the stock root has room
    assert str(full["why"]).startswith("auto: full: partition 5 (/) has ")
    assert str(minimal["why"]).startswith("minimal, as asked: partition 5 (/) has ")
    assert isinstance(full["bytes"], int) and isinstance(minimal["bytes"], int)
    assert minimal["bytes"] < 0.05 * full["bytes"]
    # the full tree goes by image, a minimal one through the channel
    assert (full["transport"], minimal["transport"]) == ("image", "tar")
    timings = {name: run.doc["timings"] for name, run in
               (("full", converted.run), ("minimal", converted.minimal_run))}
    print("convert timings:", timings)


def test_idempotent_and_unprivileged(converted: Converted, debian_kernel: DebianKernel) -> None:
    """convert on its own output, as an unprivileged user: every step is
    already applied and nothing is duplicated."""
    d = nobody_dir() / "again"
    d.mkdir()
    d.chmod(0o777)
    out = d / "vsa-xen.img"
    r = run_cli("convert", converted.out, "--kernel", debian_kernel.vmlinuz, "--initrd",
                converted.initrd, "-o", out, "--json", user=NOBODY)
    assert r.code == 0, r.stderr
    statuses = {s["step"]: s["status"] for s in r.doc["steps"] if s["step"] not in ("copy", "xl")}
    # --boot direct does not use the bootloader step
    assert statuses.pop("bootloader") == "skipped"
    assert set(statuses.values()) == {"already applied"}, statuses
    assert r.doc["appliance_launches"] == 1
    assert out.stat().st_uid == NOBODY
    # identity comes from the root filesystem UUID, which the edits never change
    assert parse_xl((d / "vsa-xen.cfg").read_text())["uuid"] == parse_xl(converted.cfg.read_text())["uuid"]
    assert (d / "vsa-xen.initrd").read_bytes() == converted.initrd.read_bytes()


def test_verify_converted(converted: Converted, debian_kernel: DebianKernel) -> None:
    r = run_cli("verify", converted.out, "--initrd", converted.initrd, "--kernel-version",
                debian_kernel.version, "--json")
    assert r.code == 0, r.stderr
    assert r.doc["missing"] == []
    assert {e["step"] for e in r.doc["edits"]} == {
        "mobo-uuid", "pci", "udev", "fstab", "platform", "drivers", "modules", "console", "bootloader",
        "initrd", "initrd-drivers"}
    # converted with --boot direct: no menu of vsaimage's in /boot
    assert {e["step"]: e["status"] for e in r.doc["edits"]}["bootloader"] == "not used"


def test_verify_unconverted_names_what_is_missing(converted: Converted, debian_kernel: DebianKernel) -> None:
    r = run_cli("verify", converted.input, "--initrd", debian_kernel.initrd)
    assert r.code == 1
    missing = "mobo-uuid, pci, udev, fstab, platform, drivers, modules, console, initrd"
    assert f"not converted: missing {missing}" in " ".join(r.stdout.split())


@pytest.fixture(scope="module")
def dry_run(converted: Converted, debian_kernel: DebianKernel) -> Run:
    """--dry-run --json on the converted input, with its output: one launch
    for the two tests below. --console-autologin (which the autologin test
    needs) changes only the content the console step plans for /etc/inittab:
    no step's status, no guest path, output or identity the other compares
    (vsaimage/edits/console.py; the flag reaches nothing else)."""
    return run_cli("convert", converted.input, "--kernel", debian_kernel.vmlinuz, "--initrd",
                   debian_kernel.initrd, "-o", converted.out, "--json", "--dry-run", "--console-autologin")


def test_dry_run_lists_what_the_real_run_changed(converted: Converted, readback: Readback,
                                                 debian_kernel: DebianKernel, dry_run: Run) -> None:
    """--dry-run --json on the same input names exactly the files the real run
    wrote and the guest files it changed (found independently: the fixture
    gives every inode one mtime, so a changed file has another)."""
    r = dry_run
    assert r.code == 0, r.stderr
    # beside the input, the directory holds the data disk the conversion names
    written = {str(p) for p in converted.out.parent.iterdir()
               if p != converted.input and p.name != "data.img"}
    assert set(r.doc["output_files"]) == written == set(converted.run.doc["output_files"])
    modules = f"/lib/modules/{debian_kernel.version}"
    assert set(r.doc["guest_paths"]) == readback.changed | {modules}
    assert r.doc["guest_paths"] == converted.run.doc["guest_paths"]
    # the same document as a convert's: same keys, the same kernel and outputs
    assert set(r.doc) == set(converted.run.doc), set(r.doc) ^ set(converted.run.doc)
    assert r.doc["dry_run"] and not converted.run.doc["dry_run"]
    for key in ("kernel", "outputs", "xl", "motherboard_uuid", "root_partition"):
        assert r.doc[key] == converted.run.doc[key], key


def test_console_autologin_is_one_warning_in_the_edits_words(dry_run: Run) -> None:
    """The warning the console step plans is the run's warning, once; the
    command line no longer says it again in other words."""
    r = dry_run  # with --console-autologin
    assert r.code == 0, r.stderr
    said = [line for line in r.stderr.splitlines() if "warning:" in line and "autologin" in line]
    assert len(said) == 1 and said[0].endswith(AUTOLOGIN_WARNING), said
    console = next(s for s in r.doc["steps"] if s["step"] == "console")
    assert console["details"]["warnings"] == [AUTOLOGIN_WARNING]
    assert r.doc["warnings"] == [AUTOLOGIN_WARNING]

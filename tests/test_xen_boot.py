"""Issue 11: the converted VSA boots under real Xen, through its own init.

One QEMU run (tests/xenharness): Debian's Xen 4.17, a dom0, and in it
- `xl -N create`, the real parser, on every xl config the suite writes;
- `xl create -c` on the config vsaimage wrote, used as written but for the
  dom0-side paths of kernel, ramdisk and disk targets: the converted disk
  (and its data disk) boots through /sbin/init, inittab, rc.sysinit and the
  appliance's own start scripts; the last rc script, the fixture's
  /sbin/boot-report, prints what the checks below read; the program of the
  hvc0 line prints its prompt; then `xl shutdown` halts the domU;
- the same with the *unconverted* disk (same kernel, same repacked initrd,
  same config without `vsyscall=emulate`): the negative control, which must
  fail the checks that depend on the conversion;
- the converted `symlinks` variant (the files the edits change reached
  through symlinks, as on a Red Hat-style root), with its own config;
- the converted disk again, as it was left by its first boot (QEMU keeps
  the run's writes in its snapshot): the motherboard UUID the VSA recorded
  then must not look changed, and the configuration stored at the first
  boot (boot-report stores a host name, as the console's menu would, when
  the store on the configuration partition holds none) must be kept;
- the converted disk a third time, from its config with another uuid and
  MAC (a new motherboard, for the VSA): the negative control of the
  configuration kept, which the VSA must reset;
- the example converted with `--boot pvgrub`, then with `--boot pygrub`:
  their configs name no file of the dom0, and the dom0 deletes its copies of
  the guest kernel and initrd and empties its /boot before creating them,
  then shows it holds no copy: the kernel can only come from the disk.

A second QEMU run boots the example converted with `--type pvh` (and
`--vcpus 1`: under QEMU's emulated SVM, a 2-vCPU PVH guest triple-faulted in
its second vCPU in 2 of 5 boots, a fault of the emulation that a one-vCPU
guest did not meet in 3), alone: a guest that crashes there harms no other.

On failure the logs are kept in build/xen-logs/ and their tails printed.
"""

from __future__ import annotations

import difflib
import filecmp
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from xenharness import run as harness

from fixtures.build_image import LAYOUTS
from support import Converted, DebianKernel, OwnKernel, Readback, Variant
from vsaimage.xen import xlcfg
from xl_reader import Value, parse_spec
from xl_reader import parse as parse_xl

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parent.parent
KEPT_LOGS = REPO / "build" / "xen-logs"
CONVERTED, UNCONVERTED, SYMLINKS, AGAIN = "1-converted", "2-unconverted", "3-symlinks", "4-converted-again"
PVGRUB, PYGRUB, PVH = "5-pvgrub", "6-pygrub", "pvh"
# The converted disk once more, after its two boots, with another uuid and
# MAC; named to boot before the domUs that boot their own kernel (the dom0
# deletes its copy of the guest kernel for those).
NEW_BOARD = "4b-new-motherboard"
NEW_UUID, NEW_MAC = "4c484e21-0000-4000-8000-0000000b0a7d", "00:16:3e:0b:0a:7d"
OWN_KERNEL = (PVGRUB, PYGRUB)
LHN_LOG = "/var/log/lefthand/lhn_init.log"
REPORT_END = "boot-report: end"
# What the program an inittab line runs on hvc0 prints when it is ready.
PROMPTS = {"agetty": " login: ", "getty": " login: ", "mingetty": " login: "}
FAKE_PCI_LINE = "0000\t58530001" + "\t0" * 15
PCIHACK_BOUND = "pcihack: bind-mounted /root/hack/bus/pci on /proc/bus/pci"


def hvc0_program(inittab: str) -> str | None:
    """The program the active hvc0 line of an inittab runs (its base name)."""
    for line in inittab.splitlines():
        fields = line.split(":", 3)
        if not line.startswith("#") and len(fields) == 4 and "hvc0" in fields[3]:
            return fields[3].split()[0].rsplit("/", 1)[-1]
    return None


@dataclass(frozen=True)
class Boot:
    """One domU's console and the config it was created from."""

    name: str
    console: str
    config: dict[str, Value]
    root: str  # the example image's root partition, as the domU names it

    def report(self) -> dict[str, str | None]:
        """boot-report's sections: name -> content (None: missing)."""
        begin = self.console.find("boot-report: begin")
        end = self.console.find(f"\n{REPORT_END}\n")
        assert begin >= 0 and end > begin, "boot-report never ran: init did not reach runlevel 3"
        sections: dict[str, str | None] = {}
        current: str | None = None
        for line in self.console[begin:end + 1].splitlines()[1:]:
            m = re.fullmatch(r"boot-report: (file|missing|section) (.+)", line)
            if m:
                current = m.group(2)
                sections[current] = None if m.group(1) == "missing" else ""
            elif current is not None and sections[current] is not None:
                sections[current] = f"{sections[current]}{line}\n"
        return sections

    def section(self, name: str) -> str:
        text = self.report().get(name)
        assert text is not None, f"{name} is missing in the guest"
        return text

    def mounts(self) -> dict[str, list[str]]:
        """mountinfo by mount point: [root within the fs, major:minor, source]."""
        out = {}
        for line in self.section("/proc/self/mountinfo").splitlines():
            f = line.split()
            sep = f.index("-")
            out[f[4]] = [f[3], f[2], f[sep + 2]]
        return out

    def after_report(self) -> str:
        return self.console.split(REPORT_END, 1)[-1]


@dataclass
class XenRun:
    result: harness.Run
    boots: dict[str, Boot]
    generated: str  # the config vsaimage wrote
    parsed: list[str]  # names of the configs given to xl -N create
    hvc0_program: str | None  # what the converted inittab runs on hvc0
    prompt: str
    written: dict[str, str]  # the config vsaimage wrote, by domU

    @contextmanager
    def logs_kept(self) -> Iterator[None]:
        """On a failed check: the logs kept, their tails in the message."""
        try:
            yield
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.keep_logs()}") from None

    def keep_logs(self) -> str:
        """Copy the logs out of pytest's tmp rotation; their tails, for a
        failure message."""
        kept = KEPT_LOGS / self.result.directory.name  # one directory per QEMU run
        kept.mkdir(parents=True, exist_ok=True)
        serial = self.result.text(self.result.serial).splitlines()
        xen = [line for line in serial if line.startswith("(XEN)")]
        dom0 = [line for line in serial if not line.startswith("(XEN)")]
        logs = {"xen.log": xen, "dom0.log": dom0}
        for name in self.result.consoles:
            logs[f"{name}.console.log"] = self.result.console(name).splitlines()
        tails = []
        for name, lines in logs.items():
            (kept / name).write_text("\n".join(lines) + "\n")
            tails.append(f"--- {kept / name}, last lines ---\n" + "\n".join(lines[-25:]))
        return "\n".join(tails)


def targets(config: str) -> tuple[Path, ...]:
    """The disk targets of an xl config, xvda first."""
    return tuple(Path(parse_spec(str(d))["target"]) for d in parse_xl(config)["disk"])  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def hvc0(readback: Readback) -> tuple[str | None, str]:
    """(what the converted inittab runs on hvc0, the prompt to wait for)."""
    program = hvc0_program((readback.files["/etc/inittab"] or b"").decode())
    # Without a known program on hvc0 there is no prompt to wait for: the
    # prompt check fails, and says why.
    return program, PROMPTS.get(program or "", REPORT_END)


def boot_all(domus: list[harness.DomU], parse: dict[str, str], work: Path, generated: str,
             hvc0: tuple[str | None, str]) -> XenRun:
    result = harness.run(domus, parse, work)
    print("\n".join(result.harness()), f"\nQEMU ran {result.seconds:.0f} s")
    boots = {d.name: Boot(d.name, result.console(d.name), parse_xl(result.used_configs[d.name]),
                          f"/dev/xvda{LAYOUTS['symlinks' if d.name == SYMLINKS else 'stock'].root_part}")
             for d in domus}
    return XenRun(result, boots, generated, sorted(parse), *hvc0, {d.name: d.config for d in domus})


@pytest.fixture(scope="module")
def xen(converted: Converted, symlinks_converted: Variant, own_kernel: OwnKernel, pvh_converted: Variant,
        debian_kernel: DebianKernel, hvc0: tuple[str | None, str],
        tmp_path_factory: pytest.TempPathFactory) -> XenRun:
    generated = converted.cfg.read_text()
    disks = list(targets(generated))
    assert disks[0] == converted.out
    prompt = hvc0[1]
    negative = generated.replace(f"target={converted.out}'", f"target={converted.input}'")
    assert " vsyscall=emulate" in negative, "the converted config lacks vsyscall=emulate"
    negative = negative.replace(" vsyscall=emulate", "")
    domus = [
        harness.DomU(CONVERTED, generated, debian_kernel.vmlinuz, converted.initrd, tuple(disks),
                     prompt),
        # No prompt is expected there: wait for the end of the report and a
        # little more, in case something turns up on hvc0 after all.
        harness.DomU(UNCONVERTED, negative, debian_kernel.vmlinuz, converted.initrd,
                     (converted.input, *disks[1:]), REPORT_END, linger=15),
        # Its initrd is the same repack of the same input: the harness copies
        # one file into the dom0 only when the bytes are the same.
        harness.DomU(SYMLINKS, symlinks_converted.out.with_suffix(".cfg").read_text(),
                     debian_kernel.vmlinuz, same_file(symlinks_converted.initrd, converted.initrd),
                     (symlinks_converted.out,), prompt),
        harness.DomU(AGAIN, generated, debian_kernel.vmlinuz, converted.initrd, tuple(disks), prompt),
    ]
    for name, image in ((PVGRUB, own_kernel.pvgrub), (PYGRUB, own_kernel.pygrub)):
        config = image.with_suffix(".cfg").read_text()
        domus.append(harness.DomU(name, config, None, None, targets(config), prompt,
                                  absent=(debian_kernel.vmlinuz, image.with_suffix(".initrd"))))
    board = generated.replace(parse_xl(generated)["uuid"], NEW_UUID)  # type: ignore[arg-type]
    board = re.sub(r"mac=[0-9a-f:]{17}", f"mac={NEW_MAC}", board)
    parse = {"converted": generated, **config_variants(generated),
             **{d.name: d.config for d in domus[-2:]}, PVH: pvh_converted.out.with_suffix(".cfg").read_text()}
    domus.insert(4, harness.DomU(NEW_BOARD, board, debian_kernel.vmlinuz, converted.initrd, tuple(disks),
                                 prompt))
    if converted.minimal_cfg.decode() != generated:
        parse["converted-minimal"] = converted.minimal_cfg.decode()
    return boot_all(domus, parse, tmp_path_factory.mktemp("xen"), generated, hvc0)


@pytest.fixture(scope="module")
def xen_pvh(pvh_converted: Variant, converted: Converted, debian_kernel: DebianKernel,
            hvc0: tuple[str | None, str], tmp_path_factory: pytest.TempPathFactory) -> XenRun:
    config = pvh_converted.out.with_suffix(".cfg").read_text()
    domu = harness.DomU(PVH, config, debian_kernel.vmlinuz, same_file(pvh_converted.initrd, converted.initrd),
                        targets(config), hvc0[1])
    return boot_all([domu], {}, tmp_path_factory.mktemp("xen-pvh"), config, hvc0)


@pytest.fixture(scope="module")
def runs(xen: XenRun, xen_pvh: XenRun) -> dict[str, XenRun]:
    """The run that booted each domU of this issue's variants."""
    return {PVH: xen_pvh, **dict.fromkeys(OWN_KERNEL, xen)}


def same_file(path: Path, other: Path) -> Path:
    """`other` when it holds the same bytes as `path`, else `path`."""
    return other if filecmp.cmp(path, other, shallow=False) else path


def config_variants(generated: str) -> dict[str, str]:
    """The other shapes of config render() writes, as tests/test_xlcfg.py
    renders them: data disks on every vdev, qcow2, names and paths that need
    quoting. They are only parsed."""
    cfg = parse_xl(generated)
    vif = parse_spec(str(cfg["vif"][0]))  # type: ignore[index]
    base = xlcfg.XlConfig(
        name=str(cfg["name"]), kernel=str(cfg["kernel"]), ramdisk=str(cfg["ramdisk"]),
        root_part=int(str(cfg["root"]).removeprefix("/dev/xvda")), uuid=str(cfg["uuid"]),
        mac=vif["mac"], bridge=vif["bridge"], memory=int(str(cfg["memory"])),
        vcpus=int(str(cfg["vcpus"])), disk_format="raw",
        disk=parse_spec(str(cfg["disk"][0]))["target"],  # type: ignore[index]
    )
    odd = "/srv/xen/it's a \"vsa\", really\\.img"
    return {
        "pvgrub-pvh": xlcfg.render(replace(base, boot="pvgrub", guest_type="pvh")),
        "five-data-disks-qcow2": xlcfg.render(replace(
            base, disk_format="qcow2", bridge="br-san", memory=4096, vcpus=4,
            data_disks=tuple(f"/dev/sd{c}" for c in "bcdef"))),
        "quoting": xlcfg.render(replace(base, name='vsa "one" \\ it\'s', kernel=odd,
                                        data_disks=(odd,))),
    }


# --- the checks, each a function of one boot -------------------------------

def root_through_blkfront(boot: Boot) -> None:
    assert f"root={boot.root} " in boot.section("/proc/cmdline")
    mounts = boot.mounts()
    assert mounts["/"][2] == boot.root, f"/ is {mounts['/'][2]}, not {boot.root}"
    drivers = {f[0]: f[1] for f in map(str.split, boot.section("block drivers").splitlines())
               if len(f) == 2}
    assert drivers.get("xvda") == "/sys/bus/xen/drivers/vbd", f"xvda's driver: {drivers}"


def pcihack_and_the_xen_platform(boot: Boot) -> None:
    assert PCIHACK_BOUND in boot.console, "the initramfs's pcihack did not bind-mount"
    mounts = boot.mounts()
    assert mounts.get("/proc/bus/pci", [None])[:2] == ["/hack/bus/pci", mounts["/"][1]], \
        "/proc/bus/pci is not a bind of the root's /hack/bus/pci"
    devices = boot.section("/proc/bus/pci/devices")
    assert devices == FAKE_PCI_LINE + "\n", f"/proc/bus/pci/devices is {devices!r}"


def rc_drivers_loaded(boot: Boot) -> None:
    loaded = {line.split()[0] for line in boot.section("/proc/modules").splitlines()}
    wanted = {"xen_blkfront", "xen_netfront", "md_mod", "raid1", "brd"}
    assert wanted <= loaded, f"not loaded: {sorted(wanted - loaded)}"
    assert boot.section("/sys/module/brd/parameters/rd_size") == "32768\n"


def motherboard_uuid_is_the_config_uuid(boot: Boot) -> None:
    mobo = boot.section("/etc/lefthand/mobo.uuid").strip()
    assert mobo == boot.config["uuid"], f"didMotherboardChange recorded {mobo!r}"


def scsi_names(boot: Boot) -> None:
    links = dict(line.split() for line in boot.section("/dev/scsi").splitlines())
    part = boot.root.removeprefix("/dev/xvda")
    assert links.get(f"/dev/scsi/host0/bus0/target0/lun0/part{part}") == boot.root, links
    assert links.get("/dev/scsi/host1/bus0/target0/lun0/disc") == "/dev/xvdc", links


def eth0_mac(boot: Boot) -> None:
    mac = parse_spec(str(boot.config["vif"][0]))["mac"]  # type: ignore[index]
    assert boot.section("/sys/class/net/eth0/address").strip() == mac


def old_glibc_survives(boot: Boot) -> None:
    """rc.sysinit runs the fixture's vsyscall-probe, which calls the vsyscall
    page as the VSA's glibc 2.5 does."""
    assert "rc.sysinit: vsyscall-probe ok" in boot.console, "a glibc 2.5 program died of the vsyscall page"


def every_fstab_mount(boot: Boot) -> None:
    """Each filesystem of the fstab is mounted; each swap entry was turned on
    by rc.sysinit (/proc/swaps names the device a UUID= or LABEL= found)."""
    mounts = boot.mounts()
    swaps = boot.section("/proc/swaps").splitlines()[1:]
    failed, swap_entries = [], 0
    for line in boot.section("/etc/fstab").splitlines():
        f = line.split()
        if len(f) < 3 or f[0].startswith("#"):
            continue
        if f[2] == "swap":
            swap_entries += 1
            ok = f"rc.sysinit: swap {f[0]} on" in boot.console
        else:
            ok = f[1] in mounts
        if not ok:
            failed.append(line)
    assert not failed, "not mounted:\n" + "\n".join(failed)
    assert len(swaps) == swap_entries, f"/proc/swaps: {swaps}"


def hvc0_prompt(prompt: str) -> Callable[[Boot], None]:
    def check(boot: Boot) -> None:
        assert prompt in boot.after_report(), f"no {prompt.strip()!r} prompt on hvc0"
    return check


def clean_halt(boot: Boot) -> None:
    tail = boot.after_report()
    for step in ("INIT: Switching to runlevel: 0", "rc: entering runlevel 0", "halt: poweroff"):
        assert step in tail, f"no {step!r} on the console after xl shutdown"
    # A PV kernel has no power-off handler of its own: it halts, and Xen
    # takes a halted PV guest for powered off.
    assert "reboot: System halted" in tail or "reboot: Power down" in tail, "the kernel did not halt"


# --- the converted disk passes every check ---------------------------------

def test_xl_parses_every_config(xen: XenRun) -> None:
    with xen.logs_kept():
        lines = xen.result.harness()
        for name in xen.parsed:
            assert f"parse ok {name}.cfg" in lines, f"xl -N create rejected {name}"


def test_config_used_as_written(xen: XenRun) -> None:
    with xen.logs_kept():
        used = xen.result.used_configs[CONVERTED]
        print("".join(difflib.unified_diff(xen.generated.splitlines(True), used.splitlines(True),
                                           "generated", "used in the dom0")))
        want, got = parse_xl(xen.generated), parse_xl(used)
        assert got["kernel"] == "/plan/files/0" and got["ramdisk"] == "/plan/files/1"
        targets = [parse_spec(str(d))["target"] for d in got["disk"]]  # type: ignore[union-attr]
        assert targets == [f"/dev/vd{c}" for c in "abcdefg"[:len(targets)]]

        def neutral(cfg: dict[str, Value]) -> dict[str, Value]:
            disks = [str(d).rsplit("target=", 1)[0] for d in cfg["disk"]]  # type: ignore[union-attr]
            return {**cfg, "kernel": "", "ramdisk": "", "disk": disks}  # type: ignore[dict-item]

        assert neutral(got) == neutral(want)


@pytest.mark.parametrize("check", [
    root_through_blkfront, pcihack_and_the_xen_platform, rc_drivers_loaded,
    motherboard_uuid_is_the_config_uuid, scsi_names, eth0_mac, old_glibc_survives,
    every_fstab_mount, clean_halt,
], ids=lambda c: c.__name__)
def test_converted(xen: XenRun, check: Callable[[Boot], None]) -> None:
    with xen.logs_kept():
        check(xen.boots[CONVERTED])


def test_converted_hvc0_prompt(xen: XenRun) -> None:
    with xen.logs_kept():
        assert xen.hvc0_program is not None, "the converted inittab runs nothing on hvc0"
        assert xen.hvc0_program in PROMPTS, f"hvc0 runs {xen.hvc0_program}: add its prompt to PROMPTS"
        hvc0_prompt(xen.prompt)(xen.boots[CONVERTED])


def test_converted_shut_down_by_xl(xen: XenRun) -> None:
    with xen.logs_kept():
        assert f"domU {CONVERTED}: shut down" in " ".join(xen.result.harness())
        assert xen.result.returncode == 0, "the dom0 did not power the machine off"


def test_converted_keeps_its_motherboard_uuid_across_reboots(xen: XenRun) -> None:
    """didMotherboardChange recorded the config's UUID at the first boot and
    finds the same one at the next: the node does not reset its hardware
    inventory (and so its identity) on every boot."""
    with xen.logs_kept():
        again = xen.boots[AGAIN]
        motherboard_uuid_is_the_config_uuid(again)
        log = again.section(LHN_LOG)
        assert f"recording motherboard UUID {again.config['uuid']}" in log, log
        assert "motherboard changed" not in log, log


def configured_name(boot: Boot) -> str | None:
    """The host name boot-report stored in this boot, if it stored one."""
    m = re.search(r"^configured hostname (\S+)$", boot.section("actions"), re.M)
    return m.group(1) if m else None


def test_converted_keeps_its_configuration_across_reboots(xen: XenRun) -> None:
    """The first boot stored a host name in the configuration store (on the
    partition platform.xml names by its /dev/scsi path); the second found
    it there and set it, the motherboard unchanged, eth0 with its MAC."""
    with xen.logs_kept():
        name = configured_name(xen.boots[CONVERTED])
        assert name is not None, xen.boots[CONVERTED].section("actions")
        again = xen.boots[AGAIN]
        assert f"hostname={name}\n" in again.section("/etc/lefthand/config/lhn.conf")
        assert again.section("hostname").strip() == name
        log = again.section(LHN_LOG)
        assert f"host name {name} (stored configuration)" in log, log
        assert "configuration reset" not in log, log
        assert configured_name(again) is None
        assert again.section("network interfaces").split()[0] == "eth0"
        eth0_mac(again)


def test_a_new_motherboard_resets_the_configuration(xen: XenRun) -> None:
    """The negative control: the same disk with another uuid and MAC is a
    new node to the VSA, which starts from an empty configuration."""
    with xen.logs_kept():
        name = configured_name(xen.boots[CONVERTED])
        boot = xen.boots[NEW_BOARD]
        assert boot.config["uuid"] == NEW_UUID
        log = boot.section(LHN_LOG)
        assert "motherboard changed" in log and "configuration reset" in log, log
        assert f"host name {name} (stored configuration)" not in log.split("motherboard changed")[-1], log
        assert configured_name(boot) not in (None, name)
        eth0_mac(boot)


# --- the symlinks variant boots the same way -------------------------------

@pytest.mark.parametrize("check", [
    root_through_blkfront, pcihack_and_the_xen_platform, rc_drivers_loaded,
    motherboard_uuid_is_the_config_uuid, eth0_mac, old_glibc_survives, every_fstab_mount, clean_halt,
], ids=lambda c: c.__name__)
def test_symlinks_variant(xen: XenRun, check: Callable[[Boot], None]) -> None:
    with xen.logs_kept():
        check(xen.boots[SYMLINKS])


def test_symlinks_variant_hvc0_prompt(xen: XenRun) -> None:
    with xen.logs_kept():
        hvc0_prompt(xen.prompt)(xen.boots[SYMLINKS])


# --- the negative control: the unconverted disk fails what depends on the
# conversion, under the same harness --------------------------------------

@pytest.mark.parametrize("check", [
    pcihack_and_the_xen_platform, rc_drivers_loaded, motherboard_uuid_is_the_config_uuid,
    scsi_names, old_glibc_survives, every_fstab_mount,
], ids=lambda c: c.__name__)
def test_unconverted_fails(xen: XenRun, check: Callable[[Boot], None]) -> None:
    with xen.logs_kept():
        boot = xen.boots[UNCONVERTED]
        boot.report()  # it did boot to the end of runlevel 3
        with pytest.raises(AssertionError):
            check(boot)


def test_unconverted_has_no_hvc0_prompt(xen: XenRun) -> None:
    with xen.logs_kept():
        boot = xen.boots[UNCONVERTED]
        assert "pcihack: /root/hack/bus/pci missing, not mounting" in boot.console
        with pytest.raises(AssertionError):
            hvc0_prompt(xen.prompt)(boot)


def test_without_vsyscall_emulate_old_glibc_dies(xen: XenRun) -> None:
    """What the option prevents: on Debian's kernel (vsyscall=none) a program
    calling the vsyscall page dies of SIGSEGV (the shell's status 139)."""
    with xen.logs_kept():
        assert "vsyscall=emulate" not in str(xen.boots[UNCONVERTED].config["extra"])
        assert "rc.sysinit: FAILED: vsyscall-probe exited 139" in xen.boots[UNCONVERTED].console


# --- PVH, and the disk's own kernel through pvgrub2 and pygrub --------------

CONSOLE_CHECKS = [
    root_through_blkfront, pcihack_and_the_xen_platform, rc_drivers_loaded,
    motherboard_uuid_is_the_config_uuid, scsi_names, eth0_mac, old_glibc_survives,
    every_fstab_mount, clean_halt,
]


@pytest.mark.parametrize("check", CONSOLE_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", [PVH, *OWN_KERNEL])
def test_boot_variant(runs: dict[str, XenRun], name: str, check: Callable[[Boot], None]) -> None:
    """The same checks as the direct PV boot (pcihack's bind mount covers
    PVH's /proc/bus/pci, which exists there, empty, without a PCI bus)."""
    with runs[name].logs_kept():
        check(runs[name].boots[name])


@pytest.mark.parametrize("name", [PVH, *OWN_KERNEL])
def test_boot_variant_hvc0_prompt_and_config(runs: dict[str, XenRun], name: str) -> None:
    xen = runs[name]
    with xen.logs_kept():
        hvc0_prompt(xen.prompt)(xen.boots[name])
        used = xen.result.used_configs[name]
        print("".join(difflib.unified_diff(xen.written[name].splitlines(True), used.splitlines(True),
                                           "generated", "used in the dom0")))
        want, got = parse_xl(xen.written[name]), parse_xl(used)
        # the disk targets are the only change, and the kernel's for PVH
        dom0_side = {"disk"} | ({"kernel", "ramdisk"} if name == PVH else set())
        assert {k: v for k, v in got.items() if k not in dom0_side} == \
            {k: v for k, v in want.items() if k not in dom0_side}


def test_pvh_guest_is_pvh(xen_pvh: XenRun) -> None:
    with xen_pvh.logs_kept():
        boot = xen_pvh.boots[PVH]
        assert boot.config["type"] == "pvh"
        assert "Booting kernel on Xen PVH" in boot.console


@pytest.mark.parametrize("name", OWN_KERNEL)
def test_own_kernel_with_no_guest_kernel_in_the_dom0(xen: XenRun, name: str,
                                                     debian_kernel: DebianKernel) -> None:
    """The dom0 had emptied its /boot and held no copy of the guest kernel or
    initrd when it created the domU, which booted that kernel (from its own
    disk) with the menu's command line."""
    with xen.logs_kept():
        lines = xen.result.harness()
        assert any(line.startswith(f"domU {name}: dom0 holds no guest kernel (") for line in lines), lines
        boot = xen.boots[name]
        assert {"kernel", "ramdisk"} & set(boot.config) == (
            {"kernel"} if name == PVGRUB else set()), boot.config
        assert f"boot-report: begin kernel {debian_kernel.version}" in boot.console
        extra = xlcfg.extra_args(vsyscall_emulate=True)
        # GRUB 2 may put BOOT_IMAGE= first: not part of the menu's line
        words = [w for w in boot.section("/proc/cmdline").split() if not w.startswith("BOOT_IMAGE=")]
        assert words == f"root={boot.root} {extra}".split()

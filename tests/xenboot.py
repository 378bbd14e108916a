"""What the Xen boot test modules share (tests/README.md: adding a Xen boot):
the run of the harness (`boot_all`: one QEMU run, its domUs' consoles as
`Boot`s, the logs kept on a failed check), the config's disk targets, and
the checks, each a function of one boot's console (`CONSOLE_CHECKS`: what
every converted VSA must show under Xen)."""

from __future__ import annotations

import difflib
import filecmp
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from xenharness import run as harness

from fixtures.build_image import LAYOUTS, PLATFORM_DIR, ROOT_TREE
from xl_reader import Value, parse_spec
from xl_reader import parse as parse_xl

REPO = Path(__file__).resolve().parent.parent
KEPT_LOGS = REPO / "build" / "xen-logs"
LHN_LOG = "/var/log/lefthand/lhn_init.log"
REPORT_END = "boot-report: end"
# What the program an inittab line runs on hvc0 prints when it is ready.
PROMPTS = {"agetty": " login: ", "getty": " login: ", "mingetty": " login: "}
FAKE_PCI_LINE = "0000\t58530001" + "\t0" * 15
PCIHACK_BOUND = "pcihack: bind-mounted /root/hack/bus/pci on /proc/bus/pci"
PLATFORM_LINK = f"{PLATFORM_DIR}/platform.xml"  # what the platform edit links to platform.xml.vmw
RUN_PLATFORM = "/etc/lefthand/run/platform.xml"  # the runtime-platform variant's run-time copy
VMW_DESCRIPTION = (ROOT_TREE / PLATFORM_DIR.lstrip("/") / "platform.xml.vmw").read_text()


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

    def print_diff(self, name: str) -> None:
        """The config `name` was created from, as a diff against the one
        vsaimage wrote (in the test's output)."""
        print("".join(difflib.unified_diff(self.written[name].splitlines(True),
                                           self.result.used_configs[name].splitlines(True),
                                           "generated", "used in the dom0")))

    def config_used_as_written(self, name: str, dom0_side: set[str]) -> None:
        """Every setting of the config `name` booted from is the one
        vsaimage wrote, but the `dom0_side` ones (the files the dom0 sees
        elsewhere)."""
        self.print_diff(name)
        want, got = parse_xl(self.written[name]), parse_xl(self.result.used_configs[name])
        assert {k: v for k, v in got.items() if k not in dom0_side} == \
            {k: v for k, v in want.items() if k not in dom0_side}

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


def boot_all(domus: list[harness.DomU], parse: dict[str, str], work: Path, generated: str,
             hvc0: tuple[str | None, str], layouts: dict[str, str] | None = None) -> XenRun:
    """One QEMU run of the harness booting `domus` in name order (each from
    the fixture layout `layouts` names, `stock` by default) after
    `xl -N create` on each config of `parse`."""
    result = harness.run(domus, parse, work)
    print("\n".join(result.harness()), f"\nQEMU ran {result.seconds:.0f} s")
    boots = {d.name: Boot(d.name, result.console(d.name), parse_xl(result.used_configs[d.name]),
                          f"/dev/xvda{LAYOUTS[(layouts or {}).get(d.name, 'stock')].root_part}")
             for d in domus}
    return XenRun(result, boots, generated, sorted(parse), *hvc0, {d.name: d.config for d in domus})


def same_file(path: Path, other: Path) -> Path:
    """`other` when it holds the same bytes as `path`, else `path`."""
    return other if filecmp.cmp(path, other, shallow=False) else path


# --- the checks, each a function of one boot -------------------------------

def root_through_blkfront(boot: Boot) -> None:
    assert f"root={boot.root} " in boot.section("/proc/cmdline")
    mounts = boot.mounts()
    assert mounts["/"][2] == boot.root, f"/ is {mounts['/'][2]}, not {boot.root}"
    drivers = {f[0]: f[1] for f in map(str.split, boot.section("block drivers").splitlines())
               if len(f) == 2}
    assert drivers.get("xvda") == "/sys/bus/xen/drivers/vbd", f"xvda's driver: {drivers}"


def runs_as_the_configs_type(boot: Boot) -> None:
    # what the guest's kernel says it runs as: PV, or PVH when the config
    # says so (its early "Booting kernel on Xen PVH" line can be lost: the
    # console ring fills while a slow dom0 runs the hotplug scripts, before
    # xl's console attaches)
    want = str(boot.config.get("type", "pv")).upper()
    assert boot.section("/sys/hypervisor/guest_type") == f"{want}\n"


def pcihack_and_the_xen_platform(boot: Boot) -> None:
    assert PCIHACK_BOUND in boot.console, "the initramfs's pcihack did not bind-mount"
    mounts = boot.mounts()
    assert mounts.get("/proc/bus/pci", [None])[:2] == ["/hack/bus/pci", mounts["/"][1]], \
        "/proc/bus/pci is not a bind of the root's /hack/bus/pci"
    devices = boot.section("/proc/bus/pci/devices")
    assert devices == FAKE_PCI_LINE + "\n", f"/proc/bus/pci/devices is {devices!r}"


def platform_links(boot: Boot) -> dict[str, str]:
    """Where each platform.xml boot-report looked at leads ('' when nowhere)."""
    return {f[0]: (f[1:] or [""])[0] for f in map(str.split, boot.section("platform.xml links").splitlines())}


def platform_is_the_vmware_description(boot: Boot) -> None:
    """The link base_init makes first leads to platform.xml.vmw (through
    the guest's own symlinks, in the symlinks variant)."""
    target = platform_links(boot).get(PLATFORM_LINK, "")
    assert target.endswith("/platform.xml.vmw"), f"{PLATFORM_LINK} leads to {target!r}"


def runtime_platform_is_the_vmware_description(boot: Boot) -> None:
    """The run-time copy the runtime-platform variant's base_init links
    leads to the VMware description, and reads as it."""
    target = platform_links(boot).get(RUN_PLATFORM, "")
    assert target == f"{PLATFORM_DIR}/platform.xml.vmw", f"{RUN_PLATFORM} leads to {target!r}"
    assert boot.section(RUN_PLATFORM) == VMW_DESCRIPTION


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


def configured_name(boot: Boot) -> str | None:
    """The host name boot-report stored in the configuration store in this
    boot, if it stored one (it does when the store holds none)."""
    m = re.search(r"^configured hostname (\S+)$", boot.section("actions"), re.M)
    return m.group(1) if m else None


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


CONSOLE_CHECKS = [
    root_through_blkfront, runs_as_the_configs_type, pcihack_and_the_xen_platform, rc_drivers_loaded,
    motherboard_uuid_is_the_config_uuid, scsi_names, eth0_mac, old_glibc_survives,
    every_fstab_mount, platform_is_the_vmware_description, clean_halt,
]


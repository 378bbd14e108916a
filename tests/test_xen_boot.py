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
- the converted `runtime-platform` variant, whose base_init links a
  run-time copy of the platform file in /etc/lefthand/run to the brand's
  platform.xml: the copy must lead to the VMware description;
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

A second QEMU run boots the example converted with `--type pvh`
(tests/test_xen_pvh.py).

On failure the logs are kept in build/xen-logs/ and their tails printed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

import pytest
from xenharness import run as harness

from support import Converted, DebianKernel, OwnKernel, Variant
from vsaimage.xen import xlcfg
from xenboot import (
    CONSOLE_CHECKS,
    LHN_LOG,
    PROMPTS,
    REPORT_END,
    Boot,
    XenRun,
    boot_all,
    clean_halt,
    configured_name,
    eth0_mac,
    every_fstab_mount,
    hvc0_prompt,
    motherboard_uuid_is_the_config_uuid,
    old_glibc_survives,
    pcihack_and_the_xen_platform,
    platform_is_the_vmware_description,
    rc_drivers_loaded,
    root_through_blkfront,
    runtime_platform_is_the_vmware_description,
    same_file,
    scsi_names,
    targets,
)
from xl_reader import Value, parse_spec
from xl_reader import parse as parse_xl

pytestmark = pytest.mark.integration

# The harness creates the domUs in name order: the own-kernel ones last, as
# the dom0 removes its copy of the guest kernel before creating them.
CONVERTED, UNCONVERTED, SYMLINKS, RUNTIME = "1-converted", "2-unconverted", "3-symlinks", "4-runtime-platform"
AGAIN, PVGRUB, PYGRUB = "5-converted-again", "6-pvgrub", "7-pygrub"
# The converted disk once more, after its two boots, with another uuid and
# MAC; named to boot right after AGAIN, before the own-kernel ones.
NEW_BOARD = "5b-new-motherboard"
NEW_UUID, NEW_MAC = "4c484e21-0000-4000-8000-0000000b0a7d", "00:16:3e:0b:0a:7d"
OWN_KERNEL = (PVGRUB, PYGRUB)


# Its inputs in this order: the converted example is what the other workers
# want first (tests/README.md).
@pytest.fixture(scope="module")
def xen(own_kernel: OwnKernel, symlinks_converted: Variant, runtime_platform_converted: Variant,
        converted: Converted, debian_kernel: DebianKernel, hvc0: tuple[str | None, str],
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
        harness.DomU(RUNTIME, runtime_platform_converted.out.with_suffix(".cfg").read_text(),
                     debian_kernel.vmlinuz, same_file(runtime_platform_converted.initrd, converted.initrd),
                     targets(runtime_platform_converted.out.with_suffix(".cfg").read_text()), prompt),
        harness.DomU(AGAIN, generated, debian_kernel.vmlinuz, converted.initrd, tuple(disks), prompt),
        harness.DomU(NEW_BOARD, new_motherboard(generated), debian_kernel.vmlinuz, converted.initrd,
                     tuple(disks), prompt),
    ]
    for name, image in ((PVGRUB, own_kernel.pvgrub), (PYGRUB, own_kernel.pygrub)):
        config = image.with_suffix(".cfg").read_text()
        domus.append(harness.DomU(name, config, None, None, targets(config), prompt,
                                  absent=(debian_kernel.vmlinuz, image.with_suffix(".initrd"))))
    parse = {"converted": generated, **config_variants(generated),
             **{d.name: d.config for d in domus[-2:]}}
    if converted.minimal_cfg.decode() != generated:
        parse["converted-minimal"] = converted.minimal_cfg.decode()
    return boot_all(domus, parse, tmp_path_factory.mktemp("xen"), generated, hvc0, {SYMLINKS: "symlinks"})


def new_motherboard(generated: str) -> str:
    """The config with another uuid and MAC: a new motherboard, to the VSA."""
    board = generated.replace(str(parse_xl(generated)["uuid"]), NEW_UUID)
    return re.sub(r"mac=[0-9a-f:]{17}", f"mac={NEW_MAC}", board)


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


# --- the converted disk passes every check ---------------------------------

def test_xl_parses_every_config(xen: XenRun) -> None:
    with xen.logs_kept():
        lines = xen.result.harness()
        for name in xen.parsed:
            assert f"parse ok {name}.cfg" in lines, f"xl -N create rejected {name}"


def test_config_used_as_written(xen: XenRun) -> None:
    with xen.logs_kept():
        used = xen.result.used_configs[CONVERTED]
        xen.print_diff(CONVERTED)
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
    every_fstab_mount, platform_is_the_vmware_description, clean_halt,
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
    motherboard_uuid_is_the_config_uuid, eth0_mac, old_glibc_survives, every_fstab_mount,
    platform_is_the_vmware_description, clean_halt,
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
    scsi_names, old_glibc_survives, every_fstab_mount, platform_is_the_vmware_description,
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


# --- the disk's own kernel through pvgrub2 and pygrub ------------------------

@pytest.mark.parametrize("check", CONSOLE_CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("name", OWN_KERNEL)
def test_boot_variant(xen: XenRun, name: str, check: Callable[[Boot], None]) -> None:
    """The same checks as the direct PV boot."""
    with xen.logs_kept():
        check(xen.boots[name])


@pytest.mark.parametrize("name", OWN_KERNEL)
def test_boot_variant_hvc0_prompt_and_config(xen: XenRun, name: str) -> None:
    with xen.logs_kept():
        hvc0_prompt(xen.prompt)(xen.boots[name])
        xen.config_used_as_written(name, dom0_side={"disk"})


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
        # the example's grub.conf keeps `ro quiet` (its root= and consoles dropped)
        extra = " ".join(("ro", "quiet", *xlcfg.own_args(vsyscall_emulate=True)))
        # GRUB 2 may put BOOT_IMAGE= first: not part of the menu's line
        words = [w for w in boot.section("/proc/cmdline").split() if not w.startswith("BOOT_IMAGE=")]
        assert words == f"root={boot.root} {extra}".split()


# --- the runtime-platform variant: base_init's run-time copy of the platform
# file leads to the VMware description ----------------------------------------

@pytest.mark.parametrize("check", [*CONSOLE_CHECKS, runtime_platform_is_the_vmware_description],
                         ids=lambda c: c.__name__)
def test_runtime_platform_variant(xen: XenRun, check: Callable[[Boot], None]) -> None:
    with xen.logs_kept():
        check(xen.boots[RUNTIME])


def test_runtime_platform_variant_hvc0_prompt(xen: XenRun) -> None:
    with xen.logs_kept():
        hvc0_prompt(xen.prompt)(xen.boots[RUNTIME])

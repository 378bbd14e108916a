"""The VSA upgrades itself under Xen, and `convert --in-place` makes the new
release boot, with the node's configuration and identity kept.

The `upgrade` fixture variant carries an upgrade payload (its root as
shipped, a newer version) and a test-only trigger. On a copy converted for
this test:
- QEMU run 1 boots it (its disk attached writable): boot-report stores a
  host name in the configuration store, as the console's menu would, then
  runs the VSA's upgrader (lhn_upgrade), which installs the payload into the
  other system slot, p2, and makes a new grub entry booting /dev/sda2 the
  default; `xl shutdown` halts it cleanly;
- on the host, inspect says the VSA now boots an unconverted slot, and
  `convert --in-place` converts it, keeping the config's uuid and MAC;
- QEMU run 2 boots the config it wrote: the new release runs from xvda2,
  converted, with the host name of the first boot and the same identity.

On failure the logs are kept in build/xen-logs/.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from xenharness import run as harness

from fixtures.build_image import UPGRADE_VERSION, VSA_VERSION, cached_image
from support import DebianKernel, Run, nobody_dir, run_cli
from xenboot import (
    LHN_LOG,
    REPORT_END,
    Boot,
    XenRun,
    clean_halt,
    configured_name,
    eth0_mac,
    pcihack_and_the_xen_platform,
    root_through_blkfront,
    targets,
)
from xl_reader import parse as parse_xl

pytestmark = pytest.mark.integration

BEFORE, AFTER = "1-before-upgrade", "2-upgraded"


@dataclass(frozen=True)
class Upgrade:
    before: XenRun
    inspected: Run
    in_place: Run
    after: XenRun
    disk: Path


def _boot(name: str, config: str, kernel: Path, initrd: Path, work: Path, root: str) -> XenRun:
    # its disk is this test's own copy: the run's writes reach it
    domu = harness.DomU(name, config, kernel, initrd, targets(config), REPORT_END, linger=5, writable=True)
    result = harness.run([domu], {}, work)
    print("\n".join(result.harness()), f"\nQEMU ran {result.seconds:.0f} s")
    boot = Boot(name, result.console(name), parse_xl(result.used_configs[name]), root)
    return XenRun(result, {name: boot}, config, [], None, REPORT_END, {name: config})


@pytest.fixture(scope="module")
def upgrade(debian_kernel: DebianKernel, tmp_path_factory: pytest.TempPathFactory) -> Upgrade:
    d = nobody_dir() / "xen-upgrade"
    d.mkdir()
    src = d / "vsa.img"
    subprocess.run(["cp", "--sparse=always", str(cached_image("upgrade")), str(src)], check=True)
    disk = d / "vsa-xen.img"  # this test's own: the runs write it
    kernel = ("--kernel", debian_kernel.vmlinuz, "--initrd", debian_kernel.initrd, "--modules", "minimal")
    r = run_cli("convert", src, *kernel, "-o", disk, "--json")
    assert r.code == 0, r.stderr
    first = _boot(BEFORE, (d / "vsa-xen.cfg").read_text(), debian_kernel.vmlinuz, d / "vsa-xen.initrd",
                  tmp_path_factory.mktemp("xen-upgrade-1"), "/dev/xvda5")
    inspected = run_cli("inspect", disk, "--json")
    in_place = run_cli("convert", "--in-place", disk, *kernel, "--json")
    assert in_place.code == 0, in_place.stderr + first.keep_logs()
    after = _boot(AFTER, (d / "vsa-xen.cfg").read_text(), debian_kernel.vmlinuz, d / "vsa-xen.initrd",
                  tmp_path_factory.mktemp("xen-upgrade-2"), "/dev/xvda2")
    return Upgrade(first, inspected, in_place, after, disk)


def test_the_vsa_upgrades_itself_under_xen(upgrade: Upgrade) -> None:
    with upgrade.before.logs_kept():
        boot = upgrade.before.boots[BEFORE]
        assert boot.section("/etc/lefthand/.version").strip() == VSA_VERSION
        actions = boot.section("actions")
        assert configured_name(boot) is not None and "upgraded" in actions.split(), actions
        clean_halt(boot)
        assert upgrade.before.result.returncode == 0, "the dom0 did not power the machine off"


def test_inspect_says_the_upgraded_slot_is_not_converted(upgrade: Upgrade) -> None:
    assert upgrade.inspected.code == 0, upgrade.inspected.stderr
    line = (f"the VSA now boots slot p2, version {UPGRADE_VERSION}, which is not converted: "
            f"run `vsaimage convert --in-place {upgrade.disk}`")
    assert upgrade.inspected.doc["unconverted_slot"].startswith(line)


def slot_and_config_names(boot: Boot) -> None:
    """The names platform.xml gives the new root and the configuration
    partition."""
    links = dict(line.split() for line in boot.section("/dev/scsi").splitlines())
    for n in (2, 7):
        assert links.get(f"/dev/scsi/host0/bus0/target0/lun0/part{n}") == f"/dev/xvda{n}", links


@pytest.mark.parametrize("check", [root_through_blkfront, pcihack_and_the_xen_platform, slot_and_config_names,
                                   eth0_mac, clean_halt], ids=lambda c: c.__name__)
def test_the_new_release_boots_converted(upgrade: Upgrade, check: Callable[[Boot], None]) -> None:
    with upgrade.after.logs_kept():
        boot = upgrade.after.boots[AFTER]
        assert boot.section("/etc/lefthand/.version").strip() == UPGRADE_VERSION
        check(boot)


def test_the_new_release_keeps_the_configuration_and_identity(upgrade: Upgrade) -> None:
    with upgrade.after.logs_kept():
        first, boot = upgrade.before.boots[BEFORE], upgrade.after.boots[AFTER]
        name = configured_name(first)
        assert boot.config["uuid"] == first.config["uuid"] and boot.config["vif"] == first.config["vif"]
        assert boot.section("/etc/lefthand/mobo.uuid").strip() == boot.config["uuid"]
        assert boot.section("hostname").strip() == name
        log = boot.section(LHN_LOG)
        # the first boot's upgrader logged after that boot's report
        assert f"upgrade: SAN/iQ {UPGRADE_VERSION} installed in partition 2" in log, log
        this_boot = log.rsplit(f"SAN/iQ {UPGRADE_VERSION} starting", 1)[-1]
        assert f"host name {name} (stored configuration)" in this_boot, log
        assert "configuration reset" not in log and "motherboard changed" not in log, log
        assert configured_name(boot) is None and "upgraded" not in boot.section("actions").split()

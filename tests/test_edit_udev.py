"""Edit 3: the udev rule and xvd-hack.sh, run with sh for every name; the
data-disk slots come from the VSA's platform file (5 on SAN/iQ 9.5, 7 on
LeftHand OS 11.5 and later)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fixtures.build_image import PLATFORM_DIR, ROOT_TREE
from test_edit_shell import BUSYBOX, assert_sh_syntax, snapshot
from vsaimage.edits import EditContext, WriteFile
from vsaimage.edits.udev import RULES, RULES_PATH, SCRIPT_PATH, Udev, script
from vsaimage.vsa import slots

VMW = f"{PLATFORM_DIR}/platform.xml.vmw"
SANIQ95 = (ROOT_TREE / VMW.lstrip("/")).read_text()
LHOS12 = (ROOT_TREE.parent / "lhos12-root" / VMW.lstrip("/")).read_text()

EXPECTED = {
    "xvda": "host0/bus0/target0/lun0/disc",
    "xvda1": "host0/bus0/target0/lun0/part1",
    "xvda5": "host0/bus0/target0/lun0/part5",
    "xvda10": "host0/bus0/target0/lun0/part10",
    "xvdb": "host0/bus0/target2/lun0/disc",
    "xvdb2": "host0/bus0/target2/lun0/part2",
    "xvdc": "host1/bus0/target0/lun0/disc",
    "xvdc1": "host1/bus0/target0/lun0/part1",
    "xvdd": "host1/bus0/target1/lun0/disc",
    "xvdd15": "host1/bus0/target1/lun0/part15",
    "xvde": "host1/bus0/target2/lun0/disc",
    "xvde3": "host1/bus0/target2/lun0/part3",
    "xvdf": "host1/bus0/target3/lun0/disc",
    "xvdf9": "host1/bus0/target3/lun0/part9",
    "xvdg": "host1/bus0/target4/lun0/disc",
    "xvdg4": "host1/bus0/target4/lun0/part4",
}
SEVEN = {**EXPECTED, "xvdh": "host1/bus0/target5/lun0/disc", "xvdh2": "host1/bus0/target5/lun0/part2",
         "xvdi": "host1/bus0/target6/lun0/disc", "xvdi1": "host1/bus0/target6/lun0/part1"}
REJECTED = ["xvdaa", "xvdab1", "sda", "sda1", "xvd", "xvda0", "xvda01", "xvda1a", "hda", ""]


def table(text: str) -> dict[str, slots.Address]:
    found = slots.parse(text, VMW)
    assert found is not None
    return found.table()


@pytest.mark.parametrize(("platform", "names", "outside"), [
    (SANIQ95, EXPECTED, ["xvdh", "xvdh1", "xvdi"]),
    (LHOS12, SEVEN, ["xvdj", "xvdj1"]),
], ids=["san-iq-9.5-five-slots", "lefthand-os-12-seven-slots"])
@pytest.mark.parametrize("shell", [["/bin/sh"], [str(BUSYBOX), "sh"]], ids=["sh", "busybox"])
def test_script_names(tmp_path: Path, shell: list[str], platform: str, names: dict[str, str],
                      outside: list[str]) -> None:
    path = tmp_path / "xvd-hack.sh"
    path.write_text(script(table(platform)))
    for name in [*names, *outside, *REJECTED]:
        done = subprocess.run([*shell, str(path), name], capture_output=True, text=True)
        if name in names:
            assert (done.returncode, done.stdout) == (0, names[name] + "\n"), name
        else:
            assert (done.returncode, done.stdout) == (1, ""), name


def test_script_syntax(tmp_path: Path) -> None:
    text = script(table(LHOS12))
    assert text.startswith("#!/bin/sh\n") and "xvdc..xvdi" in text
    assert_sh_syntax(text, tmp_path)


def test_slots_of_each_platform_file() -> None:
    five, seven = slots.parse(SANIQ95, VMW), slots.parse(LHOS12, VMW)
    assert five is not None and seven is not None
    assert [s["xen"] for s in five.as_dict()["slots"]] == ["xvdc", "xvdd", "xvde", "xvdf", "xvdg"]  # type: ignore[index]
    assert seven.as_dict()["count"] == 7 and seven.data[-1] == (1, 0, 6, 0)
    assert slots.parse("<platform/>", VMW) is None and slots.parse("not xml", VMW) is None


def test_rule_line() -> None:
    line = 'KERNEL=="xvd*", PROGRAM="/etc/udev/scripts/xvd-hack.sh %k", SYMLINK+="scsi/%c", MODE="0600"'
    assert line + "\n" in RULES


def test_plan_and_idempotence() -> None:
    ctx = EditContext()
    plan = Udev().plan(snapshot({VMW: LHOS12}), ctx)
    writes = {c.path: c for c in plan.changes if isinstance(c, WriteFile)}
    assert writes[SCRIPT_PATH].mode == 0o755 and writes[RULES_PATH].mode == 0o644
    assert b"xvdi*) host=1 bus=0 target=6 lun=0" in writes[SCRIPT_PATH].data
    assert plan.details["slots"]["source"] == VMW  # type: ignore[index]
    assert not Udev().check(snapshot({VMW: LHOS12}), ctx)
    text = script(table(LHOS12))
    done = snapshot({VMW: LHOS12, SCRIPT_PATH: text, RULES_PATH: RULES}, modes={SCRIPT_PATH: 0o755})
    assert Udev().plan(done, ctx).status == "already applied" and Udev().check(done, ctx)
    not_exec = snapshot({VMW: LHOS12, SCRIPT_PATH: text, RULES_PATH: RULES}, modes={SCRIPT_PATH: 0o644})
    assert [c.path for c in Udev().plan(not_exec, ctx).changes if isinstance(c, WriteFile)] == [SCRIPT_PATH]
    # the five slots of SAN/iQ 9.5 give another script: the one written for seven is replaced
    assert not Udev().check(snapshot({VMW: SANIQ95, SCRIPT_PATH: text, RULES_PATH: RULES},
                                     modes={SCRIPT_PATH: 0o755}), ctx)


def test_without_a_platform_file_the_seven_slots_of_11_5() -> None:
    plan = Udev().plan(snapshot({}), EditContext())
    assert plan.details["slots"]["count"] == 7  # type: ignore[index]
    assert "0 platform.xml.vmw under /etc/lefthand: the default 7 slots" in plan.details["slots"]["source"]  # type: ignore[index]

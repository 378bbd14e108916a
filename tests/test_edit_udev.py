"""Edit 3: the udev rule and xvd-hack.sh, run with sh for every name."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from test_edit_shell import BUSYBOX, assert_sh_syntax, snapshot
from vsaimage.edits import EditContext, WriteFile
from vsaimage.edits.udev import RULES, RULES_PATH, SCRIPT, SCRIPT_PATH, Udev

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
REJECTED = ["xvdh", "xvdh1", "xvdaa", "xvdab1", "sda", "sda1", "xvd", "xvda0", "xvda01", "xvda1a", "hda", ""]


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "xvd-hack.sh"
    path.write_text(SCRIPT)
    return path


@pytest.mark.parametrize("shell", [["/bin/sh"], [str(BUSYBOX), "sh"]], ids=["sh", "busybox"])
def test_script_names(script: Path, shell: list[str]) -> None:
    for name in [*EXPECTED, *REJECTED]:
        done = subprocess.run([*shell, str(script), name], capture_output=True, text=True)
        if name in EXPECTED:
            assert (done.returncode, done.stdout) == (0, EXPECTED[name] + "\n"), name
        else:
            assert (done.returncode, done.stdout) == (1, ""), name


def test_script_syntax(tmp_path: Path) -> None:
    assert SCRIPT.startswith("#!/bin/sh\n")
    assert_sh_syntax(SCRIPT, tmp_path)


def test_rule_line() -> None:
    line = 'KERNEL=="xvd*", PROGRAM="/etc/udev/scripts/xvd-hack.sh %k", SYMLINK+="scsi/%c", MODE="0600"'
    assert line + "\n" in RULES


def test_plan_and_idempotence() -> None:
    ctx = EditContext()
    plan = Udev().plan(snapshot({}), ctx)
    writes = {c.path: c for c in plan.changes if isinstance(c, WriteFile)}
    assert writes[SCRIPT_PATH].mode == 0o755 and writes[RULES_PATH].mode == 0o644
    assert not Udev().check(snapshot({}), ctx)
    done = snapshot({SCRIPT_PATH: SCRIPT, RULES_PATH: RULES}, modes={SCRIPT_PATH: 0o755})
    assert Udev().plan(done, ctx).status == "already applied" and Udev().check(done, ctx)
    not_exec = snapshot({SCRIPT_PATH: SCRIPT, RULES_PATH: RULES}, modes={SCRIPT_PATH: 0o644})
    assert [c.path for c in Udev().plan(not_exec, ctx).changes if isinstance(c, WriteFile)] == [SCRIPT_PATH]

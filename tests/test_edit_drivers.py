"""Edit 5: the Xen driver block at the top of rc.drivers."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from test_edit_shell import assert_sh_syntax, snapshot
from vsaimage.edits import EditContext, WriteFile
from vsaimage.edits.drivers import BEGIN, END, MODULES, PATH, Drivers, block, patch
from vsaimage.errors import EditError, MissingFile

CTX = EditContext()

RC = """#!/bin/sh
#
# rc.drivers: load the drivers of the platform we run on
# (c) LeftHand Networks
set -e
. /etc/lefthand/brand/functions
# load VMware drivers
if grep -q VMware /proc/scsi/scsi; then
    modprobe mptspi
fi
"""


@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_block_goes_before_the_first_command(crlf: bool, tmp_path: Path) -> None:
    text = RC.replace("\n", "\r\n") if crlf else RC
    nl = "\r\n" if crlf else "\n"
    out = patch(text)
    head, rest = out.split(BEGIN, 1)
    assert head == text[: text.index("set -e")]
    assert rest.split(END + nl, 1)[1] == text[text.index("set -e") :]
    assert patch(out) == out
    assert_sh_syntax(out, tmp_path)


def test_block_loads_every_module_without_failing() -> None:
    text = block("\n")
    for module in MODULES:
        assert f"\tmodprobe {module} || true\n" in text
    assert "if [ -d /proc/xen ] || grep -qs xen /sys/hypervisor/type; then" in text


def test_block_runs_under_set_e_with_failing_modprobe(tmp_path: Path) -> None:
    stubs = tmp_path / "bin"
    stubs.mkdir()
    log = tmp_path / "log"
    (stubs / "modprobe").write_text(f'#!/bin/sh\necho "$*" >> {log}\nexit 1\n')
    (stubs / "modprobe").chmod(0o755)
    script = tmp_path / "rc"
    # /proc/xen is absent here: force the test true, keep the rest as is
    body = block("\n").replace("[ -d /proc/xen ]", "true")
    script.write_text("set -e\n" + body + "echo reached\n")
    done = subprocess.run(
        ["/bin/sh", str(script)], env={"PATH": f"{stubs}:/usr/bin:/bin"}, capture_output=True, text=True
    )
    assert done.stdout == "reached\n"
    assert log.read_text().splitlines() == list(MODULES)


def test_no_command_and_no_final_newline() -> None:
    assert patch("#!/bin/sh\n# only comments") == "#!/bin/sh\n# only comments\n" + block("\n")
    assert patch("") == block("\n")


# --- the stop rule: a block of ours cut short --------------------------------
# What it compares: a line that is our BEGIN marker, before the script's
# first command, and our END marker after it. Refused: BEGIN without END
# (where our block ends is unknown: replacing it could take the script).

OLD = "#!/bin/sh\n" + BEGIN + "\nmodprobe xen_blkfront\n" + END + "\nset -e\n"
BLOCK_CONVERTS = {  # shape -> (rc.drivers, rc.drivers converted)
    "up-to-date": ("#!/bin/sh\n" + block("\n") + "set -e\n", "#!/bin/sh\n" + block("\n") + "set -e\n"),
    "old-block": (OLD, "#!/bin/sh\n" + block("\n") + "set -e\n"),
    "crlf-old-block": (OLD.replace("\n", "\r\n"), "#!/bin/sh\r\n" + block("\r\n") + "set -e\r\n"),
    "indented-markers": ("#!/bin/sh\n  " + BEGIN + "\nmodprobe md\n  " + END + "\nset -e\n",
                         "#!/bin/sh\n" + block("\n") + "set -e\n"),
    "marker-text-in-a-string": ("#!/bin/sh\necho '" + BEGIN + "'\n",
                                "#!/bin/sh\n" + block("\n") + "echo '" + BEGIN + "'\n"),
    "marker-with-more-text": ("#!/bin/sh\n" + BEGIN + " (old)\nset -e\n",
                              "#!/bin/sh\n" + BEGIN + " (old)\n" + block("\n") + "set -e\n"),
    "stray-end-marker": ("#!/bin/sh\n" + END + "\nset -e\n",
                         "#!/bin/sh\n" + END + "\n" + block("\n") + "set -e\n"),
    "begin-after-the-first-command": ("#!/bin/sh\nset -e\n" + BEGIN + "\n",
                                      "#!/bin/sh\n" + block("\n") + "set -e\n" + BEGIN + "\n"),
}


@pytest.mark.parametrize("shape", sorted(BLOCK_CONVERTS))
def test_block_converts(shape: str) -> None:
    text, expected = BLOCK_CONVERTS[shape]
    assert patch(text) == expected and patch(expected) == expected


BLOCK_REFUSED = {
    "begin-without-end": ("#!/bin/sh\n" + BEGIN + "\nset -e\n", 2),
    "end-misspelled": ("#!/bin/sh\n" + BEGIN + "\nmodprobe md\n# vsaimage: end of Xen drivers\nset -e\n",
                       2),
    "end-before-begin": ("# " + END + "\n" + BEGIN + "\nset -e\n", 2),
    "begin-last-line-without-newline": ("#!/bin/sh\n# rc.drivers\n" + BEGIN, 3),
    "crlf-begin-without-end": ("#!/bin/sh\r\n" + BEGIN + "\r\nset -e\r\n", 2),
    "begin-among-the-leading-comments": ("#!/bin/sh\n# rc.drivers\n" + BEGIN + "\n# drivers\nset -e\n", 3),
    "two-begins-without-end": ("#!/bin/sh\n" + BEGIN + "\n" + BEGIN + "\nset -e\n", 2),
    "begin-with-trailing-blanks": ("#!/bin/sh\n" + BEGIN + "  \t\nmodprobe md\n", 2),
}


@pytest.mark.parametrize("shape", sorted(BLOCK_REFUSED))
def test_block_refused_naming_file_line_and_skip(shape: str) -> None:
    text, line = BLOCK_REFUSED[shape]
    with pytest.raises(EditError) as err:
        Drivers().plan(snapshot({PATH: text}), CTX)
    assert err.value.message.startswith(f"{PATH}:{line}: '{BEGIN}' without '{END}'")
    assert "--skip drivers" in (err.value.hint or "") and err.value.exit_code == 2


def test_plan_check_missing() -> None:
    edit = Drivers()
    snap = snapshot({PATH: RC}, modes={PATH: 0o755})
    plan = edit.plan(snap, CTX)
    change = plan.changes[0]
    assert isinstance(change, WriteFile) and change.mode == 0o755 and not edit.check(snap, CTX)
    done = snapshot({PATH: change.data})
    assert edit.plan(done, CTX).status == "already applied" and edit.check(done, CTX)
    with pytest.raises(MissingFile, match=PATH) as err:
        edit.plan(snapshot({}), CTX)
    assert "--skip drivers" in (err.value.hint or "")

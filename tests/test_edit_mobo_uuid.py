"""Edit 1: the moboUUID fallback in lhn_functions, as text and as running sh."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from test_edit_shell import BUSYBOX, assert_sh_syntax, snapshot
from vsaimage.edits import EditContext, WriteFile
from vsaimage.edits.mobo_uuid import BEGIN, END, PATH, MoboUuid, fallback_uuid, patch
from vsaimage.errors import EditError, MissingFile

CTX = EditContext()

HEAD = """#!/bin/sh
# lhn_functions: shared by the LeftHand init scripts
# didMotherboardChange() {
#     moboUUID=`dmidecode -s system-uuid`
# }
otherCheck() {
    moboUUID=`dmidecode -s system-uuid`
    echo "$moboUUID" > /tmp/mobo
}
"""
TAIL = """
saveMotherboard() {
    echo "moboUUID=$(dmidecode -s system-uuid)" > /etc/lefthand/mobo
}
"""
BODY = """    if [ "$moboUUID" != "`cat /etc/lefthand/.mobo 2>/dev/null`" ]; then
        return 0
    fi
    return 1
"""

VARIANTS = {
    "backticks": "didMotherboardChange() {\n    moboUUID=`dmidecode -s system-uuid`\n" + BODY + "}\n",
    "dollar-paren-local": (
        "didMotherboardChange ()\n{\n    local moboUUID=$(/usr/sbin/dmidecode -s system-uuid)\n"
        + BODY
        + "}\n"
    ),
    "function-keyword": (
        "function didMotherboardChange {\n\tmoboUUID=\"`dmidecode | grep UUID | awk '{print $2}'`\"\n"
        + BODY
        + "}\n"
    ),
    "function-parens-next-line-pipe": (
        "function didMotherboardChange()\n{\n    moboUUID=$(dmidecode -t system |\n"
        "        sed -n 's/.*UUID: //p')\n" + BODY + "}\n"
    ),
}


def patched_function(text: str) -> str:
    start = text.index("didMotherboardChange")
    return text[start : text.index("\n}\n", start)]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_patch_variants(variant: str, crlf: bool, tmp_path: Path) -> None:
    text = HEAD + VARIANTS[variant] + TAIL
    if crlf:
        text = text.replace("\n", "\r\n")
    out = patch(text)
    assert out != text and patch(out) == out
    # only the function is touched, and only by inserted lines
    assert out.count(BEGIN) == 1 and out.count(END) == 1
    start, end = out.index(BEGIN), out.index(END)
    block_end = out.index("\n", end) + 1
    assert out[: out.rindex("\n", 0, start) + 1] + out[block_end:] == text
    # right after the assignment statement (its last line, for the piped one)
    previous = out[: out.rindex("\n", 0, start) + 1].splitlines()[-1]
    assert "moboUUID=" in previous or "UUID: //p')" in previous
    if crlf:
        assert out.count("\r\n") == out.count("\n")
    else:
        assert "\r" not in out
    assert_sh_syntax(out, tmp_path)


def test_block_is_indented_like_the_assignment() -> None:
    out = patch(HEAD + VARIANTS["function-keyword"])
    lines = out[out.index(BEGIN) - 1 :].split("\n")
    assert lines[0] == "\t" + BEGIN and lines[1] == '\tif [ -z "$moboUUID" ]; then'
    assert lines[2].startswith("\t\tmoboUUID=")


def test_every_dmidecode_assignment_in_the_function_gets_one() -> None:
    text = (
        "didMotherboardChange() {\n"
        "    if [ -x /usr/sbin/dmidecode ]; then\n"
        "        moboUUID=`dmidecode -s system-uuid`\n"
        "    else\n"
        "        moboUUID=$(dmidecode -s baseboard-serial-number)\n"
        "    fi\n"
        "}\n"
    )
    out = patch(text)
    assert out.count(BEGIN) == 2 and patch(out) == out


def test_no_assignment_is_an_error_naming_file_and_function() -> None:
    text = HEAD + "didMotherboardChange() {\n    moboUUID=$1\n    # moboUUID=`dmidecode`\n}\n"
    with pytest.raises(EditError, match=f"{PATH}.*didMotherboardChange") as err:
        patch(text)
    assert err.value.exit_code == 2 and "--skip mobo-uuid" in (err.value.hint or "")


def test_no_function_is_an_error() -> None:
    with pytest.raises(EditError, match=f"{PATH}: function didMotherboardChange not found"):
        patch(HEAD + TAIL)


def test_assignment_sharing_the_closing_line_is_refused() -> None:
    with pytest.raises(EditError, match="closing brace"):
        patch("didMotherboardChange() { moboUUID=`dmidecode -s system-uuid`; }\n")


def test_missing_file_names_the_skip() -> None:
    with pytest.raises(MissingFile, match=PATH) as err:
        MoboUuid().plan(snapshot({}), CTX)
    assert "--skip mobo-uuid" in (err.value.hint or "")
    assert err.value.exit_code == 2


def test_plan_then_already_applied() -> None:
    edit = MoboUuid()
    snap = snapshot({PATH: HEAD + VARIANTS["backticks"]}, modes={PATH: 0o755})
    assert edit.reads(CTX) == (PATH,) and not edit.check(snap, CTX)
    plan = edit.plan(snap, CTX)
    assert plan.status == "apply" and len(plan.changes) == 1
    change = plan.changes[0]
    assert isinstance(change, WriteFile) and change.mode == 0o755
    done = snapshot({PATH: change.data}, modes={PATH: 0o755})
    again = edit.plan(done, CTX)
    assert again.status == "already applied" and again.changes == ()
    assert edit.check(done, CTX)
    assert not edit.check(snapshot({}), CTX)


def test_fallback_uuid() -> None:
    assert fallback_uuid("00:16:3e:12:34:56") == "160d007e-0f9e-11e1-b59f-00163e123456"
    assert fallback_uuid("00:16:3E:AA:BB:CC") == "160d007e-0f9e-11e1-b59f-00163eaabbcc"
    assert fallback_uuid("") == "160d007e-0f9e-11e1-b59f-deadb33fc0de"
    assert fallback_uuid("00:11") == "160d007e-0f9e-11e1-b59f-deadb33fc0de"


# --- the inserted sh, run -------------------------------------------------

RUNNABLE = 'didMotherboardChange() {\n\tmoboUUID=`dmidecode -s system-uuid`\n\techo "$moboUUID"\n}\n'


SHELLS = ["dash", "busybox"]


def run_fallback(
    tmp_path: Path,
    shell: str,
    *,
    dmidecode: str = "",
    ifconfig: str | None = None,
    sbin_ifconfig: str | None = None,
    sys_files: dict[str, str] | None = None,
    prelude: str = "",
) -> str:
    """Run the patched function under `shell` with stub commands; the
    guest's /sys and /sbin paths are moved under tmp_path (the only edit of
    the snippet made here, checked by count) so the host's never leak in."""
    text = patch(RUNNABLE)
    root = tmp_path / "guest"
    assert text.count("/sys/") == 2 and text.count("/sbin/ifconfig") == 1
    text = text.replace("/sys/", f"{root}/sys/").replace("/sbin/ifconfig", f"{root}/sbin/ifconfig")
    for rel, content in (sys_files or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content)

    stubs = tmp_path / "stubs"
    stubs.mkdir()

    def stub(path: Path, output: str | None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        body = "exit 1\n" if output is None else f"cat <<'OUT'\n{output}\nOUT\n"
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)

    stub(stubs / "dmidecode", dmidecode if dmidecode else None)
    if dmidecode == "":
        (stubs / "dmidecode").write_text("#!/bin/sh\nexit 0\n")
    if ifconfig is not None:
        stub(stubs / "ifconfig", ifconfig)
    if sbin_ifconfig is not None:
        stub(root / "sbin" / "ifconfig", sbin_ifconfig)

    (tmp_path / "lhn_functions").write_text(text)
    (tmp_path / "run.sh").write_text(
        f'{prelude}. {tmp_path}/lhn_functions\ndidMotherboardChange\necho "mac=${{vsa_mac-unset}}"\n'
    )
    if shell == "busybox":
        # busybox sh runs its own ifconfig applet before any in PATH
        text = text.replace("(ifconfig eth0", f"({stubs}/ifconfig eth0")
        (tmp_path / "lhn_functions").write_text(text)
        tools = tmp_path / "bb"
        tools.mkdir()
        for applet in ("sh", "cat", "sed", "tr"):
            os.symlink(BUSYBOX, tools / applet)
        argv, path = [str(BUSYBOX), "sh"], f"{stubs}:{tools}"
    else:
        argv, path = ["/bin/sh"], f"{stubs}:/usr/bin:/bin"
    done = subprocess.run(
        [*argv, str(tmp_path / "run.sh")], env={"PATH": path}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    uuid, mac = done.stdout.splitlines()
    assert mac == "mac=unset"  # the helper variable does not leak
    return uuid


IFCONFIG_OLD = (
    "eth0      Link encap:Ethernet  HWaddr 00:16:3E:AA:BB:CC  \n"
    "          inet addr:10.0.0.2  Bcast:10.0.0.255  Mask:255.255.255.0"
)
IFCONFIG_NEW = (
    "eth0: flags=4163<UP,BROADCAST,RUNNING,MULTICAST>  mtu 1500\n"
    "        inet 10.0.0.2  netmask 255.255.255.0  broadcast 10.0.0.255\n"
    "        ether 00:16:3e:01:02:0f  txqueuelen 1000  (Ethernet)"
)


@pytest.mark.parametrize("shell", SHELLS)
def test_fallback_from_ifconfig_upper_case(tmp_path: Path, shell: str) -> None:
    uuid = run_fallback(tmp_path, shell, ifconfig=IFCONFIG_OLD)
    assert uuid == fallback_uuid("00:16:3E:AA:BB:CC") == "160d007e-0f9e-11e1-b59f-00163eaabbcc"


@pytest.mark.parametrize("shell", SHELLS)
def test_fallback_from_new_ifconfig_format(tmp_path: Path, shell: str) -> None:
    assert run_fallback(tmp_path, shell, ifconfig=IFCONFIG_NEW) == fallback_uuid("00:16:3e:01:02:0f")


@pytest.mark.parametrize("shell", SHELLS)
def test_fallback_from_sbin_ifconfig_when_not_in_path(tmp_path: Path, shell: str) -> None:
    uuid = run_fallback(tmp_path, shell, sbin_ifconfig=IFCONFIG_OLD)
    assert uuid == fallback_uuid("00:16:3e:aa:bb:cc")


@pytest.mark.parametrize("shell", SHELLS)
def test_fallback_prefers_sysfs_address(tmp_path: Path, shell: str) -> None:
    sys_files = {"sys/class/net/eth0/address": "00:16:3e:12:34:56\n"}
    uuid = run_fallback(tmp_path, shell, ifconfig=IFCONFIG_OLD, sys_files=sys_files)
    assert uuid == fallback_uuid("00:16:3e:12:34:56")


@pytest.mark.parametrize("shell", SHELLS)
def test_fallback_prefers_hypervisor_uuid(tmp_path: Path, shell: str) -> None:
    sys_files = {
        "sys/hypervisor/uuid": "5d4d0b3c-7c44-4a09-8d7e-2b8f0e0c1a11\n",
        "sys/class/net/eth0/address": "00:16:3e:12:34:56\n",
    }
    assert run_fallback(tmp_path, shell, sys_files=sys_files) == "5d4d0b3c-7c44-4a09-8d7e-2b8f0e0c1a11"


@pytest.mark.parametrize("shell", SHELLS)
def test_fallback_ignores_dom0_zero_uuid(tmp_path: Path, shell: str) -> None:
    sys_files = {
        "sys/hypervisor/uuid": "00000000-0000-0000-0000-000000000000\n",
        "sys/class/net/eth0/address": "00:16:3e:12:34:56\n",
    }
    assert run_fallback(tmp_path, shell, sys_files=sys_files) == fallback_uuid("00:16:3e:12:34:56")


@pytest.mark.parametrize("shell", SHELLS)
def test_fallback_without_any_mac_under_set_e(tmp_path: Path, shell: str) -> None:
    uuid = run_fallback(tmp_path, shell, prelude="set -e\n")
    assert uuid == "160d007e-0f9e-11e1-b59f-deadb33fc0de" == fallback_uuid("")


@pytest.mark.parametrize("shell", SHELLS)
def test_fallback_rejects_a_malformed_mac(tmp_path: Path, shell: str) -> None:
    uuid = run_fallback(tmp_path, shell, ifconfig="eth0 Link encap:Ethernet HWaddr 00:16:3E")
    assert uuid == fallback_uuid("00:16:3E")


@pytest.mark.parametrize("shell", SHELLS)
def test_dmidecode_value_is_kept(tmp_path: Path, shell: str) -> None:
    uuid = run_fallback(
        tmp_path, shell, dmidecode="564D1C2B-AAAA-BBBB-CCCC-0123456789AB", ifconfig=IFCONFIG_OLD
    )
    assert uuid == "564D1C2B-AAAA-BBBB-CCCC-0123456789AB"


# --- shapes where the fallback would silently not run ----------------------


def body(*lines: str) -> str:
    return "didMotherboardChange() {\n" + "".join(f"    {line}\n" for line in lines) + "}\n"


ASSIGN = "moboUUID=`dmidecode -s system-uuid`"
SILENT_SHAPES = {
    "return-on-the-same-line": (body(f"{ASSIGN} || return 1", "echo $moboUUID"), "after `return`", 2),
    "exit-after-semicolon": (body(f"{ASSIGN}; exit 0"), "after `exit`", 2),
    "one-branch-of-an-if": (
        body("if [ -x /usr/sbin/dmidecode ]; then", f"    {ASSIGN}", "fi", 'echo "$moboUUID"'),
        "one branch of an `if`",
        3,
    ),
    "if-else-without-fallback-in-else": (
        body("if [ -x /usr/sbin/dmidecode ]; then", f"    {ASSIGN}", "else", "    moboUUID=none", "fi"),
        "one branch of an `if`",
        3,
    ),
    "in-a-case": (body('case "$1" in', f"    x) {ASSIGN} ;;", "esac"), "in a `case`", 3),
    "in-a-loop": (body("while :; do", f"    {ASSIGN}", "    break", "done"), "in a `while`", 3),
    "guarded-group": (body("[ -x /usr/sbin/dmidecode ] && {", f"    {ASSIGN}", "}"), "in a `{`", 3),
    "later-reassignment": (body(ASSIGN, 'savedUUID=x', "moboUUID=`cat /etc/lefthand/mobo.uuid`"),
                           "overwrites moboUUID", 4),
    "later-local-reassignment-after-the-if": (
        body("if [ -x /usr/sbin/dmidecode ]; then", f"    {ASSIGN}", "else", f"    {ASSIGN}", "fi",
             "local moboUUID=unknown"),
        "overwrites moboUUID",
        7,
    ),
}


@pytest.mark.parametrize("shape", sorted(SILENT_SHAPES))
def test_silent_shapes_are_refused_naming_file_line_and_skip(shape: str) -> None:
    text, reason, line = SILENT_SHAPES[shape]
    with pytest.raises(EditError) as err:
        patch(text)
    assert err.value.message.startswith(f"{PATH}:{line} ") and reason in err.value.message
    assert "\n" not in err.value.message and err.value.exit_code == 2
    assert "--skip mobo-uuid" in (err.value.hint or "")
    with pytest.raises(EditError):
        MoboUuid().plan(snapshot({PATH: text}), CTX)


def test_fallback_in_a_plain_group_and_guarded_assignment_are_fine(tmp_path: Path) -> None:
    text = body("{", f"    {ASSIGN}", "}", f"[ -x /usr/sbin/dmidecode ] && {ASSIGN}", 'echo "$moboUUID"')
    out = patch(text)
    assert out.count(BEGIN) == 2 and patch(out) == out
    assert_sh_syntax(out, tmp_path)


def test_derived_and_other_branch_assignments_are_not_overwrites() -> None:
    text = body(
        "if [ -x /usr/sbin/dmidecode ]; then",
        f"    {ASSIGN}",
        '    moboUUID=`echo "$moboUUID" | tr a-z A-Z`',
        "else",
        f"    {ASSIGN}",
        "fi",
    )
    assert patch(text).count(BEGIN) == 2
    plan = MoboUuid().plan(snapshot({PATH: text}), CTX)
    assert "conditional_overwrites" not in plan.details


def test_conditional_overwrite_is_reported_not_refused() -> None:
    text = body(
        ASSIGN, "if [ -f /x ]; then", "    moboUUID=`cat /etc/lefthand/mobo.fixed`", "fi"
    )
    plan = MoboUuid().plan(snapshot({PATH: text}), CTX)
    assert plan.status == "apply"
    assert plan.details["conditional_overwrites"] == [
        f"{PATH}:4 `moboUUID=`cat /etc/lefthand/mobo.fixed`` may overwrite moboUUID after the fallback"
    ]

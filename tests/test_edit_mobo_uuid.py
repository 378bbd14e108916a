"""Edit 1: the moboUUID fallback in lhn_functions, as text and as running sh."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from test_edit_shell import BUSYBOX, REPO, assert_sh_syntax, snapshot, syntax_shells
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
    function: str = RUNNABLE,
) -> str:
    """Run the patched function under `shell` with stub commands; the
    guest's /sys and /sbin paths are moved under tmp_path (the only edit of
    the snippet made here, checked by count) so the host's never leak in."""
    text = patch(function)
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
        argv, path = syntax_shells(function)[0], f"{stubs}:/usr/bin:/bin"
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


# --- the stop rules, each with shapes that must convert and must refuse -----


def body(*lines: str) -> str:
    return "didMotherboardChange() {\n" + "".join(f"    {line}\n" for line in lines) + "}\n"


def script(top: str, *lines: str, call: bool = False) -> str:
    """lhn_functions with `top` before the function (helpers, variables)
    and, with `call`, a call of it at the end (its top level then settles
    the variables it assigns first)."""
    return textwrap.dedent(top).lstrip("\n") + body(*lines) + ("didMotherboardChange\n" if call else "")


ASSIGN = "moboUUID=`dmidecode -s system-uuid`"
READ = 'echo "$moboUUID" > /tmp/mobo'
Expected = list[tuple[str, str]]  # (the line a note names, what the note says)


def line_number(text: str, content: str) -> int:
    [number] = [n for n, line in enumerate(text.splitlines(), 1) if line.strip() == content]
    return number


def assert_converts(text: str, expected: Expected, tmp_path: Path) -> str:
    plan = MoboUuid().plan(snapshot({PATH: text}), CTX)
    notes = plan.details.get("notes", [])
    assert isinstance(notes, list) and len(notes) == len(expected), notes
    for note, (content, says) in zip(notes, expected, strict=True):
        assert note.startswith(f"{PATH}:{line_number(text, content)} `{content}`"), note
        assert says in note and "\n" not in note
    out = patch(text)
    assert out.count(BEGIN) >= 1 and patch(out) == out
    assert without_blocks(out) == text.replace(";\n", "\n") or without_blocks(out) == text or ";" in text
    assert_sh_syntax(out, tmp_path)
    return out


def without_blocks(text: str) -> str:
    while BEGIN in text:
        start = text.rindex("\n", 0, text.index(BEGIN)) + 1
        text = text[:start] + text[text.index("\n", text.index(END)) + 1 :]
    return text


def assert_refuses(text: str, content: str, says: str) -> None:
    with pytest.raises(EditError) as err:
        MoboUuid().plan(snapshot({PATH: text}), CTX)
    assert err.value.message.startswith(f"{PATH}:{line_number(text, content)} `{content}`"), err.value.message
    assert says in err.value.message and "\n" not in err.value.message
    assert err.value.exit_code == 2 and "--skip mobo-uuid" in (err.value.hint or "")
    assert not MoboUuid().check(snapshot({PATH: text}), CTX)


# Rule: a later statement overwrites moboUUID after the fallback.
# What it compares: each statement after the fallback (of the function or of
# a helper it calls, judged where the call is) that assigns moboUUID in the
# shell itself (not in a subshell, a pipeline, a background job or before a
# program), a value not made from the fallback's (`${moboUUID:-x}`, a
# substitution reading it) and not guarded by the fallback's being set
# (`[ -n "$moboUUID" ] ||`); not a helper's own `local` one. Refused: on
# every path after the fallback. A note: on some, or where it may outlive
# its command (a pipeline's last command in ksh, an assignment before a
# function call or a special builtin, a `local` without a value in bash).

OVERWRITE_CONVERTS: dict[str, tuple[str, Expected]] = {
    "in-a-subshell": (body(ASSIGN, "( moboUUID=none; echo $moboUUID )", READ), []),
    "before-a-program": (body(ASSIGN, "moboUUID=none logger -t lhn started"), []),
    "helper-with-its-own-local": (script("""
        probe() {
            local moboUUID
            moboUUID=`cat /tmp/x`
        }
    """, ASSIGN, "probe"), []),
    "derived-default": (body(ASSIGN, "moboUUID=${moboUUID:-unknown}"), []),
    "guarded-by-being-set": (body(ASSIGN, '[ -n "$moboUUID" ] || moboUUID=`cat /etc/lefthand/mobo.uuid`'),
                             []),
    "derived-upper-case": (body(ASSIGN, 'moboUUID=`echo "$moboUUID" | tr a-z A-Z`'), []),
    "default-assignment-expansion": (body(ASSIGN, ": ${moboUUID:=unknown}"), []),
    "background-job": (body(ASSIGN, "moboUUID=none &"), []),
    "dead-code-after-return": (body(ASSIGN, "return 0", "moboUUID=none"), []),
    "the-other-branch": (body("if [ -x /usr/sbin/dmidecode ]; then", f"    {ASSIGN}", "else",
                              "    moboUUID=none", "fi"), []),
    "local-declared-again": (body("local moboUUID", ASSIGN, "local moboUUID"), []),
    "read-at-the-end-of-a-pipeline": (body(ASSIGN, "cat /etc/lefthand/mobo.uuid | read moboUUID"),
                                      [("cat /etc/lefthand/mobo.uuid | read moboUUID", "ksh")]),
    "under-a-condition": (
        body(ASSIGN, "if [ -f /x ]; then", "    moboUUID=`cat /etc/lefthand/mobo.fixed`", "fi"),
        [("moboUUID=`cat /etc/lefthand/mobo.fixed`", "runs only on some paths")]),
    "after-a-conditional-return": (
        body(ASSIGN, "if [ ! -s /x ]; then", "    return 1", "fi", "moboUUID=`cat /x`"),
        [("moboUUID=`cat /x`", "runs only on some paths")]),
    "before-a-function-call": (
        script("save() {\n    echo \"$moboUUID\" > /x\n}\n", ASSIGN, "moboUUID=none save"),
        [("moboUUID=none save", "before a function call may outlive it")]),
    "before-a-special-builtin": (body(ASSIGN, "moboUUID=none :"),
                                 [("moboUUID=none :", "special builtin outlives it in sh")]),
    "local-without-a-value-after-it": (body(ASSIGN, "local moboUUID"),
                                       [("local moboUUID", "bash empties a variable")]),
    "helper-overwriting-under-a-condition": (
        script("reset() {\n    moboUUID=\n}\n", ASSIGN, "[ -f /x ] && reset"),
        [("moboUUID=", "(in reset, which didMotherboardChange calls at line")]),
}


@pytest.mark.parametrize("name", sorted(OVERWRITE_CONVERTS))
def test_overwrite_converts(name: str, tmp_path: Path) -> None:
    text, expected = OVERWRITE_CONVERTS[name]
    assert_converts(text, expected, tmp_path)


OVERWRITE_REFUSES: dict[str, tuple[str, str]] = {  # shape -> (script, the line refused)
    "from-a-file": (body(ASSIGN, "savedUUID=x", "moboUUID=`cat /etc/lefthand/mobo.uuid`"),
                    "moboUUID=`cat /etc/lefthand/mobo.uuid`"),
    "local-after-the-if": (
        body("if [ -x /usr/sbin/dmidecode ]; then", f"    {ASSIGN}", "else", f"    {ASSIGN}", "fi",
             "local moboUUID=unknown"), "local moboUUID=unknown"),
    "export": (body(ASSIGN, "export moboUUID=none"), "export moboUUID=none"),
    "unset": (body(ASSIGN, "unset moboUUID"), "unset moboUUID"),
    "read": (body(ASSIGN, "read moboUUID < /etc/lefthand/mobo.uuid"),
             "read moboUUID < /etc/lefthand/mobo.uuid"),
    "helper-doing-it": (script("reset() {\n    moboUUID=none\n}\n", ASSIGN, "reset"), "moboUUID=none"),
    "for-loop-variable": (body(ASSIGN, "for moboUUID in a b; do :; done"), "for moboUUID in a b; do :; done"),
    "top-level-variable": (script("DEFAULT_UUID=00000000\n", ASSIGN, "moboUUID=$DEFAULT_UUID", call=True),
                           "moboUUID=$DEFAULT_UUID"),
    "in-a-group": (body(ASSIGN, "{ moboUUID=none; }"), "{ moboUUID=none; }"),
    "replaced-when-set": (body(ASSIGN, 'moboUUID="${moboUUID:+set}"'), 'moboUUID="${moboUUID:+set}"'),
    "guard-that-always-lets-it-run": (body(ASSIGN, '[ -z "$moboUUID" ] || moboUUID=fixed'),
                                      '[ -z "$moboUUID" ] || moboUUID=fixed'),
    "while-read-loop": (body(ASSIGN, "while read moboUUID; do :; done < /etc/lefthand/uuids"),
                        "while read moboUUID; do :; done < /etc/lefthand/uuids"),
    "case-catch-all": (body(ASSIGN, 'case "$1" in', "    *) moboUUID=none ;;", "esac"),
                       "*) moboUUID=none ;;"),
    "same-line-after-semicolon": (body(f"{ASSIGN}; moboUUID=none"), f"{ASSIGN}; moboUUID=none"),
}


@pytest.mark.parametrize("name", sorted(OVERWRITE_REFUSES))
def test_overwrite_refuses(name: str) -> None:
    text, content = OVERWRITE_REFUSES[name]
    assert_refuses(text, content, "overwrites moboUUID after the Xen fallback on every path")


# Rule: the list holding the assignment leaves the function (`return`,
# `exit`, `exec`, a helper that exits) before the fallback, which goes right
# after that list (`A; return` is split: the fallback goes between).
# What it compares: the outcomes of the list's `&&`/`||` chain. Refused:
# every outcome leaves (the fallback never runs). A note: some do.

LEAVE_CONVERTS: dict[str, tuple[str, Expected]] = {
    "return-after-a-semicolon": (body(f"{ASSIGN}; return 0"), []),
    "exit-after-a-semicolon": (body(f"{ASSIGN}; exit 0"), []),
    "return-on-the-next-line": (body(ASSIGN, "return 1"), []),
    "guard-clause-before": (body("[ -x /usr/sbin/dmidecode ] || return 1", ASSIGN, READ), []),
    "or-warn": (body(f"{ASSIGN} || lhnWarn no dmidecode", READ), []),
    "or-helper-that-returns": (script("fail() {\n    return 1\n}\n", f"{ASSIGN} || fail", READ), []),
    "or-exit-in-a-subshell": (body(f"{ASSIGN} || ( exit 1 )", READ), []),
    "or-return": (body(f"{ASSIGN} || return 1", READ),
                  [(f"{ASSIGN} || return 1", "may `return` before the fallback")]),
    "and-return": (body(f"{ASSIGN} && return 0", READ), [(f"{ASSIGN} && return 0", "may `return` before")]),
    "or-exit": (body(f"{ASSIGN} || exit 1", READ), [(f"{ASSIGN} || exit 1", "may `exit` before")]),
}


@pytest.mark.parametrize("name", sorted(LEAVE_CONVERTS))
def test_leave_converts(name: str, tmp_path: Path) -> None:
    text, expected = LEAVE_CONVERTS[name]
    assert_converts(text, expected, tmp_path)


LEAVE_REFUSES: dict[str, tuple[str, str]] = {
    "and-return-or-return": (body(f"{ASSIGN} && return 0 || return 1"), f"{ASSIGN} && return 0 || return 1"),
    "and-exit-or-exit": (body(f"{ASSIGN} && exit 0 || exit 1"), f"{ASSIGN} && exit 0 || exit 1"),
    "or-return-and-return": (body(f"{ASSIGN} || return 1 && return 0"), f"{ASSIGN} || return 1 && return 0"),
    "and-return-or-exit": (body(f"{ASSIGN} && return 0 || exit 1"), f"{ASSIGN} && return 0 || exit 1"),
    "and-exec-or-exit": (body(f"{ASSIGN} && exec /sbin/lhn_start || exit 1"),
                         f"{ASSIGN} && exec /sbin/lhn_start || exit 1"),
    "helper-that-exits-both-ways": (script("die() {\n    exit 1\n}\n", f"{ASSIGN} && die || die"),
                                    f"{ASSIGN} && die || die"),
    "continued-over-lines": (body(f"{ASSIGN} &&", "    return 0 ||", "    return 1"), f"{ASSIGN} &&"),
    "group-that-returns": (body(f"{ASSIGN} && {{ echo ok; return 0; }} || return 1"),
                           f"{ASSIGN} && {{ echo ok; return 0; }} || return 1"),
}


@pytest.mark.parametrize("name", sorted(LEAVE_REFUSES))
def test_leave_refuses(name: str) -> None:
    text, content = LEAVE_REFUSES[name]
    assert_refuses(text, content, "the fallback would land after `")


# Rule: the fallback runs only where its assignment runs (a branch of an
# `if`, a `case`, a loop, after `&&`/`||`). What it compares: whether some
# path through the function skips every fallback and then reads moboUUID
# (a note: under Xen it may read an empty UUID there), and whether any
# assignment runs at all (conditions the script settles decide: `if false`,
# `[ 0 = 1 ]`, a `case` on a known word, after a `return`). Refused: no
# dmidecode assignment can run, so the fallback never would.

BRANCH_CONVERTS: dict[str, tuple[str, Expected]] = {
    "one-branch-of-an-if": (body("if [ -x /usr/sbin/dmidecode ]; then", f"    {ASSIGN}", "fi", READ),
                            [(READ, "reads moboUUID on a path that skips the fallback")]),
    "another-source-in-the-else": (body("if [ -x /usr/sbin/dmidecode ]; then", f"    {ASSIGN}", "else",
                                        "    moboUUID=`cat /sys/class/dmi/id/product_uuid`", "fi", READ),
                                   [(READ, "the dmidecode assignment, line 3, runs only on some paths")]),
    "in-a-case": (body('case "$1" in', f"    x) {ASSIGN} ;;", "esac", READ), [(READ, "skips the fallback")]),
    "in-a-guarded-group": (body("[ -x /usr/sbin/dmidecode ] && {", f"    {ASSIGN}", "}", READ),
                           [(READ, "skips the fallback")]),
    "in-a-while-loop": (body("while [ -z \"$moboUUID\" ]; do", f"    {ASSIGN}", "    sleep 1", "done", READ),
                        [(READ, "skips the fallback")]),
    "in-both-branches": (body("if [ -x /usr/sbin/dmidecode ]; then", f"    {ASSIGN}", "else",
                              "    moboUUID=$(/sbin/dmidecode -s system-uuid)", "fi", READ), []),
    "guard-clause-returning": (
        body("if [ ! -x /usr/sbin/dmidecode ]; then", "    return 1", "fi", ASSIGN, READ), []),
    "read-only-in-its-branch": (
        body("if [ -x /usr/sbin/dmidecode ]; then", f"    {ASSIGN}", f"    {READ}", "fi"), []),
    "settled-condition": (body("if true; then", f"    {ASSIGN}", "fi", READ), []),
    "case-on-a-known-word": (
        script("PLATFORM=vmw\n", 'case "$PLATFORM" in', f"    vmw) {ASSIGN} ;;", "esac", READ, call=True),
        []),
    "for-over-a-literal-list": (body("for source in dmi; do", f"    {ASSIGN}", "done", READ), []),
    "while-true-with-break": (body("while :; do", f"    {ASSIGN}", "    break", "done", READ), []),
}


@pytest.mark.parametrize("name", sorted(BRANCH_CONVERTS))
def test_branch_converts(name: str, tmp_path: Path) -> None:
    text, expected = BRANCH_CONVERTS[name]
    assert_converts(text, expected, tmp_path)


BRANCH_REFUSES: dict[str, tuple[str, str]] = {  # shape -> (script, the first dmidecode assignment)
    "if-false": (body("if false; then", f"    {ASSIGN}", "fi"), ASSIGN),
    "if-settled-compare": (body("if [ 0 = 1 ]; then", f"    {ASSIGN}", "fi"), ASSIGN),
    "while-false": (body("while false; do", f"    {ASSIGN}", "done"), ASSIGN),
    "until-true": (body("until true; do", f"    {ASSIGN}", "done"), ASSIGN),
    "case-without-a-match": (body("case vmw in", f"    hyperv) {ASSIGN} ;;", "esac"), f"hyperv) {ASSIGN} ;;"),
    "case-on-a-known-word": (
        script("PLATFORM=hyperv\n", 'case "$PLATFORM" in', f"    vmw) {ASSIGN} ;;", "esac", call=True),
        f"vmw) {ASSIGN} ;;"),
    "after-false-and": (body(f"false && {ASSIGN}"), f"false && {ASSIGN}"),
    "else-of-if-true": (body("if true; then", "    :", "else", f"    {ASSIGN}", "fi"), ASSIGN),
    "after-return": (body("return 1", ASSIGN), ASSIGN),
    "after-a-helper-that-exits": (script("die() {\n    exit 1\n}\n", "die", ASSIGN), ASSIGN),
}


@pytest.mark.parametrize("name", sorted(BRANCH_REFUSES))
def test_branch_refuses(name: str) -> None:
    text, content = BRANCH_REFUSES[name]
    assert_refuses(text, content, "is ever reached")


# Rule (gone): the assignment shares its line with more of the function,
# the closing brace included. The fallback goes right after the list that
# holds the assignment, the rest of the line moved to the next: it always
# has a place, so no shape refuses; the fallback runs before what follows.

ONE_LINE = 'didMotherboardChange() { moboUUID=`dmidecode -s system-uuid`; echo "$moboUUID"; }'
PLACEMENT: dict[str, str] = {
    "one-line-function": ONE_LINE + "\n",
    "function-keyword-one-line": ("function didMotherboardChange { moboUUID=$(dmidecode -s system-uuid); "
                                  "echo $moboUUID; }\n"),
    "brace-on-the-assignment-line": ("didMotherboardChange()\n{\n\tmoboUUID=`dmidecode -s system-uuid`; "
                                     'echo "$moboUUID"; }\n'),
    "same-line-use": body(f"{ASSIGN}; echo \"$moboUUID\""),
    "same-line-comment": body(f"{ASSIGN}  # from the BIOS", 'echo "$moboUUID"'),
    "case-arm-on-one-line": body('case "$1" in', f"    *) {ASSIGN} ;;", "esac", 'echo "$moboUUID"'),
    "group-with-a-redirection": body(f"{{ {ASSIGN}; }} 2>/dev/null", 'echo "$moboUUID"'),
    "and-list-then-use": body(f"{ASSIGN} && logger -t lhn read; echo \"$moboUUID\""),
    "crlf-one-line": ONE_LINE + "\r\n",
}


@pytest.mark.parametrize("name", sorted(PLACEMENT))
@pytest.mark.parametrize("shell", SHELLS)
def test_placement_converts_and_runs_before_the_rest(name: str, shell: str, tmp_path: Path) -> None:
    text = PLACEMENT[name]
    plan = MoboUuid().plan(snapshot({PATH: text}), CTX)
    assert plan.status == "apply" and "notes" not in plan.details
    out = patch(text)
    assert out.count(BEGIN) == 1 and patch(out) == out
    assert out.replace("\r\n", "\n").count("\n") > text.replace("\r\n", "\n").count("\n")
    assert_sh_syntax(out, tmp_path)
    sys_files = {"sys/hypervisor/uuid": "5d4d0b3c-7c44-4a09-8d7e-2b8f0e0c1a11\n"}
    uuid = run_fallback(tmp_path, shell, sys_files=sys_files, function=text.replace("\r\n", "\n"))
    assert uuid == "5d4d0b3c-7c44-4a09-8d7e-2b8f0e0c1a11"


# Rule: no assignment of moboUUID from dmidecode in the function (or one
# made read-only). What it compares: assignments in the shell itself (alone
# or with local/export/typeset/declare) whose command substitution runs
# dmidecode: named by a word (a path, or a variable the script sets to one),
# or inside a function of the file it calls. Refused: none, or read-only
# (the fallback's own assignment would then abort the script).

SOURCE_CONVERTS: dict[str, str] = {
    "through-a-variable": body("DMI=/usr/sbin/dmidecode", "moboUUID=`$DMI -s system-uuid`"),
    "through-a-helper": script("smbiosUUID() {\n    /usr/sbin/dmidecode -s system-uuid\n}\n",
                               "moboUUID=$(smbiosUUID)"),
    "through-a-wrapper": body("moboUUID=`nice /usr/sbin/dmidecode -s system-uuid`"),
    "export": body("export moboUUID=$(dmidecode -s system-uuid)"),
    "typeset": body("typeset moboUUID=`dmidecode -s system-uuid`"),
    "double-quoted-pipeline": body('moboUUID="$(dmidecode -s system-uuid | head -1)"'),
    "top-level-variable": script("DMIDECODE=/usr/sbin/dmidecode\n", "moboUUID=`$DMIDECODE -s system-uuid`",
                                 call=True),
    "braced-variable-in-quotes": body('DMI=/usr/sbin', 'moboUUID="`"${DMI}"/dmidecode -s system-uuid`"'),
}


@pytest.mark.parametrize("name", sorted(SOURCE_CONVERTS))
def test_source_converts(name: str, tmp_path: Path) -> None:
    assert_converts(SOURCE_CONVERTS[name], [], tmp_path)


SOURCE_REFUSES: dict[str, tuple[str, str]] = {  # shape -> (script, what the message says)
    "from-a-positional-parameter": (body("moboUUID=$1"), "no assignment of moboUUID from dmidecode"),
    "commented-out": (body("# moboUUID=`dmidecode`", "moboUUID="), "no assignment"),
    "in-a-string": (body('echo "moboUUID=`dmidecode -s system-uuid`" > /tmp/x'), "no assignment"),
    "in-a-subshell": (body("( moboUUID=`dmidecode -s system-uuid` )"), "no assignment"),
    "from-a-file": (body("moboUUID=`cat /etc/lefthand/mobo.uuid`"), "no assignment"),
    "in-another-function": (HEAD + body("moboUUID=$1"), "no assignment"),
    "in-a-here-document": ("didMotherboardChange() {\n    cat > /tmp/x <<EOF\nmoboUUID=`dmidecode`\nEOF\n}\n",
                           "no assignment"),
    "helper-without-dmidecode": (script("smbiosUUID() {\n    cat /sys/class/dmi/id/product_uuid\n}\n",
                                        "moboUUID=$(smbiosUUID)"), "no assignment"),
    "variable-naming-another-program": (body("DMI=/usr/sbin/biosdecode", "moboUUID=`$DMI`"), "no assignment"),
    "readonly": (body("readonly moboUUID=`dmidecode -s system-uuid`"), "read-only"),
    "declare-r": (body("declare -r moboUUID=$(dmidecode -s system-uuid)"), "read-only"),
}


@pytest.mark.parametrize("name", sorted(SOURCE_REFUSES))
def test_source_refuses(name: str) -> None:
    text, says = SOURCE_REFUSES[name]
    with pytest.raises(EditError, match=f"^{PATH}") as err:
        MoboUuid().plan(snapshot({PATH: text}), CTX)
    assert says in err.value.message and "\n" not in err.value.message and err.value.exit_code == 2
    assert "--skip mobo-uuid" in (err.value.hint or "")


def test_fallback_in_a_plain_group_and_guarded_assignment_are_fine(tmp_path: Path) -> None:
    text = body("{", f"    {ASSIGN}", "}", f"[ -x /usr/sbin/dmidecode ] && {ASSIGN}", 'echo "$moboUUID"')
    out = patch(text)
    assert out.count(BEGIN) == 2 and patch(out) == out
    assert "notes" not in MoboUuid().plan(snapshot({PATH: text}), CTX).details
    assert_sh_syntax(out, tmp_path)


def test_fixture_lhn_functions_converts_without_a_note() -> None:
    text = (REPO / "fixtures/vsa-root" / PATH.lstrip("/")).read_text()
    plan = MoboUuid().plan(snapshot({PATH: text}), CTX)
    assert plan.status == "apply" and "notes" not in plan.details

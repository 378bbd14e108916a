"""Edit 4: platform.xml -> platform.xml.vmw at the start of base_init."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from test_edit_shell import REPO, assert_sh_syntax, snapshot
from vsaimage.edits import EditContext, WriteFile
from vsaimage.edits.platform import MARKER, PATH, Platform, link_line, patch, platform_dir
from vsaimage.errors import EditError, MissingFile

CTX = EditContext()
DIR = "/etc/lefthand/hardware"
PATHS = {f"{DIR}/platform.xml.vmw", f"{DIR}/platform.xml.hyperv", "/etc/lefthand/brand/brand.init"}

BRAND = """#!/bin/sh
# brand.init: per-brand set-up
# base_init() {
#     ln -s platform.xml.hp platform.xml
# }
{header}
    BRAND=`cat /etc/lefthand/brand/brand`
    if [ "$BRAND" = "VMNSM" ]; then
        echo "virtual"
    fi
}

devices_init() {
    echo base_init
}
base_init
"""

HEADERS = {
    "parens": "base_init() {",
    "space-next-line": "base_init ()\n{",
    "function": "function base_init {",
    "function-parens": "function base_init() {",
}


@pytest.mark.parametrize("header", sorted(HEADERS))
@pytest.mark.parametrize("crlf", [False, True], ids=["lf", "crlf"])
def test_patch_variants(header: str, crlf: bool, tmp_path: Path) -> None:
    text = BRAND.replace("{header}", HEADERS[header])
    if crlf:
        text = text.replace("\n", "\r\n")
    out = patch(text, DIR)
    nl = "\r\n" if crlf else "\n"
    expected_line = "    " + link_line(DIR) + nl
    assert out.count(MARKER) == 1 and expected_line in out
    assert out.replace(expected_line, "", 1) == text
    body = out.index("{" + nl, out.index("base_init", out.index("}"))) + 1 + len(nl)
    assert out[body:].startswith(expected_line)
    assert patch(out, DIR) == out
    assert_sh_syntax(out, tmp_path)


def test_line_of_ours_with_another_directory_is_replaced() -> None:
    out = patch(BRAND.replace("{header}", "base_init() {"), "/etc/lefthand/old")
    again = patch(out, DIR)
    assert again.count(MARKER) == 1 and link_line(DIR) in again and "/etc/lefthand/old" not in again


def test_empty_body_gets_indented_line(tmp_path: Path) -> None:
    out = patch("base_init() {\n}\n", DIR)
    assert out == fn("" + link_line(DIR) + "")
    assert_sh_syntax(out, tmp_path)


def test_missing_function_names_file_and_function() -> None:
    with pytest.raises(EditError, match=f"{PATH}: function base_init not found"):
        patch("# base_init() {\n#}\n", DIR)


def test_plan_check_and_missing_file() -> None:
    edit = Platform()
    assert edit.lists(CTX) == ("/etc/lefthand",) and edit.reads(CTX) == (PATH,)
    text = BRAND.replace("{header}", "base_init() {")
    snap = snapshot({PATH: text}, paths=PATHS)
    plan = edit.plan(snap, CTX)
    assert plan.status == "apply" and not edit.check(snap, CTX)
    change = plan.changes[0]
    assert isinstance(change, WriteFile)
    done = snapshot({PATH: change.data}, paths=PATHS)
    assert edit.plan(done, CTX).status == "already applied" and edit.check(done, CTX)
    with pytest.raises(MissingFile, match=PATH) as err:
        edit.plan(snapshot({}, paths=PATHS), CTX)
    assert "--skip platform" in (err.value.hint or "")


# --- the stop rule: a later statement of base_init that would undo the link --
# What it compares: each path a statement of base_init (or of a helper it
# calls, judged where the call is) writes over, replaces or removes (its
# redirections; ln -f, cp, mv, install, rm, unlink and tee operands; a
# directory operand's file of the source's name; what rm -r removes below),
# resolved from what the script assigns before it and normalised, with the
# link's own path <DIR>/platform.xml. Refused: it is that path on every path
# through the function. A note: it may be (a variable the script does not
# settle, several possible values) or it is but runs only under a condition.
# Nothing: it provably names another path, or never runs.


def shape(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def fn(*lines: str) -> str:
    return "base_init() {\n" + "".join(f"    {line}\n" for line in lines) + "}\n"


def notes_of(text: str) -> list[str]:
    plan = Platform().plan(snapshot({PATH: text}, paths=PATHS), CTX)
    notes = plan.details.get("notes", [])
    assert isinstance(notes, list)
    return notes


def line_number(text: str, content: str) -> int:
    [number] = [n for n, line in enumerate(text.splitlines(), 1) if line.strip() == content]
    return number


ISSUE_SHAPE = """
    base_init()
    {
        BRAND=`get_brand`
        PLATFORM_DIR=$BRAND_DIR/$BRAND
        mkdir -p $LHN_RUN
        rm -f $LHN_RUN/platform.xml
        if [ -f $PLATFORM_DIR/platform.xml ]; then
            ln -s $PLATFORM_DIR/platform.xml $LHN_RUN/platform.xml
        fi
        return 0
    }
"""

# shape -> (script, [(the line a note names, what the note says)])
CONVERTS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "issue-shape": (ISSUE_SHAPE, [("rm -f $LHN_RUN/platform.xml", "could not resolve `$LHN_RUN`")]),
    "issue-shape-run-dir-at-top-level": ("LHN_RUN=/etc/lefthand/run\nBRAND_DIR=/etc/lefthand/brand\n"
                                         + ISSUE_SHAPE + "base_init\n", []),
    "quoted-braced-top-level-variables": ("""
        LHN_RUN=/etc/lefthand/run
        base_init() {
            rm -f "${LHN_RUN}/platform.xml"
            ln -sf "${PLATFORM_DIR}/platform.xml" "${LHN_RUN}"/platform.xml
        }
        case "$1" in start) base_init ;; esac
    """, []),
    "single-quoted-other-path": (fn("rm -f '/etc/lefthand/run/platform.xml'"), []),
    "relink-in-a-case-branch": ("""
        PLATFORM_DIR=/etc/lefthand/hardware
        base_init() {
            platform=`/sbin/hwid -p`
            case "$platform" in
                vmw|hyperv)
                    ln -sf platform.xml.$platform $PLATFORM_DIR/platform.xml
                    ;;
            esac
        }
        base_init
    """, [("ln -sf platform.xml.$platform $PLATFORM_DIR/platform.xml", "where it runs (not on every path")]),
    "relink-after-and": ("""
        base_init() {
            PLATFORM_DIR=/etc/lefthand/hardware
            [ -f /tmp/x ] && cp /tmp/x $PLATFORM_DIR/platform.xml
        }
    """, [("[ -f /tmp/x ] && cp /tmp/x $PLATFORM_DIR/platform.xml", "where it runs (not on every path")]),
    "helper-links-elsewhere": ("""
        LHN_RUN=/etc/lefthand/run
        link_run() {
            ln -sf $PLATFORM_DIR/platform.xml $LHN_RUN/platform.xml
        }
        base_init() {
            link_run
        }
        base_init
    """, []),
    "helper-relinks-in-a-branch": ("""
        relink() {
            ln -sf platform.xml.hp /etc/lefthand/hardware/platform.xml
        }
        base_init() {
            if [ "`cat /etc/lefthand/brand/brand`" = HP ]; then
                relink
            fi
        }
    """, [("ln -sf platform.xml.hp /etc/lefthand/hardware/platform.xml",
           "(in relink, which base_init calls at line 6) replaces the link to the VMware description "
           "where it runs")]),
    "default-expansion-unresolved": (fn("rm -f ${RUN_DIR:-/var/run/lefthand}/platform.xml"),
                                     [("rm -f ${RUN_DIR:-/var/run/lefthand}/platform.xml",
                                       "could not resolve `$RUN_DIR`")]),
    "default-expansion-resolved": (
        "RUN_DIR=/etc/lefthand/run\n" + fn("rm -f ${RUN_DIR:-/etc/lefthand/hardware}/platform.xml")
        + "base_init\n", []),
    "command-substitution": (fn('rm -f "$(dirname $0)/platform.xml"'),
                             [('rm -f "$(dirname $0)/platform.xml"',
                               "could not resolve the output of `dirname $0`")]),
    "relative-after-a-resolvable-cd": ("""
        base_init() {
            cd /etc/lefthand/run
            ln -sf /etc/lefthand/hardware/platform.xml platform.xml
        }
    """, []),
    "relative-without-cd": (fn("ln -sf ../hardware/platform.xml.vmw platform.xml"),
                            [("ln -sf ../hardware/platform.xml.vmw platform.xml",
                              "could not resolve the working directory")]),
    "relink-after-a-conditional-return": ("""
        base_init() {
            [ "`/sbin/hwid -p`" = xen ] && return 0
            ln -sf platform.xml.hp /etc/lefthand/hardware/platform.xml
        }
    """, [("ln -sf platform.xml.hp /etc/lefthand/hardware/platform.xml", "not on every path")]),
    "ln-without-force-fails-over-the-link": (
        fn("ln -s platform.xml.hp /etc/lefthand/hardware/platform.xml"), []),
    "link-path-as-a-source": (
        fn("D=/etc/lefthand/hardware", "cp $D/platform.xml /var/lib/lefthand/platform.xml.bak"), []),
    "normalised-other-path": (fn("rm -f /etc/lefthand//run/./platform.xml/"), []),
    "other-directories-on-every-branch": ("""
        base_init() {
            if [ -d /var/run ]; then RUN=/var/run/lefthand; else RUN=/etc/lefthand/run; fi
            rm -f $RUN/platform.xml
        }
    """, []),
    "the-link-directory-on-one-branch": ("""
        base_init() {
            if [ -d /var/run ]; then RUN=/etc/lefthand/hardware; else RUN=/etc/lefthand/run; fi
            rm -f "$RUN/platform.xml"
        }
    """, [('rm -f "$RUN/platform.xml"', "names that path on some paths only")]),
    "dead-code-after-return": ("base_init() {\n    return 0\n"
                               "    ln -sf platform.xml.hp /etc/lefthand/hardware/platform.xml\n}\n", []),
    "subshell-elsewhere": (fn("( cd /etc/lefthand/run; rm -f platform.xml )"), []),
    "redirect-to-an-unresolved-file": (fn("echo starting >> $LOG"),
                                       [("echo starting >> $LOG", "could not resolve `$LOG`")]),
    "variables-before-a-sourced-file": ("""
        PLATFORM_DIR=/etc/lefthand/hardware
        . /etc/init.d/lhn_functions
        base_init() {
            ln -sf platform.xml.hp $PLATFORM_DIR/platform.xml
        }
        base_init
    """, [("ln -sf platform.xml.hp $PLATFORM_DIR/platform.xml", "could not resolve `$PLATFORM_DIR`")]),
}


@pytest.mark.parametrize("name", sorted(CONVERTS))
def test_converts(name: str, tmp_path: Path) -> None:
    text, expected = CONVERTS[name]
    text = shape(text)
    notes = notes_of(text)
    assert len(notes) == len(expected), notes
    for note, (content, says) in zip(notes, expected, strict=True):
        assert note.startswith(f"{PATH}:{line_number(text, content)} `{content}`"), note
        assert says in note and "\n" not in note
    out = patch(text, DIR)
    assert out.count(MARKER) == 1 and patch(out, DIR) == out
    # our own line is no statement of theirs (theirs moved one line down)
    assert [n.split("`")[1] for n in notes_of(out)] == [n.split("`")[1] for n in notes]
    assert_sh_syntax(out, tmp_path)


REFUSES: dict[str, tuple[str, str]] = {  # shape -> (script, the line refused)
    "top-level-variable": ("""
        PLATFORM_DIR=/etc/lefthand/hardware
        base_init() {
            ln -sf platform.xml.hp $PLATFORM_DIR/platform.xml
        }
        base_init
    """, "ln -sf platform.xml.hp $PLATFORM_DIR/platform.xml"),
    "quoted-braced-variable": ("""
        base_init() {
            PLATFORM_DIR=/etc/lefthand/hardware
            rm -f "${PLATFORM_DIR}/platform.xml"
        }
    """, 'rm -f "${PLATFORM_DIR}/platform.xml"'),
    "issue-shape-whose-run-dir-is-the-link-dir": (
        "LHN_RUN=/etc/lefthand/hardware\n" + ISSUE_SHAPE + "base_init\n", "rm -f $LHN_RUN/platform.xml"),
    "redirect": (fn("D=/etc/lefthand/hardware", "cat /etc/lefthand/default.xml > $D/platform.xml"),
                 "cat /etc/lefthand/default.xml > $D/platform.xml"),
    "normalised-path": (fn("cp -f /etc/lefthand/default.xml /etc/lefthand//hardware/./platform.xml"),
                        "cp -f /etc/lefthand/default.xml /etc/lefthand//hardware/./platform.xml"),
    "mv-into-the-directory": (fn("mv /tmp/platform.xml /etc/lefthand/hardware/"),
                              "mv /tmp/platform.xml /etc/lefthand/hardware/"),
    "helper-doing-the-link": ("""
        PLATFORM_DIR=/etc/lefthand/hardware
        relink() {
            ln -sf platform.xml.hp "$PLATFORM_DIR"/platform.xml
        }
        base_init() {
            mkdir -p /etc/lefthand/run
            relink
        }
        base_init
    """, 'ln -sf platform.xml.hp "$PLATFORM_DIR"/platform.xml'),
    "relative-after-cd": (fn("cd /etc/lefthand/hardware", "ln -sf platform.xml.hyperv platform.xml"),
                          "ln -sf platform.xml.hyperv platform.xml"),
    "rm-r-of-the-directory": (fn("rm -rf /etc/lefthand/hardware"), "rm -rf /etc/lefthand/hardware"),
    "assignment-before-rm": (fn("LANG=C rm -f /etc/lefthand/hardware/platform.xml"),
                             "LANG=C rm -f /etc/lefthand/hardware/platform.xml"),
    "install": (fn("install -m 0644 /etc/lefthand/default.xml /etc/lefthand/hardware/platform.xml"),
                "install -m 0644 /etc/lefthand/default.xml /etc/lefthand/hardware/platform.xml"),
    "in-a-subshell": (fn("( ln -sf platform.xml.hp /etc/lefthand/hardware/platform.xml )"),
                      "( ln -sf platform.xml.hp /etc/lefthand/hardware/platform.xml )"),
    "in-a-command-substitution": (fn("out=`ln -sf platform.xml.hp /etc/lefthand/hardware/platform.xml 2>&1`"),
                                  "out=`ln -sf platform.xml.hp /etc/lefthand/hardware/platform.xml 2>&1`"),
    "the-link-directory-on-every-branch": ("""
        base_init() {
            if [ -d /var/run ]; then D=/etc/lefthand/hardware; else D=/etc/lefthand//hardware/; fi
            rm -f "$D/platform.xml"
        }
    """, 'rm -f "$D/platform.xml"'),
    "case-on-a-known-word": ("""
        BRAND=hardware
        base_init() {
            case $BRAND in
                hardware) ln -sf platform.xml.hp /etc/lefthand/$BRAND/platform.xml ;;
                *) echo unknown ;;
            esac
        }
        base_init
    """, "hardware) ln -sf platform.xml.hp /etc/lefthand/$BRAND/platform.xml ;;"),
    "tee-at-the-end-of-a-pipeline": (fn("echo '<platform/>' | tee /etc/lefthand/hardware/platform.xml"),
                                     "echo '<platform/>' | tee /etc/lefthand/hardware/platform.xml"),
    "ln-target-directory-option": (fn("ln -sf -t /etc/lefthand/hardware /etc/lefthand/hp/platform.xml"),
                                   "ln -sf -t /etc/lefthand/hardware /etc/lefthand/hp/platform.xml"),
}


@pytest.mark.parametrize("name", sorted(REFUSES))
def test_refuses_naming_file_line_and_skip(name: str) -> None:
    text, content = REFUSES[name]
    text = shape(text)
    with pytest.raises(EditError) as err:
        Platform().plan(snapshot({PATH: text}, paths=PATHS), CTX)
    assert err.value.message.startswith(f"{PATH}:{line_number(text, content)} `{content}`"), err.value.message
    assert "undoing the link" in err.value.message and "\n" not in err.value.message
    assert err.value.exit_code == 2 and "--skip platform" in (err.value.hint or "")
    assert not Platform().check(snapshot({PATH: text}, paths=PATHS), CTX)


def test_one_of_two_definitions_undoing_it_is_a_note() -> None:
    text = shape("""
        base_init() {
            ln -sf platform.xml.hp /etc/lefthand/hardware/platform.xml
        }
        base_init() {
            echo kept
        }
    """)
    [note] = notes_of(text)
    assert note.startswith(f"{PATH}:2 ") and "one of 2 definitions of base_init" in note
    assert patch(text, DIR).count(MARKER) == 2


def test_fixture_brand_init_converts_with_one_note() -> None:
    text = (REPO / "fixtures/vsa-root" / PATH.lstrip("/")).read_text()
    [note] = notes_of(text)
    # PLATFORM_DIR is assigned before `. /etc/init.d/lhn_functions`, which may assign it again
    assert "ln -sf platform.xml.$platform $PLATFORM_DIR/platform.xml" in note
    assert "could not resolve `$PLATFORM_DIR`" in note


# --- the stop rule: exactly one platform.xml.vmw under /etc/lefthand --------
# What it compares: the directories under /etc/lefthand holding a
# platform.xml.vmw; where there are several, those brand.init names (the
# directory, its platform.xml or platform.xml.vmw, resolved where the word
# runs). Refused: none, or not exactly one of several named.

TWO = {"/etc/lefthand/a/platform.xml.vmw", "/etc/lefthand/b/platform.xml.vmw"}
DIR_CHOSEN = {  # shape -> (paths, brand.init, the directory chosen)
    "one": (PATHS, BRAND.replace("{header}", "base_init() {"), DIR),
    "one-and-one-outside-etc-lefthand": ({*PATHS, "/usr/share/lefthand/platform.xml.vmw"}, "", DIR),
    "two-one-named-literally": (TWO, fn("fst -c /etc/lefthand/b/platform.xml"),
                                "/etc/lefthand/b"),
    "two-one-named-by-a-top-level-variable": (
        TWO, "PLATFORM_DIR=/etc/lefthand/a\nbase_init() {\n    :\n}\nbase_init\n", "/etc/lefthand/a"),
    "two-one-named-quoted-braced-in-base-init": (
        TWO, fn('D=/etc/lefthand', 'fst -c "${D}/b/platform.xml.vmw"'), "/etc/lefthand/b"),
    "two-one-named-in-a-helper": (
        TWO, "check() {\n    [ -f /etc/lefthand/a/platform.xml ]\n}\n" + fn("check"), "/etc/lefthand/a"),
    "two-one-named-after-cd": (TWO, fn("cd /etc/lefthand/b && ls platform.xml"),
                               "/etc/lefthand/b"),
    "two-the-other-named-only-in-a-comment": (
        TWO, "# /etc/lefthand/a/platform.xml\nbase_init() {\n    ls /etc/lefthand/b/platform.xml\n}\n",
        "/etc/lefthand/b"),
}


@pytest.mark.parametrize("name", sorted(DIR_CHOSEN))
def test_platform_dir_chosen(name: str) -> None:
    paths, text, chosen = DIR_CHOSEN[name]
    assert platform_dir(frozenset(paths), text) == chosen


DIR_REFUSED = {  # shape -> (paths, brand.init, message)
    "none": ({"/etc/lefthand/a/platform.xml"}, "", "found 0 (none)"),
    "only-outside-etc-lefthand": ({"/usr/share/platform.xml.vmw"}, "", "found 0"),
    "two-none-named": (TWO, BRAND.replace("{header}", "base_init() {"), "found 2"),
    "two-both-named": (TWO, fn("ls /etc/lefthand/a /etc/lefthand/b"), "found 2"),
    "two-named-by-an-unresolved-variable": (TWO, fn("ls $ROOT/a/platform.xml"), "found 2"),
    "two-named-on-some-paths-only": (
        TWO, fn("if [ -f /x ]; then D=a; else D=b; fi", "ls /etc/lefthand/$D"), "found 2"),
    "two-named-only-in-dead-code": (
        TWO, fn("return 0", "ls /etc/lefthand/a/platform.xml"), "found 2"),
    "two-named-only-in-a-string": (TWO, fn("echo 'see /etc/lefthand/a/platform.xml' >&2"),
                                   "found 2"),
}


@pytest.mark.parametrize("name", sorted(DIR_REFUSED))
def test_platform_dir_refused(name: str) -> None:
    paths, text, message = DIR_REFUSED[name]
    with pytest.raises(EditError, match=re.escape(message)) as err:
        platform_dir(frozenset(paths), text)
    assert "--skip platform" in (err.value.hint or "") and "\n" not in err.value.message

"""Edit 4: platform.xml -> platform.xml.vmw at the start of base_init."""

from __future__ import annotations

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
    assert out == "base_init() {\n    " + link_line(DIR) + "\n}\n"
    assert_sh_syntax(out, tmp_path)


def test_platform_dir_candidates() -> None:
    assert platform_dir(frozenset(PATHS)) == DIR
    with pytest.raises(EditError, match="found 0"):
        platform_dir(frozenset({"/etc/lefthand/a/platform.xml"}))
    with pytest.raises(EditError, match="found 2") as err:
        platform_dir(frozenset({"/etc/lefthand/a/platform.xml.vmw", "/etc/lefthand/b/platform.xml.vmw"}))
    assert "--skip platform" in (err.value.hint or "")
    # only under /etc/lefthand
    assert platform_dir(frozenset({*PATHS, "/usr/share/platform.xml.vmw"})) == DIR


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


# --- a later statement of base_init that would undo the link ---------------

UNDOING = {
    "ln": 'ln -sf platform.xml.hp "$PLATFORM_DIR/platform.xml"',
    "cp": "cp -f /etc/lefthand/brand/default.xml $PLATFORM_DIR/platform.xml",
    "redirect": "cat $COMMON_DIR/default.xml > $PLATFORM_DIR/platform.xml",
    "rm-with-assignment": "LANG=C rm -f $PLATFORM_DIR/platform.xml",
}


def base_init(*lines: str) -> str:
    return "base_init() {\n" + "".join(f"    {line}\n" for line in lines) + "}\n"


@pytest.mark.parametrize("shape", sorted(UNDOING))
def test_unconditional_relink_is_refused_naming_file_line_and_skip(shape: str) -> None:
    text = "#!/bin/sh\n" + base_init("mkdir -p /var/run/lefthand", UNDOING[shape])
    with pytest.raises(EditError) as err:
        patch(text, DIR)
    assert err.value.message.startswith(f"{PATH}:4 `{UNDOING[shape]}`") and "\n" not in err.value.message
    assert err.value.exit_code == 2 and "--skip platform" in (err.value.hint or "")
    assert not Platform().check(snapshot({PATH: text}, paths=PATHS), CTX)


def test_relink_in_a_case_branch_is_reported_not_refused() -> None:
    # the VMware appliance's own shape: on Xen hwid reports `xen` and the branch does not run
    text = base_init(
        'case "$platform" in',
        "    vmw|hyperv)",
        "        ln -sf platform.xml.$platform $PLATFORM_DIR/platform.xml",
        "        ;;",
        "esac",
        "[ -f /tmp/x ] && cp /tmp/x $PLATFORM_DIR/platform.xml",
        "cp $PLATFORM_DIR/platform.xml.vmw /tmp/backup",
    )
    plan = Platform().plan(snapshot({PATH: text}, paths=PATHS), CTX)
    assert plan.status == "apply"
    assert plan.details["conditional_relinks"] == [
        f"{PATH}:4 `ln -sf platform.xml.$platform $PLATFORM_DIR/platform.xml`",
        f"{PATH}:7 `[ -f /tmp/x ] && cp /tmp/x $PLATFORM_DIR/platform.xml`",
    ]


def test_fixture_brand_init_has_only_a_guarded_relink() -> None:
    text = (REPO / "fixtures/vsa-root" / PATH.lstrip("/")).read_text()
    plan = Platform().plan(snapshot({PATH: text}, paths=PATHS), CTX)
    assert len(plan.details["conditional_relinks"]) == 1  # type: ignore[arg-type]

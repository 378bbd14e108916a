"""The shell lexer and tree the script edits rely on, the rule that finds the
function an edit changes, and helpers the other edit tests import: Snapshot
building and `sh -n` under dash (bash for bash-only files) and busybox."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from fixtures.build_image import default_busybox
from vsaimage.edits import GuestFile, Snapshot
from vsaimage.edits.shell import lex
from vsaimage.edits.shelltree import AndOr, Block, Case, Group, If, Loop, Simple, commands, definitions, parse
from vsaimage.errors import EditError

REPO = Path(__file__).resolve().parent.parent
BUSYBOX = default_busybox()  # make setup fetches it


def snapshot(
    files: Mapping[str, str | bytes], paths: set[str] | None = None, modes: dict[str, int] | None = None
) -> Snapshot:
    """A Snapshot holding `files` (text is encoded latin-1, as the guest's bytes)."""
    modes = modes or {}
    guest = {
        p: GuestFile(p, d.encode("latin-1") if isinstance(d, str) else d, modes.get(p, 0o644))
        for p, d in files.items()
    }
    return Snapshot(guest, frozenset(paths or set()) | frozenset(files))


def syntax_shells(text: str) -> list[list[str]]:
    """Shells able to judge `text`: dash cannot parse the `function` keyword,
    which the VSA's bash accepts, so such files go to bash instead."""
    return [["bash"] if "function " in text else ["/bin/sh"], [str(BUSYBOX), "sh"]]


def assert_sh_syntax(text: str, tmp_path: Path) -> None:
    script = tmp_path / "syntax-check.sh"
    script.write_bytes(text.replace("\r\n", "\n").encode("latin-1"))
    for shell in syntax_shells(text):
        done = subprocess.run([*shell, "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, f"{shell}: {done.stderr}"


def words(block: Block) -> list[str]:
    return [w.text for c in commands(block) if isinstance(c, Simple) for w in c.words]


def test_braces_in_strings_params_and_heredocs_do_not_close() -> None:
    text = (
        "f() {\n"
        "\techo '}' \"}\" ${x:- } `echo }` $(echo })\n"
        "\tcat <<-EOF\n}\n\tEOF\n"
        "\techo last # }\n"
        "}\n"
        "g() { :; }\n"
    )
    [(_, body)] = definitions(text, parse(text), "f", "/x")
    assert body.close is not None and text[: body.close.end].endswith("echo last # }\n}")


def test_operators_and_here_strings() -> None:
    tokens = lex("a 2>&1 >|f <<< \"$y\" &>g && b\nnext\n").tokens
    assert [t.text for t in tokens if t.kind != "word"] == [">&", ">|", "<<<", "&>", "&&", "\n", "\n"]
    # a here-string opens no here-document: the next line is read
    assert tokens[-2].text == "next"


def test_command_substitutions_are_parsed_apart() -> None:
    text = "x=$(rm -f /a; echo `cat /b`) y\n"
    [item] = parse(text)
    [simple] = item.pipelines[0].commands
    assert isinstance(simple, Simple)
    assert words(parse(text)) == ["x=$(rm -f /a; echo `cat /b`)", "y"]
    [(index, sub)] = simple.subs
    assert index == 0 and words(sub) == ["rm", "-f", "/a", "echo", "`cat /b`"]


def test_tree_of_compound_commands() -> None:
    text = ("if a; then b; elif c; then d; else e; fi > /log\n"
            "case $x in\n  (1|2) one ;;\n  *) two\nesac\n"
            "for i in 1 2; do :; done; while read l; do :; done < /f\n"
            "{ g; } && ( h ) | k &\n"
            "A=(1 2) B=2 cmd 2>/dev/null\n")
    items = parse(text)
    kinds = [type(c).__name__ for item in items for p in item.pipelines for c in p.commands]
    assert kinds == ["If", "Case", "Loop", "Loop", "Group", "Group", "Simple", "Simple"]
    first = items[0].pipelines[0].commands[0]
    assert isinstance(first, If) and first.has_else and len(first.bodies) == 3
    assert [r.target.text for r in first.redirects] == ["/log"]
    case = items[1].pipelines[0].commands[0]
    assert isinstance(case, Case) and [[p.text for p in pats] for pats, _ in case.arms] == [["1", "2"], ["*"]]
    loop = items[2].pipelines[0].commands[0]
    assert isinstance(loop, Loop) and loop.var is not None
    assert [w.text for w in loop.items or ()] == ["1", "2"]
    groups: list[AndOr] = [i for i in items if isinstance(i.pipelines[0].commands[0], Group)]
    assert groups[0].ops == ("&&",) and groups[0].background
    last = items[-1].pipelines[0].commands[0]
    assert isinstance(last, Simple) and [w.text for w in last.assignments] == ["A=", "B=2"]
    assert [w.text for w in last.args] == ["cmd"] and [r.op for r in last.redirects] == [">"]


# --- the rule every script edit shares: finding its function -----------------
# What it compares: definitions of the name (`f()`, `f ()`, `function f`,
# `function f()`, brace on either line) in the script's tree, outside
# comments, strings, here-documents and subshells; a body that is a `{ }`
# or `( )` group, closed. Several definitions: each is edited (the shell runs
# the last defined before the call, which only a run can tell).

FUNCTION_FOUND = {
    "parens": "f() {\n\techo in\n}\n",
    "space-parens": "f () {\n\techo in\n}\n",
    "spaced-parens": "f ( ) {\n\techo in\n}\n",
    "next-line": "f()\n{\n\techo in\n}\n",
    "blank-lines-and-comment-before-brace": "f() # the function\n\n{\n\techo in\n}\n",
    "function": "function f {\n\techo in\n}\n",
    "function-parens-next-line": "function f()\n{\n\techo in\n}\n",
    "subshell-body": "f() (\n\techo in\n)\n",
    "in-an-if": "if [ -x /bin/sh ]; then\n\tf() {\n\t\techo in\n\t}\nfi\n",
    "after-a-decoy-heredoc": "cat <<EOF\nf() {\nEOF\nf() {\n\techo in\n}\n",
    "defined-twice": "f() {\n\techo in\n}\nf() {\n\techo in\n}\n",
}


@pytest.mark.parametrize("shape", sorted(FUNCTION_FOUND))
def test_function_found(shape: str) -> None:
    text = "# f() {\n#   echo decoy\n# }\ng() { :; }\n" + FUNCTION_FOUND[shape] + "f\n"
    found = definitions(text, parse(text), "f", "/x")
    assert len(found) == (2 if shape == "defined-twice" else 1)
    for _, body in found:
        assert words(body.body) == ["echo", "in"]
        assert body.close is not None and text[body.close.start] in "})"


FUNCTION_REFUSED = {
    "absent": ("echo f\n", "function f not found"),
    "commented-out": ("# f() {\n#   echo\n# }\n", "function f not found"),
    "in-a-string": ("echo 'f() { echo; }'\n", "function f not found"),
    "in-a-heredoc": ("cat <<EOF\nf() {\n  echo\n}\nEOF\n", "function f not found"),
    "in-a-subshell": ("( f() { echo; } )\n", "function f not found"),
    "longer-name": ("ff() { echo; }\nf_old() { echo; }\n", "function f not found"),
    "no-closing-brace": ("f() {\n\techo\n", "/x:1: function f has no closing brace"),
    "closing-brace-in-a-string": ("f() {\n\techo '}'\n", "/x:1: function f has no closing brace"),
    "if-body": ("f() if true; then echo; fi\n", "/x:1: function f has no { } body"),
}


@pytest.mark.parametrize("shape", sorted(FUNCTION_REFUSED))
def test_function_refused(shape: str) -> None:
    text, message = FUNCTION_REFUSED[shape]
    with pytest.raises(EditError, match=re.escape(message)) as err:
        definitions(text, parse(text), "f", "/x")
    assert "\n" not in err.value.message and err.value.exit_code == 2
